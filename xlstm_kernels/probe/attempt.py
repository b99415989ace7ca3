"""One probe attempt: compile a block for real, capture Inductor's output code, run one tile, check limits."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..device import synchronize
from ..kernels.compiler import CompileKey, block_fn, build_compiled, fresh_code_copy, unique_graphs
from ..kernels.reference import max_rel_err
from ..settings import get_settings
from .codegen_scan import CodeScan, KernelInfo, UnknownThreadgroupType, scan_output_code
from .errors import classify_error
from .output_code import capture_output_code
from .tile import tile_inputs


@dataclass
class Attempt:
    """The outcome of compiling one block and running one tile."""

    ok: bool
    kind: str | None = None
    message: str = ""
    scan: CodeScan | None = None
    graphs: int = 0
    compile_s: float | None = None
    tile_rel_err: float | None = None  # compiled vs eager on the same tile

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "ok": self.ok, "kind": self.kind, "message": self.message,
            "scan": self.scan.to_dict() if self.scan else None, "graphs": self.graphs,
            "compile_s": self.compile_s, "tile_rel_err": self.tile_rel_err,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attempt:
        """Inverse of ``to_dict``."""
        scan = d.get("scan")
        if scan is not None:
            kernels = tuple(
                KernelInfo(k["name"], k["lang"], k["buffers"], k["args"], tuple(k.get("buffer_names", ())),
                           k.get("threadgroup_bytes", 0))
                for k in scan["kernels"]
            )
            scan = CodeScan(graphs=scan["graphs"], kernels=kernels)
        return cls(ok=d["ok"], kind=d.get("kind"), message=d.get("message", ""), scan=scan,
                   graphs=d.get("graphs", 0), compile_s=d.get("compile_s"), tile_rel_err=d.get("tile_rel_err"))


def compile_and_scan(key: CompileKey, max_buffers: int | None = None,
                     fn: Callable[..., Any] | None = None,
                     args: tuple[torch.Tensor, ...] | None = None) -> Attempt:
    """Compile ``fn`` (default: ``key``'s block) as ``key`` says, run it on one tile, scan the kernels.

    Never raises for a compile/run failure: the attempt says what happened. ``max_buffers`` makes a
    kernel with more buffer arguments fail with ``buffer_limit``, as Metal would; on MPS a kernel
    declaring more threadgroup memory than ``metal_threadgroup_memory_limit`` fails likewise.
    """
    eager = fn if fn is not None else fresh_code_copy(block_fn(key), key.tag())
    # The C++ wrapper's output code lists each kernel twice and changes none, so probe without it.
    compiled = build_compiled(dataclasses.replace(key, cpp_wrapper=False), fresh_code_copy(eager, key.tag()))
    args = args if args is not None else tile_inputs(key)
    before = unique_graphs()
    t0 = time.perf_counter()
    with capture_output_code() as codes:
        try:
            with torch.no_grad():
                out = compiled(*args)
                synchronize(key.device)
        except Exception as exc:  # a compiler crash must not kill the caller
            if "no compiled frames" in str(exc):  # torch >= 2.12 with Dynamo disabled: eager fallback
                out = None
            else:
                scan = _scan_or_none(codes)
                return Attempt(ok=False, kind=classify_error(exc), message=short_message(exc), scan=scan,
                               graphs=unique_graphs() - before, compile_s=time.perf_counter() - t0)
    compile_s = time.perf_counter() - t0
    graphs = unique_graphs() - before
    try:
        scan = scan_output_code(list(codes))
    except UnknownThreadgroupType as exc:  # a Metal type the scanner cannot size: say so, do not guess
        return Attempt(ok=False, kind="compiler_error", message=str(exc), graphs=graphs, compile_s=compile_s)
    if graphs == 0:
        return Attempt(ok=False, kind="graph_break", scan=scan, graphs=0, compile_s=compile_s,
                       message="torch.compile produced no graph: the block ran eagerly (silent eager "
                               "fallback, e.g. Dynamo disabled)")
    tg_limit = get_settings().metal_threadgroup_memory_limit if torch.device(key.device).type == "mps" else None
    failed = static_check(scan, max_buffers, tg_limit, graphs=graphs, compile_s=compile_s)
    if failed is not None:
        return failed
    with torch.no_grad():
        ref = eager(*args)
    return Attempt(ok=True, scan=scan, graphs=graphs, compile_s=compile_s, tile_rel_err=max_rel_err(out, ref))


def _scan_or_none(codes: list[str]) -> CodeScan | None:
    """The scan of ``codes``, or None where the scanner cannot size a Metal type (the error wins)."""
    try:
        return scan_output_code(list(codes))
    except UnknownThreadgroupType:
        return None


def static_check(scan: CodeScan, max_buffers: int | None, threadgroup_limit: int | None = None, *,
                 graphs: int = 1, compile_s: float | None = None) -> Attempt | None:
    """The failed attempt when a kernel of ``scan`` is over the buffer or threadgroup-memory limit, else None."""
    over = scan.over_limit(max_buffers)
    if over:
        worst = max(over, key=lambda k: k.buffers)
        return Attempt(ok=False, kind="buffer_limit", scan=scan, graphs=graphs, compile_s=compile_s,
                       message=f"{len(over)} kernel(s) over the buffer limit {max_buffers}: {worst.name} "
                               f"has {worst.buffers} buffer arguments (static check)")
    tg_over = scan.over_threadgroup_limit(threadgroup_limit)
    if tg_over:
        worst = max(tg_over, key=lambda k: k.threadgroup_bytes)
        return Attempt(ok=False, kind="threadgroup_memory", scan=scan, graphs=graphs, compile_s=compile_s,
                       message=f"{len(tg_over)} kernel(s) over the threadgroup memory limit {threadgroup_limit} "
                               f"bytes: {worst.name} declares {worst.threadgroup_bytes} (static check)")
    return None


def short_message(exc: BaseException, limit: int = 2000) -> str:
    """``exc`` as "Type: message", its middle cut out past ``limit`` characters."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit // 2] + "\n...\n" + text[-limit // 2:]
