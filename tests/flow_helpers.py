"""The real tuner on a tiny narrowed space, for the flow and CLI tests (plugged in through the
``tune_fn`` seam: a dotted path, so it also travels as a flow parameter).

``GOOD`` is ``tests/test_tuner.py``'s workload and the space holds two of its kernels (the default
chunkwise config and recurrent hpb2 T1): compiled once per session in-process, from Inductor's disk
cache after that. ``UNBANDABLE`` has NH=3, which heads_per_band=2 cannot band: the real tuner raises
``UnbandableWorkload`` for it before compiling anything - the "one workload fails" case.
"""

from __future__ import annotations

from typing import Any

import torch

import tuner
from tuner import SearchSpace, WorkloadResult

GOOD = "1,2,16,8,8,float32,prefill"
UNBANDABLE = "1,3,16,8,8,float32,prefill"


def narrow_space(workload: str, device: torch.device | str = "cpu") -> SearchSpace:
    """The two-candidate space: default config + recurrent, 2 heads per band, T_inner 1."""
    return SearchSpace.for_workload(workload, device, families=["recurrent"], heads_per_band=[2], t_inners=[1])


def tune_narrow(workload: str, **kwargs: Any) -> WorkloadResult:
    """``tuner.tune_workload`` on ``narrow_space``; every other argument as the flow passes it."""
    return tuner.tune_workload(workload, space=narrow_space(workload, kwargs.get("device") or "cpu"), **kwargs)
