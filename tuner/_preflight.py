"""Checks a tuning run passes before anything starts (no lock, no Prefect, no DB write, no allocation).

One rule for every entry point: a workload that does not parse, whose NH no heads_per_band of the
space can band, or whose memory estimate exceeds the limit is bad input, refused with one named
exception (``UnknownWorkload`` / ``UnbandableWorkload`` / ``WorkloadTooLarge``, all ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from xlstm_kernels.kernels.config import Workload
from xlstm_kernels.device import default_device
from xlstm_kernels.kernels.validation import check_workload_memory

from ._space import SearchSpace, parse_workload
from .settings import TunerSettings, resolve_tuner_settings


def check_workloads(workloads: Sequence[Workload | str], device: torch.device | str | None = None,
                    settings: TunerSettings | None = None) -> list[Workload]:
    """Parse every workload, build its search space and check its memory estimate; returns them parsed."""
    settings = resolve_tuner_settings(settings)
    dev = torch.device(device) if device is not None else default_device()
    out = []
    for text in workloads:
        wl = parse_workload(text)
        SearchSpace.from_settings(wl, dev, settings)  # UnbandableWorkload / ValueError for a bad space
        check_workload_memory(wl, dev, settings.validate_max_s, settings)
        out.append(wl)
    return out
