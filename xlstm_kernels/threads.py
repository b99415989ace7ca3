"""A config's CPU thread count applied around one call, and the count a CPU kernel is compiled for.

torch's intra-op thread count (``torch.set_num_threads``) is process-wide state: setting it around a
call changes it for every thread of the process for the duration of that call. A multi-threaded
caller that runs calls with different counts at once sees each call's count race with the others
(the last set wins until the next restore); such callers should pin one count for the process
(``torch.set_num_threads`` at start-up, configs with ``threads=None``) or serialise the calls.

Inductor's CPU code is specialised on the count at compile time (torch 2.13 ``cpp.py``: loops are
parallelised for ``parallel_num_threads()`` and, when it differs from ``os.cpu_count()``, emitted as
``#pragma omp parallel num_threads(N)``; with one thread no OpenMP region at all; Dynamo guards on it,
"GLOBAL_STATE changed: num_threads", and the FX graph cache keys on it). So the count is part of a CPU
kernel's compile key (``CompileKey.threads``, :func:`compiled_threads`), and a kernel compiled for one
count is never called under another.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def compiled_threads(device: torch.device | str) -> int:
    """The thread count a kernel for ``device`` compiles for now: torch's count on CPU, 0 elsewhere."""
    return torch.get_num_threads() if torch.device(device).type == "cpu" else 0


@contextlib.contextmanager
def use_threads(n: int | None) -> Iterator[None]:
    """Run the block with torch's thread count ``n`` (``None``: unchanged), restored in ``finally``."""
    old = None if n is None else torch.get_num_threads()
    if old is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def pinned_threads(threads: int | None, device: torch.device | str) -> int | None:
    """The count to apply around a call on ``device`` for a config's ``threads``: CPU only, else None."""
    return threads if threads is not None and torch.device(device).type == "cpu" else None
