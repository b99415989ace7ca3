"""Model configs to tune and benchmark: named presets or a JSON file of ``xLSTMLargeConfig`` fields.

Models are built from configs with random weights (seeded), never downloaded::

    fields = resolve_model_config("xlstm-7b-shape")        # or "tiny", or "path/to/config.json"
    model = build_model(fields, dtype="bfloat16", device="cuda", seed=0)

Built models run NX-AI ``xlstm``'s native PyTorch kernels in inference mode (the eager reference the
model tuner's gate compares against); ``xk.compile_model`` wraps them. The backend fields of a JSON
file (``mode``, ``chunkwise_kernel``, ``sequence_kernel``, ``step_kernel``, ``return_last_states``,
``autocast_kernel_dtype``, ``inference_state_dtype``) are overridden for that reason.

This module lives in ``xlstm_kernels`` (not the tuner) because building a preset needs only torch and
the optional ``xlstm`` package: the ``generate`` comparison and the benchmarks use it without Optuna.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from ..kernels.config import dtype_name, parse_dtype

# The shape of NX-AI's xLSTM-7B (other fields: xLSTMLargeConfig's defaults), and a tiny one for tests
# (the shape of tests/test_runner.py's models, so the suite compiles their graphs once).
PRESETS: dict[str, dict[str, Any]] = {
    "xlstm-7b-shape": {"embedding_dim": 4096, "num_heads": 8, "num_blocks": 32, "vocab_size": 50304},
    "tiny": {"embedding_dim": 128, "num_heads": 2, "num_blocks": 2, "vocab_size": 64},
}

# Backend fields every built model gets: native kernels in inference mode, states returned.
NATIVE_BACKEND: dict[str, Any] = {
    "mode": "inference",
    "chunkwise_kernel": "chunkwise--native_autograd",
    "sequence_kernel": "native_sequence__native",
    "step_kernel": "native",
    "return_last_states": True,
}


class ModelSpecError(ValueError):
    """A model spec that is neither a preset nor a readable JSON file of xLSTMLargeConfig fields."""


def _config_class() -> type:
    try:
        from xlstm.xlstm_large.model import xLSTMLargeConfig
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ModelSpecError(
            "building xLSTM models needs the optional 'xlstm' package (pip install 'xlstm==2.0.6')") from exc
    return xLSTMLargeConfig


def config_fields() -> tuple[str, ...]:
    """The field names of ``xLSTMLargeConfig`` (what a model config JSON may hold)."""
    return tuple(f.name for f in dataclasses.fields(_config_class()))


def resolve_model_config(spec: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The ``xLSTMLargeConfig`` fields of a preset name, a JSON file path, or a dict; validated.

    Raises :class:`ModelSpecError` naming the presets for an unknown name, and the unknown fields
    (with the known ones) for a JSON object that is not an xLSTMLarge config.
    """
    if isinstance(spec, dict):
        fields, source = dict(spec), "config"
    elif str(spec) in PRESETS:
        return dict(PRESETS[str(spec)])
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelSpecError(
                f"model {str(spec)!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file")
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelSpecError(f"model config {path}: cannot read it as JSON ({exc})") from None
        source = str(path)
        if not isinstance(fields, dict):
            raise ModelSpecError(f"model config {path}: expected a JSON object, got {type(fields).__name__}")
    known = config_fields()
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ModelSpecError(f"model config {source}: unknown xLSTMLargeConfig fields {unknown}; "
                             f"known: {sorted(known)}")
    missing = [f for f in ("embedding_dim", "num_heads", "num_blocks", "vocab_size") if f not in fields]
    if missing:
        raise ModelSpecError(f"model config {source}: missing required fields {missing}")
    for name in ("embedding_dim", "num_heads", "num_blocks", "vocab_size"):
        value = fields[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelSpecError(f"model config {source}: {name} must be a positive integer, got {value!r}")
    return fields


def head_shape(fields: dict[str, Any]) -> tuple[int, int, int]:
    """(NH, DHQK, DHV) of the model's mLSTM layers (as xLSTMLarge computes them)."""
    cls = _config_class()
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    emb, nh = fields["embedding_dim"], fields["num_heads"]
    qk = int(emb * fields.get("qk_dim_factor", defaults["qk_dim_factor"]))
    v = int(emb * fields.get("v_dim_factor", defaults["v_dim_factor"]))
    if qk % nh or v % nh:
        raise ModelSpecError(f"num_heads={nh} does not divide the q/k dim {qk} and v dim {v} of embedding_dim={emb}")
    return nh, qk // nh, v // nh


def build_model(spec: str | Path | dict[str, Any], *, dtype: str | torch.dtype = "float32",
                device: str | torch.device = "cpu", seed: int = 0) -> torch.nn.Module:
    """An ``xLSTMLarge`` of ``spec`` with random weights from ``seed``, in ``dtype`` on ``device``, eval mode.

    The weights are drawn in float32 on ``device`` and then cast, so the same seed gives the float32
    reference and a bfloat16 model with the same (rounded) weights.
    """
    from xlstm.xlstm_large.model import xLSTMLarge

    fields = resolve_model_config(spec)
    dt = parse_dtype(dtype) if isinstance(dtype, str) else dtype
    kernel_dtype = dtype_name(dt)  # refuses dtypes the kernels do not support
    # the eager model's states in its own dtype: xlstm's native step kernel multiplies the state with
    # the inputs and refuses float32 states beside bf16 inputs (the runner keeps its own state buffers)
    cfg = _config_class()(**{**fields, **NATIVE_BACKEND, "autocast_kernel_dtype": kernel_dtype,
                             "inference_state_dtype": kernel_dtype})
    torch.manual_seed(seed)
    with torch.device(device):
        model = xLSTMLarge(cfg)
    return model.to(dt).eval()
