"""The fusion report: graphs, graph breaks with reasons, and kernels with buffer counts of one tile."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..device import default_device
from ..kernels.compiler import block_fn, fresh_code_copy
from ..kernels.config import KernelConfig, Workload
from ..kernels.drivers import kernel_dtype, kernel_key, plan
from ..settings import get_settings
from .attempt import short_message, compile_and_scan
from .codegen_scan import CodeScan
from .ratchet import EPS, check_tile_memory, resolve_max_buffers
from .tile import tile_inputs


@dataclass(frozen=True)
class FuseReport:
    """One tile of a config: graphs, graph breaks with reasons, kernels with buffer counts, compile time."""

    config: KernelConfig
    workload: Workload
    device: str
    compiled_t_inner: int
    graphs: int  # graphs Dynamo makes of the block without fullgraph (1 when there is no break)
    graph_breaks: int
    break_reasons: tuple[str, ...]
    kernels: CodeScan | None
    compile_s: float | None
    max_buffers: int | None
    ok: bool
    error_kind: str | None
    error: str

    def over_limit(self) -> list[str]:
        """Names of kernels over the buffer limit."""
        return [k.name for k in self.kernels.over_limit(self.max_buffers)] if self.kernels else []

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (the ``fuse-report --json`` document)."""
        return {
            "config": self.config.to_dict(), "workload": str(self.workload), "device": self.device,
            "compiled_t_inner": self.compiled_t_inner, "graphs": self.graphs,
            "graph_breaks": self.graph_breaks, "break_reasons": list(self.break_reasons),
            "kernel_count": self.kernels.kernel_count if self.kernels else 0,
            "max_kernel_buffers": self.kernels.max_buffers if self.kernels else 0,
            "kernels": self.kernels.to_dict()["kernels"] if self.kernels else [],
            "buffer_limit": self.max_buffers, "over_limit": self.over_limit(),
            "compile_s": self.compile_s, "ok": self.ok, "error_kind": self.error_kind, "error": self.error,
        }

    def format_text(self) -> str:
        """Human-readable report."""
        lim = "off" if self.max_buffers is None else str(self.max_buffers)
        cs = "n/a" if self.compile_s is None else f"{self.compile_s:.2f}s"
        lines = [
            f"fuse-report {self.config.short()} on {self.workload} [{self.device}] (one tile, "
            f"T_inner {self.compiled_t_inner})",
            f"  graphs: {self.graphs}   graph breaks: {self.graph_breaks}   compile time: {cs}",
        ]
        lines += [f"    break: {r}" for r in self.break_reasons]
        if self.kernels is not None:
            lines.append(f"  kernels: {self.kernels.kernel_count} (buffer limit {lim}, "
                         f"max buffers {self.kernels.max_buffers})")
            for k in self.kernels.kernels:
                flag = "  OVER LIMIT" if self.max_buffers is not None and k.buffers > self.max_buffers else ""
                lines.append(f"    {k.lang:6} {k.buffers:3} buffers / {k.args:3} args  {k.name}{flag}")
        if not self.ok:
            lines.append(f"  compile failed ({self.error_kind}): {self.error.splitlines()[0][:300] if self.error else ''}")
        return "\n".join(lines)


def graph_breaks(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[int, int, list[str]]:
    """(graphs, graph breaks, break reasons) of ``fn`` on ``args``, traced by Dynamo without Inductor.

    Like ``torch._dynamo.explain`` but without its ``torch._dynamo.reset()`` (which would throw away
    every compiled kernel of the process).
    """
    from torch._dynamo.utils import counters

    graphs = 0

    def counting_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        nonlocal graphs
        graphs += 1
        return gm.forward

    before = dict(counters["graph_break"])
    traced = torch.compile(fresh_code_copy(fn, "explain"), backend=counting_backend, fullgraph=False)
    with torch.no_grad():
        traced(*args)
    after = counters["graph_break"]
    reasons = [r for r in after if after[r] > before.get(r, 0)]
    breaks = sum(after[r] - before.get(r, 0) for r in after)
    return graphs, breaks, reasons

def fuse_report(config: KernelConfig, workload: Workload, *, device: torch.device | str | None = None,
                max_buffers: int | None | str = "auto") -> FuseReport:
    """Fusion report of one tile of ``config`` on ``workload`` (in-process compile, Inductor's real output)."""
    if not isinstance(config, KernelConfig):
        raise ValueError(f"config must be a KernelConfig, got {type(config).__name__}")
    dev = torch.device(device) if device is not None else torch.device(get_settings().device or default_device())
    limit = resolve_max_buffers(max_buffers, dev)
    config.bands(workload.NH)
    check_tile_memory(config, workload, dev)
    kdtype = kernel_dtype(config, workload.torch_dtype, dev)  # what xk.mlstm feeds the region
    p = plan(config, workload.NH, workload.S)
    key = kernel_key(config, p, workload.B, workload.DHQK, workload.DHV, kdtype, dev, EPS)
    block = fresh_code_copy(block_fn(key), key.tag())
    args = tile_inputs(key)
    try:
        graphs, breaks, reasons = graph_breaks(block, args)
    except Exception as exc:  # tracing itself failed: report it, still try the compile
        graphs, breaks, reasons = 0, 0, [f"tracing failed: {short_message(exc, 300)}"]
    a = compile_and_scan(key, None, fn=block, args=args)
    return FuseReport(
        config=config, workload=workload, device=str(dev), compiled_t_inner=p.t_inner, graphs=graphs,
        graph_breaks=breaks, break_reasons=tuple(reasons), kernels=a.scan, compile_s=a.compile_s,
        max_buffers=limit, ok=a.ok, error_kind=a.kind, error=a.message,
    )
