"""Metal source for a kernel block without a Mac: Inductor's own MPS code generator on fake MPS tensors.

The block (``families.make_recurrent_block`` / ``make_chunkwise_block``, as a ``CompileKey`` names it)
is traced on CPU to an aten graph with ``make_fx(tracing_mode="fake")`` and Inductor's decomposition
table; the device of every factory node (``node.kwargs["device"]``) is retargeted to ``mps``; fake MPS
inputs are made in a ``FakeTensorMode`` (which works in torch builds without MPS); Metal's core-count
functions are patched (absent or failing off-Mac); then ``GraphLowering.run`` and ``.codegen`` under
``V.set_fake_mode`` and ``DebugContext`` write the same Python output code, with the same
``kernel void generated_kernel_N(...)`` Metal sources, as ``torch.compile`` would hand to the Metal
compiler on a Mac. Tracing directly on fake MPS tensors fails off-Mac ("PyTorch is not linked with
support for mps devices" at an integer index); tracing on CPU and retargeting avoids it.

Not ``torch.compile``: Dynamo, AOTAutograd and the post-grad FX passes do not run, and nothing is
compiled by Metal or executed. The kernels' buffer signatures are what Metal's 31-slot limit is about;
the Metal compiler itself, execution and timing still never ran on Apple hardware.

Everything here touches private Inductor internals. They are isolated in this one module, and any
failure of them raises ``MetalCodegenUnavailable`` ("Metal codegen unavailable on torch X: <why>")
instead of a traceback from deep inside Inductor. Tested on torch 2.11 and 2.13.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .codegen_scan import CodeScan, scan_output_code
from ..kernels.compiler import CompileKey, block_fn

_LOCK = threading.Lock()  # the patches below are process-wide
_FAKE_CORE_COUNT = 8  # what the patched core-count functions answer (an M-series base chip's GPU cores)


class MetalCodegenUnavailable(RuntimeError):
    """This torch cannot generate Metal source off-Mac (a private Inductor internal moved or failed)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"Metal codegen unavailable on torch {torch.__version__}: {why}")
        self.why = why


def block_input_specs(key: CompileKey) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """(shape, dtype) of the block's inputs q, k, v, i, f, c, n, m for one tile of ``key``."""
    from ..kernels.config import DTYPES
    from .tile import tile_span

    B, H, T, dq, dv = key.B, key.heads, tile_span(key), key.DHQK, key.DHV
    dt, gdt, f32 = DTYPES[key.dtype], DTYPES[key.gate_dtype], torch.float32
    return [((B, H, T, dq), dt), ((B, H, T, dq), dt), ((B, H, T, dv), dt), ((B, H, T), gdt), ((B, H, T), gdt),
            ((B, H, dq, dv), f32), ((B, H, dq), f32), ((B, H, 1), f32)]


@contextlib.contextmanager
def _fake_metal_device() -> Iterator[None]:
    """Answer Metal's core-count queries (absent in non-Mac builds) for the duration."""
    from unittest import mock

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch("torch.backends.mps.get_core_count",
                                       lambda: _FAKE_CORE_COUNT, create=True))
        stack.enter_context(mock.patch("torch._C._mps_get_core_count", lambda: _FAKE_CORE_COUNT, create=True))
        yield


def _output_code_text(code: Any) -> str:
    """The Python output code from ``GraphLowering.codegen()``'s return (its form varies by torch)."""
    if isinstance(code, tuple):  # (wrapper code, kernel code) in torch 2.x
        code = code[0]
    code = getattr(code, "value", code)  # ValueWithLineMap
    if not isinstance(code, str):
        raise MetalCodegenUnavailable(f"GraphLowering.codegen() returned {type(code).__name__}, not source text")
    return code


def metal_output_code(fn: Any, inputs: Sequence[tuple[tuple[int, ...], torch.dtype]],
                      inductor_options: Sequence[tuple[str, Any]] = ()) -> str:
    """Inductor's MPS output code (Python wrapper holding the Metal sources) for ``fn`` on ``inputs``.

    ``inputs``: (shape, dtype) per positional argument; ``inductor_options``: Inductor config values
    in force during lowering (e.g. ``max_fusion_unique_io_buffers``).
    """
    try:
        from torch._inductor import config as inductor_config
        from torch._inductor.debug import DebugContext
        from torch._inductor.decomposition import select_decomp_table
        from torch._inductor.graph import GraphLowering
        from torch._inductor.virtualized import V
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.proxy_tensor import make_fx
    except ImportError as exc:
        raise MetalCodegenUnavailable(f"an Inductor internal is missing ({exc})") from None
    stage = "tracing the block on CPU"
    try:
        with _LOCK:
            cpu_args = [torch.zeros(shape, dtype=dtype) for shape, dtype in inputs]
            with torch.no_grad():
                gm = make_fx(fn, tracing_mode="fake", decomposition_table=select_decomp_table())(*cpu_args)
            stage = "retargeting factory nodes to mps"
            mps = torch.device("mps")
            for node in gm.graph.nodes:
                if isinstance(node.kwargs.get("device"), torch.device):
                    node.kwargs = {**node.kwargs, "device": mps}
            gm.recompile()
            stage = "making fake MPS inputs"
            mode = FakeTensorMode()
            with mode:
                fake_args = [torch.empty(shape, dtype=dtype, device=mps) for shape, dtype in inputs]
            stage = "lowering and code generation"
            with _fake_metal_device(), inductor_config.patch(dict(inductor_options)), \
                    V.set_fake_mode(mode), DebugContext(), torch.no_grad():
                graph = GraphLowering(gm, example_inputs=fake_args)
                with V.set_graph_handler(graph):
                    graph.run(*fake_args)
                    code = graph.codegen()
    except MetalCodegenUnavailable:
        raise
    except Exception as exc:  # an internal moved: say where, not a traceback from deep inside Inductor
        raise MetalCodegenUnavailable(f"{stage} failed: {type(exc).__name__}: {str(exc)[:500]}") from exc
    src = _output_code_text(code)
    if "kernel void" not in src:
        raise MetalCodegenUnavailable("the generated output code holds no Metal kernel (another backend ran)")
    return src


_SOURCE_CACHE: dict[CompileKey, str] = {}


def block_metal_source(key: CompileKey) -> str:
    """Metal output code of ``key``'s block (one tile; ``key.device`` is ignored), memoised per key."""
    hit = _SOURCE_CACHE.get(key)
    if hit is None:
        if key.family == "step":
            raise ValueError("the decode step has no tile; generate Metal for the recurrent or chunkwise family")
        hit = metal_output_code(block_fn(key), block_input_specs(key), key.inductor_options)
        _SOURCE_CACHE[key] = hit
    return hit


def block_metal_scan(key: CompileKey) -> CodeScan:
    """Kernels and buffer arguments of the Metal source of ``key``'s block."""
    return scan_output_code([block_metal_source(key)])


def metal_kernel_sources(output_code: str) -> list[str]:
    """The Metal source strings inside one output-code module (what is handed to the Metal compiler)."""
    import re

    return re.findall(r"'''(.*?kernel\s+void.*?)'''", output_code, re.DOTALL)
