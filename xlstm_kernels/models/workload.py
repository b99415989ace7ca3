"""The ``model`` workload kind: one built model served at one batch size, prompt length and dtype.

A kernel workload (:class:`~xlstm_kernels.kernels.config.Workload`) is one mLSTM call shape; a model workload
is what a user runs: a whole model (identified by ``xk.model_key(model)``, a hash of its architecture
config, not of its weights), a batch size B, a prompt length S (the prefill) and the weights' dtype.
Its canonical text form, used as the key of profile entries and tuning-DB rows, is::

    model:<model key>,B,S,dtype          e.g.  model:3f2a9c1b7d04,1,2048,bfloat16

The knobs tuned for it are a :class:`~xlstm_kernels.runner.ModelRunConfig`; this module also holds
that config's plain-JSON form (what profiles and the tuning DB store).

Imports only torch and this package: production inference parses model workloads without the tuner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..kernels.config import dtype_name, parse_dtype

if TYPE_CHECKING:
    from ..runner import ModelRunConfig

PREFIX = "model:"
MODEL_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
_KEY = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,63}$")


def is_model_workload(text: str) -> bool:
    """True when ``text`` is meant as a model workload (starts with ``model:``), valid or not."""
    return text.strip().lower().startswith(PREFIX)


@dataclass(frozen=True)
class ModelWorkload:
    """What a model is tuned for: ``model:<key>,B,S,dtype`` (key: ``xk.model_key(model)``).

    model_key: 1-64 characters of letters, digits, ``_ . -`` (starting with a letter or digit), so it
        is safe in study names and file names. B: batch size. S: prompt length (prefill tokens).
    dtype: the weights' dtype (``float32``, ``bfloat16``, ``float16``; aliases fp32/bf16/fp16 accepted).
    """

    model_key: str
    B: int
    S: int
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.model_key, str) or not _KEY.match(self.model_key):
            raise ValueError(
                f"model key must be 1-64 letters, digits, '_', '.' or '-' (xk.model_key(model)), "
                f"got {self.model_key!r}")
        for name in ("B", "S"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        object.__setattr__(self, "dtype", dtype_name(parse_dtype(self.dtype)))

    @classmethod
    def parse(cls, text: str) -> ModelWorkload:
        """Parse ``"model:<key>,B,S,dtype"``; raises ValueError saying what was expected."""
        if not isinstance(text, str) or not is_model_workload(text):
            raise ValueError(f"model workload {text!r}: expected 'model:<model key>,B,S,dtype'")
        parts = [p.strip() for p in text.strip()[len(PREFIX):].split(",")]
        if len(parts) != 4 or not all(parts):
            raise ValueError(
                f"model workload {text!r}: expected 'model:<model key>,B,S,dtype' (4 fields after "
                f"'model:'), got {len([p for p in parts if p])}")
        try:
            B, S = int(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"model workload {text!r}: B and S must be integers") from None
        try:
            return cls(parts[0], B, S, parts[3])
        except ValueError as exc:
            raise ValueError(f"model workload {text!r}: {exc}") from None

    def __str__(self) -> str:
        return f"{PREFIX}{self.model_key},{self.B},{self.S},{self.dtype}"

    def tokens(self) -> int:
        """Prompt tokens of one prefill (B*S)."""
        return self.B * self.S


# -- ModelRunConfig <-> plain JSON (what profiles and the tuning DB store) -------------------------

def run_config_to_dict(config: ModelRunConfig) -> dict[str, Any]:
    """Plain-JSON form of a ``ModelRunConfig`` (its prefill KernelConfig as a dict, or None)."""
    return config.to_dict()


def run_config_from_dict(data: dict[str, Any]) -> ModelRunConfig:
    """Inverse of :func:`run_config_to_dict`; unknown keys and invalid values raise ValueError."""
    from ..runner import ModelRunConfig

    if not isinstance(data, dict):
        raise ValueError(f"a ModelRunConfig must be a JSON object, got {type(data).__name__}")
    try:
        return ModelRunConfig.from_dict(data)
    except TypeError as exc:
        raise ValueError(f"invalid ModelRunConfig {data!r}: {exc}") from None


def run_config_short(config: ModelRunConfig | dict[str, Any]) -> str:
    """Compact form, e.g. ``step default graphs prefill=profile state=float32``."""
    return (run_config_from_dict(config) if isinstance(config, dict) else config).short()
