"""Shared helpers of the benchmark scripts: inputs, timing (through the library's timer), error vs reference."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from tuner._timing import LoadMeter, summarize, time_one
from xlstm_kernels.device import synchronize
from xlstm_kernels.kernels.inputs import random_inputs
from xlstm_kernels.kernels.reference import rel_err  # noqa: F401 - the benchmark scripts import it from here
from tuner.settings import get_tuner_settings


def make_inputs(B: int, NH: int, S: int, DHQK: int, DHV: int, dtype: torch.dtype, device: str, seed: int = 0):
    """Random q, k, v (dtype) and float32 gates like a trained layer's (forget biased open)."""
    return random_inputs(B, NH, S, DHQK, DHV, dtype=dtype, device=device, seed=seed, gate_scale=1.0, forget_bias=3.0)


def time_fn(fn: Callable[[], Any], device: str, warmup: int = 5, reps: int = 30,
            min_time_s: float = 0.0) -> dict[str, Any]:
    """Median / p10 / p90 milliseconds of ``fn()``, device-synchronised around every call.

    Samples come from the library's timer (``tuner._timing.time_one``; CUDA events on CUDA), so the
    benchmarks and the tuner measure alike; ``instability`` says why the samples are not to be trusted
    (spread or tail over the tuner's limits, ``docs/timing.md``) and ``load_avg``/``steal_fraction``
    the load over the samples. The first ``warmup`` calls (compilation, CUDA-graph recording) are
    timed apart as ``first_ms``.
    """
    settings = get_tuner_settings()
    first_ms = time_one(fn, device)
    for _ in range(warmup - 1):
        fn()
    synchronize(device)
    samples = []
    start = time.perf_counter()
    with LoadMeter() as meter:
        while len(samples) < reps or time.perf_counter() - start < min_time_s:
            samples.append(time_one(fn, device, events=True))
    tm = summarize(samples, settings)
    s = sorted(samples)
    n = len(s)
    return {
        "median_ms": tm.median_ms,
        "p10_ms": s[n // 10],
        "p90_ms": s[(9 * n) // 10],
        "first_ms": first_ms,
        "reps": n,
        "min_ms": tm.min_ms,
        "instability": tm.instability,
        "load_avg": meter.load.load_avg,
        "steal_fraction": meter.load.steal_fraction,
    }


def time_back_to_back(fn: Callable[[], Any], device: str, calls: int = 50, rounds: int = 9) -> float:
    """Median milliseconds per call of ``calls`` consecutive calls with no synchronisation between them.

    This is how a decode loop runs (and how Triton's ``do_bench`` measures): the host enqueues ahead,
    so per-call host overhead hides behind device time unless it is the larger of the two.
    """
    for _ in range(3):
        fn()
    synchronize(device)
    return statistics.median(time_one(fn, device, calls, events=True) for _ in range(rounds))
