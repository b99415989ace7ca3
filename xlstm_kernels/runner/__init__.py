"""The model runner: a whole xLSTM model's prefill and decode through compiled graphs (see docs/runner.md)."""

from .arch import model_key
from .config import STATE_DTYPES, STEP_COMPILE_MODES, ModelRunConfig
from .errors import (
    BatchSizeError,
    ModelGraphBreakError,
    RunnerError,
    SequenceTooLongError,
    StaleStateError,
    StateMismatchError,
    UnsupportedModelError,
)
from .external import MlstmKernelsPrefill, PrefillKernelUnavailable
from .runner import ModelRunner, compile_model
from .state import RunnerState

__all__ = [
    "BatchSizeError",
    "MlstmKernelsPrefill",
    "ModelGraphBreakError",
    "ModelRunConfig",
    "ModelRunner",
    "RunnerError",
    "RunnerState",
    "PrefillKernelUnavailable",
    "STATE_DTYPES",
    "STEP_COMPILE_MODES",
    "SequenceTooLongError",
    "StaleStateError",
    "StateMismatchError",
    "UnsupportedModelError",
    "compile_model",
    "model_key",
]
