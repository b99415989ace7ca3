"""The runner's compiled graphs: the whole-model decode step, and the prefill's per-block pieces.

Each runner gets its own copy of each function's code object, so Dynamo's per-code-object cache
(and its recompile limit) is per runner. Every graph is ``fullgraph=True``: a graph break raises
:class:`ModelGraphBreakError` naming the model's module whose code broke it.
"""

from __future__ import annotations

import dis
import re
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..kernels.compiler import ensure_inductor_cache_dir, use_cpp_wrapper
from .arch import ModelParts
from .errors import ModelGraphBreakError
from .layers import finish_block, head, mlstm_step_, project
from .state import StateBuffers

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\w+)')


def make_decode_step(parts: ModelParts, buffers: StateBuffers, tokens: torch.Tensor,
                     fused: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Callable[[], Any]:
    """The whole-model decode step for a batch of B = ``buffers.batch`` sequences: ``step()`` reads
    ``tokens`` (B,), advances every block's state in place and returns (logits (B, V), greedy next
    token (B,)); the next token is also written into ``tokens``, so a greedy loop calls ``step()``
    again with nothing to copy; ``fused``: per block, :func:`fused_projection`'s weights. (The buffers hold exactly B sequences: a step over a slice of larger
    buffers made Inductor rewrite the whole buffer, all of its rows, every step.)"""
    blocks, eps = parts.blocks, parts.eps

    def decode_step():
        x = parts.embedding(tokens)[:, None]  # (B, 1, D)
        for idx, block in enumerate(blocks):
            q, k, v, o, i, f = project(parts, block, x, None if fused is None else fused[idx])
            c, n, m = buffers.c_t[idx].transpose(-1, -2), buffers.n[idx], buffers.m[idx]
            h = mlstm_step_(q[:, :, 0], k[:, :, 0], v[:, :, 0], i, f, c, n, m, eps)  # (B, NH, DHV)
            x = finish_block(block, x, h[:, :, None], o)
        logits = head(parts, x)[:, 0]  # (B, V)
        nxt = logits.argmax(-1)
        tokens.copy_(nxt)
        return logits, nxt

    return decode_step


def make_prefill_pieces(parts: ModelParts) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """(pre, post, head) of the prefill: ``pre(block, x, fused)`` -> the mLSTM inputs (``fused``: the
    block's :func:`fused_projection` weights or None), ``post(block, x, h, o)`` -> the block's output,
    ``logits(x)`` -> logits; the mLSTM kernel runs between pre and post."""

    def prefill_pre(block, x, fused):
        return project(parts, block, x, fused)

    def prefill_post(block, x, h, o):
        return finish_block(block, x, h, o)

    def prefill_head(x):
        return head(parts, x)

    return prefill_pre, prefill_post, prefill_head


def fresh_code(fn: Callable[..., Any], tag: str) -> types.FunctionType:
    """``fn`` with its own code object (own Dynamo cache), named ``<name>_<tag>``."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def step_options(mode: str, cuda_graphs: bool, device: torch.device) -> dict[str, Any]:
    """Inductor options of the decode step: ``mode``'s, with CUDA graphs exactly when ``cuda_graphs``
    on a CUDA device, and the C++ wrapper on the CPU when the settings ask for it."""
    opts: dict[str, Any] = dict(torch._inductor.list_mode_options(mode)) if mode != "default" else {}
    opts["triton.cudagraphs"] = bool(cuda_graphs and device.type == "cuda")
    if use_cpp_wrapper(device):
        opts["cpp_wrapper"] = True
    return opts


def prefill_options(device: torch.device) -> dict[str, Any]:
    """Inductor options of the prefill pieces (shapes vary with the prompt: no CUDA graphs)."""
    return {"cpp_wrapper": True} if use_cpp_wrapper(device) else {}


def compile_fn(fn: types.FunctionType, options: dict[str, Any], dynamic: bool | None) -> Callable[..., Any]:
    """``torch.compile(fn, fullgraph=True)`` with these Inductor options (lazy: compiles at the first call)."""
    ensure_inductor_cache_dir()
    return torch.compile(fn, fullgraph=True, dynamic=dynamic, options=options or None)


def cache_entries(fn: types.FunctionType) -> int:
    """How many graphs Dynamo holds for ``fn``'s code object (one per guard set: a recompile adds one)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    return len(_debug_get_cache_entry_list(fn.__code__))


def _code_range(code: types.CodeType) -> tuple[int, int]:
    lines = [ln for _, ln in dis.findlinestarts(code) if ln is not None]
    return (code.co_firstlineno, max(lines, default=code.co_firstlineno))


def breaking_module(model: nn.Module, text: str) -> str | None:
    """The qualified name of the deepest module of ``model`` whose ``forward`` appears in the user
    stack of a Dynamo error message ``text``; None when no frame is a module's forward."""
    frames = [(path, int(line)) for path, line, _ in _FRAME.findall(text)]
    best: tuple[int, str] | None = None
    for name, module in model.named_modules():
        fwd = getattr(type(module), "forward", None)
        code = getattr(fwd, "__code__", None)
        if code is None:
            continue
        lo, hi = _code_range(code)
        for pos, (path, line) in enumerate(frames):
            if path == code.co_filename and lo <= line <= hi:
                rank = (pos, name.count("."))
                if best is None or rank > (best[0], best[1].count(".")):
                    best = (pos, name)
    return None if best is None else (best[1] or type(model).__name__)


def call_graph(fn: Callable[..., Any], model: nn.Module, what: str, *args: Any) -> Any:
    """``fn(*args)``, turning a graph break into :class:`ModelGraphBreakError` naming the module."""
    try:
        return fn(*args)
    except torch._dynamo.exc.Unsupported as exc:
        text = str(exc)
        name = breaking_module(model, text)
        where = f"module {name!r} ({type(model.get_submodule(name)).__name__})" if name and name != type(model).__name__ \
            else "the runner's own code (no module of the model in the stack)"
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise ModelGraphBreakError(
            f"the {what} does not compile into one graph: a graph break in {where}: {first}. The runner "
            "needs every module of the model to trace with torch.compile(fullgraph=True)"
        ) from exc
