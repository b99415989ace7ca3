"""Repeat calls that one compiled graph serves whole go straight to that graph.

``xk.mlstm`` validates, plans, pads and casts, then dispatches through the driver and the compile
cache; ``xk.mlstm_step`` validates and looks up its kernel: tens of Python calls. Run right after a
kernel has swept the CPU caches, that bookkeeping costs several times what it costs warm (measured
on a 2-core box: 320 us per ``xk.mlstm`` call around a 1.9 ms kernel). Once such a call has
succeeded and its kernel has learned a direct call (``CompiledKernel.direct``), the call's signature
(every tensor's dtype, shape, strides and device; absent states; eps; config) is remembered here,
and later calls with it go straight to the compiled graph (a sequence without initial states gets a
kept zero state). Sequences take this path only when the driver would run them as one compiled
call: one band, one block, no padding or casts, a queued driver; neither takes it in a CUDA-graph mode.
A config's CPU thread count is applied around the fast call as around the full one; an entry whose
config leaves the count alone is passed over once the caller's count is not the one its kernel was
compiled for (``CompileKey.threads``; see ``threads.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .compiler import CACHE, CompiledKernel, use_cpp_wrapper
from .config import KernelConfig
from ..device import is_out_of_memory
from .drivers import call_plan, prepare
from ..profiles.runtime import config_for
from ..settings import Settings, get_settings
from .shrink import shrink_enabled
from ..threads import pinned_threads

_LIMIT = 64  # remembered call signatures; the memo is cleared when it grows past this
_FAST_MODES = ("default", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class _Entry:
    mode: str  # "prefill" | "decode": which config_for() lookup a config=None call repeats
    config: KernelConfig
    kernel: CompiledKernel
    direct: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    zero_states: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # read-only: graphs never write inputs
    settings: Settings
    generation: int  # CACHE.generation when remembered
    threads: int | None  # the config's CPU thread count, applied around the call (None: left alone)
    compiled: int  # the count the kernel is compiled for (CompileKey.threads; 0 off the CPU)


_MEMO: dict[tuple, _Entry] = {}
_LOCK = threading.Lock()


def _memo_key(args: tuple[torch.Tensor | None, ...], eps: Any, config: Any) -> tuple | None:
    if config is not None and not isinstance(config, KernelConfig):
        return None
    q, k, v, i, f, c, n, m = args
    try:  # one flat tuple: this runs right after a kernel has swept the caches, where every step costs
        key = (q.dtype, q.device, q.shape, q.stride(), k.dtype, k.device, k.shape, k.stride(),
               v.dtype, v.device, v.shape, v.stride(), i.dtype, i.device, i.shape, i.stride(),
               f.dtype, f.device, f.shape, f.stride(), type(eps), eps, config)
        if c is None and n is None and m is None:
            return key
        if c is None or n is None or m is None:  # partial states: the full path says why
            return None
        return key + (c.dtype, c.device, c.shape, c.stride(), n.dtype, n.device, n.shape, n.stride(),
                      m.dtype, m.device, m.shape, m.stride())
    except (AttributeError, TypeError):  # not tensors: the full path says why
        return None


def _entry(args: tuple[torch.Tensor | None, ...], eps: Any, config: Any) -> _Entry | None:
    key = _memo_key(args, eps, config)
    try:
        entry = None if key is None else _MEMO.get(key)
    except TypeError:  # an unhashable eps: the full path says why
        return None
    if entry is None or entry.settings is not get_settings() or entry.generation != CACHE.generation:
        return None
    if entry.threads is None and entry.compiled and entry.compiled != torch.get_num_threads():
        return None  # the caller's count changed since: its kernel is another one (the full path finds it)
    if config is None:  # the profile may have been reloaded since
        current = config_for(args[0], args[2], entry.mode)
        if current is not entry.config and current != entry.config:
            return None
    return entry


def _call(entry: _Entry, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple]:
    grad = torch.is_grad_enabled()
    torch.set_grad_enabled(False)  # the function form: a third of `with torch.no_grad()`'s cost here
    old = 0 if entry.threads is None else torch.get_num_threads()  # use_threads inlined (per-call cost)
    if old and old != entry.threads:
        torch.set_num_threads(entry.threads)
    try:
        h, c, n, m = entry.kernel.run_direct(entry.direct, inputs)
    finally:
        if old and old != entry.threads:
            torch.set_num_threads(old)
        torch.set_grad_enabled(grad)
    return h, (c, n, m)


def run(args: tuple[torch.Tensor | None, ...], eps: Any, config: Any) -> tuple[torch.Tensor, tuple] | None:
    """``(h, (C, n, m))`` for ``args`` = (q, k, v, i, f, c0, n0, m0) if a remembered ``xk.mlstm`` call
    matches, else None."""
    entry = _entry(args, eps, config)
    if entry is None:
        return None
    try:
        return _call(entry, args[:5] + (entry.zero_states if args[5] is None else args[5:]))
    except RuntimeError as exc:
        if shrink_enabled() and is_out_of_memory(exc):  # the full path retries with a smaller chunk
            return None
        raise


def run_step(args: tuple[torch.Tensor, ...], eps: Any, config: Any) -> tuple[torch.Tensor, tuple] | None:
    """``(h, (C, n, m))`` for ``args`` = (q, k, v, i, f, c, n, m) if a remembered ``xk.mlstm_step``
    call matches, else None."""
    entry = _entry(args, eps, config)
    return None if entry is None else _call(entry, args)


def _store(args: tuple[torch.Tensor | None, ...], eps: float, config: Any, entry: _Entry) -> None:
    memo_key = _memo_key(args, eps, config)
    if memo_key is None:
        return
    with _LOCK:
        if len(_MEMO) >= _LIMIT:
            _MEMO.clear()
        _MEMO[memo_key] = entry


def remember(args: tuple[torch.Tensor | None, ...], eps: float, config: Any, cfg: KernelConfig) -> None:
    """After ``xk.mlstm(*args, eps=eps, config=config)`` succeeded with ``cfg``: remember the call if
    one compiled graph served it whole and its kernel calls that graph directly."""
    q, k, v, i, f, c0 = args[:6]
    if cfg.driver != "queued" or cfg.compile_mode not in _FAST_MODES:
        return
    B, NH, S, DHQK = q.shape
    p, key = call_plan(cfg, B, NH, S, DHQK, v.shape[-1], q.dtype, (i.dtype, f.dtype), q.device, float(eps),
                       use_cpp_wrapper(q.device))
    if p.bands != 1 or p.blocks != 1 or p.padded_len != S:  # not one call on the caller's tensors
        return
    inputs, states = prepare(*args, cfg, p)  # what the driver fed the kernel; fresh zeros without c0
    given = args[:5] if c0 is None else args
    if any(a is not b for a, b in zip(inputs + states, given)):  # padded or cast: not the caller's tensors
        return
    kernel = CACHE.get(key)
    direct = kernel.direct_for(inputs + states)  # None too for states the driver made contiguous
    if direct is not None:
        zeros = states if c0 is None else None
        _store(args, eps, config, _Entry("prefill", cfg, kernel, direct, zeros, get_settings(), CACHE.generation,
                                         pinned_threads(cfg.threads, q.device), key.threads))


def remember_step(args: tuple[torch.Tensor, ...], eps: float, config: Any, cfg: KernelConfig,
                  kernel: CompiledKernel) -> None:
    """After ``xk.mlstm_step(*args, eps=eps, config=config)`` ran ``kernel`` with ``cfg``: remember the
    call if the kernel calls its graph directly for these very arguments (states cast to float32
    have another signature, so they never match)."""
    if cfg.compile_mode not in _FAST_MODES:
        return
    direct = kernel.direct_for(args)
    if direct is not None:
        _store(args, eps, config, _Entry("decode", cfg, kernel, direct, None, get_settings(), CACHE.generation,
                                         pinned_threads(cfg.threads, args[0].device), kernel.key.threads))
