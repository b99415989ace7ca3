"""Device helpers: synchronisation, out-of-memory detection, capabilities per backend.

MPS paths were written against PyTorch's documented MPS API and have not been run on Apple hardware.
"""

from __future__ import annotations

import torch


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
    from .fingerprint import cpu_model

    return cpu_model()
