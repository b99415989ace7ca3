"""The model runner's exceptions: one per way a model or a call can be refused."""

from __future__ import annotations


class RunnerError(Exception):
    """Base class: the model runner refused a model or a call (the message says what and why)."""


class UnsupportedModelError(RunnerError):
    """The model is not one the runner knows (xlstm's ``xLSTMLarge``, transformers' ``xLSTMForCausalLM``)."""


class ModelGraphBreakError(RunnerError):
    """A module of the model does not trace into one graph (``fullgraph=True``); the message names it."""


class SequenceTooLongError(RunnerError):
    """A prompt (or a decode step) would take the sequence past the runner's ``max_seq_len``."""


class BatchSizeError(RunnerError):
    """The batch size is larger than the static buffers, or differs from the state's."""


class StateMismatchError(RunnerError):
    """The state passed in is not a state of this runner (another runner's, or a model's own)."""


class StaleStateError(RunnerError):
    """The state is an earlier state of this runner, whose buffers later calls have overwritten."""
