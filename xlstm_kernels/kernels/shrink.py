"""Chunk shrink: the opt-in, non-canonical escape hatch for device out-of-memory.

Off by default (setting ``shrink``). When on, a run that fails with a device out-of-memory error is
retried with half the chunk (``T_inner`` lowered with it where the family needs a divisor), and every
retry logs and warns with ``NonCanonicalWarning``: a smaller logical chunk changes the chunkwise
results' rounding, so the result is not the canonical one. It never fires while tuning (inside
``tuning()``), where an out-of-memory error must reject the candidate instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .config import KernelConfig
from ..device import is_out_of_memory
from ..settings import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

_TUNING: contextvars.ContextVar[bool] = contextvars.ContextVar("xlstm_autotune_tuning", default=False)


class NonCanonicalWarning(RuntimeWarning):
    """A result was computed with a shrunk chunk: valid, but not the canonical (fixed-chunk) result."""


@contextlib.contextmanager
def tuning() -> Iterator[None]:
    """Context in which chunk shrink never fires (the tuner runs candidates inside it)."""
    token = _TUNING.set(True)
    try:
        yield
    finally:
        _TUNING.reset(token)


def shrink_enabled() -> bool:
    """True when the ``shrink`` setting is on and we are not tuning."""
    return get_settings().shrink and not _TUNING.get()


@dataclass
class ShrinkResult(Generic[T]):
    """A run's value, the config that produced it, and whether it is canonical."""

    value: T
    config: KernelConfig
    canonical: bool = True
    shrinks: list[int] = field(default_factory=list)  # chunk sizes tried and abandoned on OOM


def shrunk_config(config: KernelConfig) -> KernelConfig | None:
    """The next smaller chunk for ``config`` (half), or None when the chunk is already 1."""
    if config.chunk_size <= 1:
        return None
    chunk = config.chunk_size // 2
    t_inner = config.t_inner
    if config.family == "recurrent":
        t_inner = min(t_inner, chunk)
        while chunk % t_inner:
            t_inner -= 1
    return config.replace(chunk_size=chunk, t_inner=t_inner)


def run_with_shrink(run: Callable[[KernelConfig], T], config: KernelConfig,
                    enabled: bool | None = None) -> ShrinkResult[T]:
    """``run(config)``; on device OOM and with shrink enabled, retry with smaller chunks (warning each time).

    ``enabled=None`` reads the setting (and is False while ``tuning()``). Without shrink, or when the
    chunk cannot shrink further, the out-of-memory error propagates unchanged.
    """
    on = shrink_enabled() if enabled is None else (enabled and not _TUNING.get())
    cfg, shrinks = config, []
    while True:
        try:
            value = run(cfg)
        except Exception as exc:
            if not (on and is_out_of_memory(exc)):
                raise
            smaller = shrunk_config(cfg)
            if smaller is None:
                raise
            msg = (f"device out of memory at chunk_size={cfg.chunk_size}; retrying with chunk_size="
                   f"{smaller.chunk_size} (shrink is on). The result is NON-CANONICAL: it differs from "
                   f"the fixed-chunk result of {config.short()}.")
            log.warning(msg)
            warnings.warn(msg, NonCanonicalWarning, stacklevel=2)
            shrinks.append(cfg.chunk_size)
            _free_device_memory()
            cfg = smaller
            continue
        return ShrinkResult(value=value, config=cfg, canonical=not shrinks, shrinks=shrinks)


def _free_device_memory() -> None:
    import torch

    from ..device import empty_cache

    for dev in ("cuda", "mps"):
        try:
            if dev == "cuda" and torch.cuda.is_available():
                empty_cache(dev)
            elif dev == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
                empty_cache(dev)  # never run on Apple hardware
        except RuntimeError:
            pass
