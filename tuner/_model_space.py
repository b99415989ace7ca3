"""The model search space: step compile mode x CUDA graphs x prefill kernel x threads x state dtype
x fused projections x prefill graphs.

Dimensions (``ModelRunConfig`` fields) and where they apply:
* ``step_compile_mode`` — ``default`` and ``max-autotune-no-cudagraphs`` (the runner's
  ``reduce-overhead`` is ``default`` plus CUDA graphs, which ``cuda_graphs`` alone decides, so it is
  not a separate point unless a setting asks for it; on CUDA only);
* ``cuda_graphs`` — on/off on CUDA; elsewhere fixed to the default's value (it has no effect there);
* ``prefill`` — ``None`` (the runner's own choice: the kernel profile's pick, else the default
  kernel config) plus this machine's kernel winners for the model's head shape (DHQK, DHV, dtype,
  prefill; heads_per_band dividing NH), newest first, from the tuning DB's results and the profile,
  plus ``mlstm_kernels`` kernels (``MlstmKernelsPrefill``: NX-AI's Triton kernels on CUDA);
* ``threads`` — CPU only: ``None`` (torch's current count) and half of it (a setting's list replaces
  the half; ``None`` is always a choice);
* ``state_dtype`` — float32 (canonical) and bfloat16 (kept only if it passes the gate);
* ``fuse_projections`` — off/on (each block's six projections as one matmul, decode and prefill);
* ``prefill_graphs`` — off/on on CUDA (a fresh prefill replayed as one CUDA graph); elsewhere off.

``ModelRunConfig()`` is always a candidate and listed first. Settings ``tune_model_*`` narrow each.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch

from xlstm_kernels.kernels.config import KernelConfig
from xlstm_kernels.device import supports_cuda_graphs
from xlstm_kernels.models.workload import ModelWorkload, run_config_to_dict
from xlstm_kernels.runner import MlstmKernelsPrefill, ModelRunConfig
from xlstm_kernels.runner.config import prefill_from_dict
from .settings import TunerSettings

STEP_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")
DEFAULT_STEP_MODES: tuple[str, ...] = ("default", "max-autotune-no-cudagraphs")
STATE_DTYPES: tuple[str, ...] = ("float32", "bfloat16")
AUTO = "auto"  # the Optuna value of a None field (the runner's own choice)


def run_config_key(config: ModelRunConfig) -> str:
    """Canonical JSON of a run config: equal configs give equal keys."""
    return json.dumps(run_config_to_dict(config), sort_keys=True)


def _encode(value: Any) -> Any:
    if value is None:
        return AUTO
    if isinstance(value, (KernelConfig, MlstmKernelsPrefill)):
        return json.dumps(value.to_dict(), sort_keys=True)
    return value


def _decode(name: str, value: Any) -> Any:
    if value == AUTO:
        return None
    if name == "prefill":
        return prefill_from_dict(json.loads(value))
    return value


@dataclass(frozen=True)
class ModelSpace:
    """Categorical dimensions of one model workload on one device; see the module docstring."""

    workload: ModelWorkload
    dims: dict[str, tuple[Any, ...]]
    default: ModelRunConfig

    @classmethod
    def build(cls, workload: ModelWorkload, device: torch.device | str, *,
              step_modes: Sequence[str] | None = None, cuda_graphs: Sequence[bool] | None = None,
              prefills: Sequence[KernelConfig | MlstmKernelsPrefill | None] = (),
              threads: Sequence[int] | None = None, state_dtypes: Sequence[str] | None = None,
              fuse_projections: Sequence[bool] | None = None,
              prefill_graphs: Sequence[bool] | None = None) -> ModelSpace:
        """The space on ``device``; keyword lists narrow a dimension (invalid values raise ValueError)."""
        default = ModelRunConfig()
        dev = torch.device(device)
        cuda = supports_cuda_graphs(dev)
        modes = tuple(step_modes or DEFAULT_STEP_MODES)
        bad = [m for m in modes if m not in STEP_MODES or (not cuda and m == "reduce-overhead")]
        if bad:
            valid = STEP_MODES if cuda else DEFAULT_STEP_MODES
            raise ValueError(f"step compile modes {bad} are not valid on {dev}; expected some of {list(valid)}")
        graphs = tuple(cuda_graphs) if cuda_graphs else ((True, False) if cuda else (default.cuda_graphs,))
        if not cuda and graphs != (default.cuda_graphs,):
            raise ValueError(f"cuda_graphs is tuned on CUDA only; {dev} has none")
        pre_graphs = tuple(dict.fromkeys(prefill_graphs)) if prefill_graphs else (
            (False, True) if cuda else (default.prefill_graphs,))
        if any(not isinstance(x, bool) for x in pre_graphs):
            raise ValueError(f"prefill_graphs choices must be booleans, got {list(pre_graphs)}")
        if not cuda and pre_graphs != (default.prefill_graphs,):
            raise ValueError(f"prefill_graphs is tuned on CUDA only; {dev} has none")
        if dev.type == "cpu":
            n = torch.get_num_threads()
            thr: tuple[int | None, ...] = tuple(dict.fromkeys((None, *threads))) if threads else (
                (None, n // 2) if n > 1 else (None,))
        elif threads:
            raise ValueError(f"threads is tuned on the CPU only, not on {dev}")
        else:
            thr = (None,)
        if any(t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1) for t in thr):
            raise ValueError(f"threads must be positive integers, got {list(thr)}")
        states = tuple(state_dtypes or STATE_DTYPES)
        bad = [s for s in states if s not in STATE_DTYPES]
        if bad:
            raise ValueError(f"state dtypes {bad} are not valid; expected some of {list(STATE_DTYPES)}")
        fuse = tuple(dict.fromkeys(fuse_projections)) if fuse_projections else (False, True)
        if any(not isinstance(x, bool) for x in fuse):
            raise ValueError(f"fuse_projections choices must be booleans, got {list(fuse)}")
        pre: list[KernelConfig | MlstmKernelsPrefill | None] = [None]
        for p in prefills:
            if p not in pre:
                pre.append(p)
        dims = {"step_compile_mode": modes, "cuda_graphs": graphs, "prefill": tuple(pre),
                "threads": thr, "state_dtype": states, "fuse_projections": fuse, "prefill_graphs": pre_graphs}
        return cls(workload, dims, default)

    @classmethod
    def from_settings(cls, workload: ModelWorkload, device: torch.device | str, settings: TunerSettings,
                      prefills: Sequence[KernelConfig | MlstmKernelsPrefill | None] = ()) -> ModelSpace:
        """The space narrowed by the ``tune_model_*`` settings."""
        return cls.build(workload, device, step_modes=settings.tune_model_step_modes,
                         cuda_graphs=settings.tune_model_cuda_graphs, prefills=prefills,
                         threads=settings.tune_model_threads, state_dtypes=settings.tune_model_state_dtypes,
                         fuse_projections=settings.tune_model_fuse_projections,
                         prefill_graphs=settings.tune_model_prefill_graphs)

    def candidates(self) -> list[ModelRunConfig]:
        """Every distinct config of the product of ``dims``, ``default`` first."""
        out, seen = [self.default], {run_config_key(self.default)}
        names = list(self.dims)
        for values in itertools.product(*(self.dims[n] for n in names)):
            cfg = self.default.__class__(**dict(zip(names, values)))
            key = run_config_key(cfg)
            if key not in seen:
                seen.add(key)
                out.append(cfg)
        return out

    def distributions(self) -> dict[str, optuna.distributions.CategoricalDistribution]:
        """Optuna's categorical distributions (the default's values included)."""
        out = {}
        for name, values in self.dims.items():
            choices = [_encode(v) for v in values]
            default_value = _encode(getattr(self.default, name))
            if default_value not in choices:
                choices.insert(0, default_value)
            out[name] = optuna.distributions.CategoricalDistribution(choices)
        return out

    def params_of(self, config: ModelRunConfig) -> dict[str, Any]:
        """The Optuna params of ``config`` (for ``enqueue_trial``)."""
        return {name: _encode(getattr(config, name)) for name in self.dims}

    def suggest(self, trial: optuna.Trial) -> ModelRunConfig:
        """A config drawn (or enqueued) for ``trial``."""
        fields = {name: _decode(name, trial.suggest_categorical(name, dist.choices))
                  for name, dist in self.distributions().items()}
        return self.default.__class__(**fields)

    def signature(self) -> str:
        """A short hash of the dimensions (part of the study name)."""
        text = json.dumps({k: [_encode(v) for v in vals] for k, vals in self.dims.items()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]
