"""The prefill's mLSTM through NX-AI's ``mlstm_kernels`` instead of our tuned kernel.

``ModelRunConfig(prefill=MlstmKernelsPrefill(...))`` runs each block's prefill mLSTM through
``mlstm_kernels``' own inference backend (its chunkwise kernel, its sequence kernel for a tail that
is not a whole chunk), between the runner's compiled block pieces, exactly where our kernel would
run. On CUDA that puts NX-AI's Triton kernels inside the runner ("under the same compile"), so the
tuner can pick them where they are faster; the decode step stays the runner's traced step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..kernels.config import check_fields, dtype_name
from .errors import RunnerError

DEFAULT_CHUNKWISE = "chunkwise--triton_xl_chunk"


class PrefillKernelUnavailable(RunnerError):
    """The ``mlstm_kernels`` kernel a config names cannot run here (package or kernel missing)."""


@dataclass(frozen=True)
class MlstmKernelsPrefill:
    """An ``mlstm_kernels`` chunkwise kernel (a name of ``mlstm_kernels.torch.get_available_mlstm_kernels()``)
    and its chunk size, as the runner's prefill mLSTM; validated on construction."""

    chunkwise_kernel: str = DEFAULT_CHUNKWISE
    chunk_size: int = 128

    def __post_init__(self) -> None:
        if not isinstance(self.chunkwise_kernel, str) or not self.chunkwise_kernel.startswith("chunkwise--"):
            raise ValueError("chunkwise_kernel must name an mlstm_kernels chunkwise kernel ('chunkwise--...'; "
                             f"parallel kernels return no final state), got {self.chunkwise_kernel!r}")
        cs = self.chunk_size
        if isinstance(cs, bool) or not isinstance(cs, int) or cs < 16 or cs & (cs - 1):
            raise ValueError(f"chunk_size must be a power of two >= 16, got {cs!r}")

    @property
    def sequence_kernel(self) -> str:
        """The sequence kernel for the prompt's tail: Triton's beside a Triton chunkwise kernel, else native."""
        return "native_sequence__triton" if "triton" in self.chunkwise_kernel else "native_sequence__native"

    @property
    def step_kernel(self) -> str:
        """The step kernel the backend is built with (the runner's decode never calls it)."""
        return "triton" if "triton" in self.chunkwise_kernel else "native"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form; the ``mlstm_kernels`` key tells it from a KernelConfig dict."""
        return {"mlstm_kernels": self.chunkwise_kernel, "chunk_size": self.chunk_size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MlstmKernelsPrefill:
        """Inverse of ``to_dict``; unknown keys are an error."""
        data = dict(data)
        name = data.pop("mlstm_kernels", DEFAULT_CHUNKWISE)
        check_fields(cls, data)
        return cls(chunkwise_kernel=name, **data)

    @classmethod
    def parse(cls, spec: str) -> MlstmKernelsPrefill:
        """From ``"<chunkwise kernel>@<chunk size>"`` (the settings' form), e.g. ``chunkwise--triton_xl_chunk@128``."""
        name, sep, size = str(spec).partition("@")
        if not sep or not size.strip().isdigit():
            raise ValueError(f"an mlstm_kernels prefill is '<chunkwise kernel>@<chunk size>', got {spec!r}")
        return cls(name.strip(), int(size))

    def short(self) -> str:
        """Compact form, e.g. ``mlstm_kernels:triton_xl_chunk@L128``."""
        return f"mlstm_kernels:{self.chunkwise_kernel.removeprefix('chunkwise--')}@L{self.chunk_size}"


def unavailable_reason(prefill: MlstmKernelsPrefill) -> str | None:
    """Why ``prefill`` cannot run on this machine (``mlstm_kernels`` missing, or without that kernel,
    e.g. its Triton kernels where Triton does not run); None when it can."""
    try:
        from mlstm_kernels.torch import get_available_mlstm_kernels, get_available_mlstm_sequence_kernels
    except ImportError as exc:
        return f"the prefill kernel {prefill.short()} needs the mlstm_kernels package ({exc})"
    chunkwise = [k for k in get_available_mlstm_kernels() if k.startswith("chunkwise--")]
    for name, available in ((prefill.chunkwise_kernel, chunkwise),
                            (prefill.sequence_kernel, get_available_mlstm_sequence_kernels())):
        if name not in available:
            return f"mlstm_kernels has no kernel {name!r} on this machine (available here: {sorted(available)})"
    return None


def mlstm_kernels_backend(prefill: MlstmKernelsPrefill, dtype: torch.dtype, eps: float) -> torch.nn.Module:
    """``mlstm_kernels``' inference backend for ``prefill``: called as ``backend(q, k, v, i, f, c, n, m)``
    -> (h, (c, n, m)) on inputs in ``dtype`` (float32 states), the eager model's own prefill path."""
    why = unavailable_reason(prefill)
    if why is not None:
        raise PrefillKernelUnavailable(why)
    from mlstm_kernels.torch.backend_module import mLSTMBackend, mLSTMBackendConfig

    try:
        name = dtype_name(dtype)
    except ValueError as exc:
        raise PrefillKernelUnavailable(f"mlstm_kernels: {exc}") from None
    return mLSTMBackend(mLSTMBackendConfig(
        chunkwise_kernel=prefill.chunkwise_kernel, sequence_kernel=prefill.sequence_kernel,
        step_kernel=prefill.step_kernel, mode="inference", chunk_size=prefill.chunk_size,
        autocast_kernel_dtype=name, eps=eps, inference_state_dtype="float32"))
