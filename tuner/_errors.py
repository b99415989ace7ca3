"""Named failures of the tuner."""

from __future__ import annotations


class TunerError(Exception):
    """Base class of every tuner error."""


class UnknownWorkload(TunerError, ValueError):
    """A workload string that does not parse, or dims the tuner cannot work with."""


class UnbandableWorkload(TunerError, ValueError):
    """No heads_per_band choice in the space divides the workload's NH."""


class CandidateFailed(TunerError):
    """A candidate failed to compile or run (a failed trial, recorded with its reason)."""
