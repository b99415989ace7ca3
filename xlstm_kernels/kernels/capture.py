"""Whole-call CUDA graph capture (``compile_mode="graph-capture"``).

Captures one complete driver call — casts, padding, every compiled block of every band, output
casts — into a ``torch.cuda.CUDAGraph`` with static input buffers. A call then costs a copy of the
inputs into those buffers, one replay and a copy of the outputs: no per-kernel launch overhead and
far less Python than CUDA-graph trees (``reduce-overhead``), which wrap each compiled block.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

import torch


class CapturedCall:
    """A function of fixed-shape CUDA tensors (``None`` allowed) replayed from one CUDA graph."""

    def __init__(self, fn: Callable[..., Any], example: tuple[torch.Tensor | None, ...]) -> None:
        self.static_in = tuple(None if a is None else a.clone() for a in example)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up (compilation included) outside the capture
            for _ in range(2):
                fn(*self.static_in)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            out = fn(*self.static_in)
        self.static_out, self.treedef = torch.utils._pytree.tree_flatten(out)

    def __call__(self, *args: torch.Tensor | None) -> Any:
        for dst, src in zip(self.static_in, args):
            if dst is not None:
                dst.copy_(src)
        self.graph.replay()
        fresh = [o.clone() for o in self.static_out]  # the next replay overwrites the static outputs
        return torch.utils._pytree.tree_unflatten(fresh, self.treedef)


_CAPTURED: dict[Hashable, CapturedCall] = {}
_LOCK = threading.Lock()


def captured(key: Hashable, fn: Callable[..., Any], args: tuple[torch.Tensor | None, ...]) -> Any:
    """Run ``fn(*args)`` through the CUDA graph cached under ``key`` (captured on first use)."""
    call = _CAPTURED.get(key)
    if call is None:
        with _LOCK:
            call = _CAPTURED.get(key)
            if call is None:
                call = CapturedCall(fn, args)
                _CAPTURED[key] = call
    return call(*args)


def clear() -> None:
    """Drop every captured graph (frees their memory pools)."""
    with _LOCK:
        _CAPTURED.clear()
