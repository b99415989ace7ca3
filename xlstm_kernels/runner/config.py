"""How a model runner executes a model: the knobs a ``model`` workload of the tuner varies."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from ..kernels.config import KernelConfig, check_fields
from .external import MlstmKernelsPrefill

StepCompileMode = Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"]
StateDtype = Literal["float32", "bfloat16"]
STEP_COMPILE_MODES: tuple[str, ...] = get_args(StepCompileMode)
STATE_DTYPES: tuple[str, ...] = get_args(StateDtype)


@dataclass(frozen=True)
class ModelRunConfig:
    """How a :class:`~xlstm_kernels.runner.ModelRunner` runs a model; validated on construction.

    step_compile_mode: Inductor's mode for the one-graph decode step. ``reduce-overhead`` is
        ``default`` plus CUDA graphs; whether CUDA graphs are used is ``cuda_graphs`` alone.
    cuda_graphs: replay the decode step as a CUDA graph (CUDA only; ignored on CPU and MPS).
    prefill: the chunkwise/recurrent kernel config of the prefill's mLSTM; ``None``: this machine's
        profile entry for the prompt's shape (``xk.mlstm(config=None)``), else the default config;
        an :class:`~xlstm_kernels.runner.external.MlstmKernelsPrefill`: NX-AI's ``mlstm_kernels``
        kernel of that name instead of ours (e.g. its Triton kernels on CUDA).
    threads: torch's CPU thread count while the runner runs (restored after each call); ``None``: torch's.
    state_dtype: dtype of the recurrent state buffers between calls. ``float32`` is canonical;
        ``bfloat16`` halves the state traffic (the math stays float32; the state is rounded on write).
    fuse_projections: the decode step and the prefill compute each block's q, k, v, output gate and
        input/forget gates with ONE matmul over a concatenated copy of those weights, made at
        ``compile_model`` (one weight read and launch instead of six; costs their size in memory
        again, and later in-place changes of those weights are not seen by the runner).
    prefill_graphs: capture the prefill of a fresh sequence (no ``state``) as one CUDA graph per
        (batch size, prompt length, ``last_only``) at its first call and replay it afterwards (CUDA
        only; ignored elsewhere): no per-block launch overhead. Each new shape costs two warm-up
        prefills, the capture and the graph's memory; the settings' ``runner_prefill_graphs`` bounds
        the shapes kept. Inside the graph the prefill kernel runs with ``compile_mode="default"``.
    """

    step_compile_mode: StepCompileMode = "default"
    cuda_graphs: bool = True
    prefill: KernelConfig | MlstmKernelsPrefill | None = None
    threads: int | None = None
    state_dtype: StateDtype = "float32"
    fuse_projections: bool = False
    prefill_graphs: bool = False

    def __post_init__(self) -> None:
        if self.step_compile_mode not in STEP_COMPILE_MODES:
            raise ValueError(f"step_compile_mode must be one of {list(STEP_COMPILE_MODES)}, "
                             f"got {self.step_compile_mode!r}")
        if not isinstance(self.cuda_graphs, bool):
            raise ValueError(f"cuda_graphs must be a bool, got {self.cuda_graphs!r}")
        if self.prefill is not None and not isinstance(self.prefill, (KernelConfig, MlstmKernelsPrefill)):
            raise ValueError("prefill must be a KernelConfig, an MlstmKernelsPrefill or None, got "
                             f"{type(self.prefill).__name__}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        for name in ("fuse_projections", "prefill_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.state_dtype not in STATE_DTYPES:
            raise ValueError(f"state_dtype must be one of {list(STATE_DTYPES)}, got {self.state_dtype!r}")

    @property
    def torch_state_dtype(self) -> torch.dtype:
        """``state_dtype`` as a torch dtype."""
        return torch.float32 if self.state_dtype == "float32" else torch.bfloat16

    def uses_cuda_graphs(self, device: torch.device) -> bool:
        """Whether the decode step is replayed as a CUDA graph on ``device``."""
        return self.cuda_graphs and device.type == "cuda"

    @property
    def external_prefill(self) -> MlstmKernelsPrefill | None:
        """The ``mlstm_kernels`` prefill kernel, when ``prefill`` names one (else None: ours)."""
        return self.prefill if isinstance(self.prefill, MlstmKernelsPrefill) else None

    def uses_prefill_graphs(self, device: torch.device) -> bool:
        """Whether a fresh sequence's prefill is replayed as a CUDA graph on ``device``."""
        return self.prefill_graphs and device.type == "cuda"

    def replace(self, **changes: Any) -> ModelRunConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``prefill`` as its own ``to_dict()`` or None)."""
        data = dataclasses.asdict(self)
        data["prefill"] = None if self.prefill is None else self.prefill.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelRunConfig:
        """Inverse of ``to_dict``; unknown keys are an error."""
        check_fields(cls, data)
        data = dict(data)
        if isinstance(data.get("prefill"), dict):
            data["prefill"] = prefill_from_dict(data["prefill"])
        return cls(**data)

    def short(self) -> str:
        """Compact human-readable form, e.g. ``step default graphs prefill=profile state=float32``."""
        pre = "profile" if self.prefill is None else self.prefill.short()
        threads = "" if self.threads is None else f" threads={self.threads}"
        graphs = "graphs" if self.cuda_graphs else "no-graphs"
        fused = " fused" if self.fuse_projections else ""
        pre_graphs = " prefill-graphs" if self.prefill_graphs else ""
        return (f"step {self.step_compile_mode} {graphs}{fused} prefill={pre}{pre_graphs}{threads} "
                f"state={self.state_dtype}")


def prefill_from_dict(data: dict[str, Any]) -> KernelConfig | MlstmKernelsPrefill:
    """A ``prefill`` field from its plain-JSON form: an ``mlstm_kernels`` key means MlstmKernelsPrefill."""
    return MlstmKernelsPrefill.from_dict(data) if "mlstm_kernels" in data else KernelConfig.from_dict(data)
