"""Device helpers: synchronisation, out-of-memory detection, capabilities per backend.

MPS paths were written against PyTorch's documented MPS API and have not been run on Apple hardware.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import sys
import threading

import torch

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h) and the values keep_freed_memory() sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum: buffers up to 32 MiB come from the reusable heap
_TRIM_THRESHOLD = 1024 * 1024 * 1024  # keep up to 1 GiB of freed heap instead of returning it at once
_malloc_lock = threading.Lock()
_malloc_tuned: bool | None = None


def default_device() -> torch.device:
    """CUDA if available, else MPS if available, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def synchronize(device: torch.device | str) -> None:
    """Wait for all queued work on ``device`` (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def empty_cache(device: torch.device | str) -> None:
    """Return cached allocator memory of ``device`` to the system."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


_OOM_SIGNATURES = (
    "out of memory",  # CUDA: "CUDA out of memory."; MPS: "MPS backend out of memory"
    "insufficient memory",  # Metal command buffer: kIOGPUCommandBufferCallbackErrorOutOfMemory text
    "failed to allocate",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device out-of-memory error (CUDA, MPS or a CPU allocation failure)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and any(s in text for s in _OOM_SIGNATURES)


def supports_cuda_graphs(device: torch.device | str) -> bool:
    """CUDA graphs (``reduce-overhead``) exist only on CUDA devices."""
    return torch.device(device).type == "cuda"


def device_name(device: torch.device | str) -> str:
    """Human-readable name of the device (GPU model, 'Apple MPS' or the CPU model)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    from .profiles.fingerprint import cpu_model

    return cpu_model()


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (once per process); True where it applied.

    A compiled CPU kernel allocates its megabyte-sized intermediates on every call. With glibc's
    defaults those may come fresh from the OS each time (mmap, or a heap trimmed back after the
    previous call), and the page faults on first touch made whole processes up to 2.8x slower
    (hundreds of faults per call, varying from process to process). Process-wide; only on Linux with
    glibc; ``Settings.cpu_keep_freed_memory`` turns it off.
    """
    global _malloc_tuned
    with _malloc_lock:
        if _malloc_tuned is None:
            _malloc_tuned = False
            if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
                try:
                    libc = ctypes.CDLL("libc.so.6")
                    _malloc_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                                         and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
                except (OSError, AttributeError) as exc:
                    log.debug("mallopt unavailable: %s", exc)
        return _malloc_tuned
