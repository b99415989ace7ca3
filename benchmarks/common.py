"""Shared helpers of the benchmark scripts: inputs, device-synchronised timing, error vs reference."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from xlstm_kernels.device import synchronize
from xlstm_kernels.reference import rel_err  # noqa: F401 - the benchmark scripts import it from here


def make_inputs(B: int, NH: int, S: int, DHQK: int, DHV: int, dtype: torch.dtype, device: str, seed: int = 0):
    """Random q, k, v (dtype) and float32 gates like a trained layer's (forget biased open)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(B, NH, S, DHQK, generator=g)
    k = torch.randn(B, NH, S, DHQK, generator=g)
    v = torch.randn(B, NH, S, DHV, generator=g)
    i = torch.randn(B, NH, S, generator=g)
    f = torch.randn(B, NH, S, generator=g) + 3.0
    return tuple(x.to(device, dtype) for x in (q, k, v)) + (i.to(device), f.to(device))


def time_fn(fn: Callable[[], Any], device: str, warmup: int = 5, reps: int = 30,
            min_time_s: float = 0.0) -> dict[str, float]:
    """Median / p10 / p90 milliseconds of ``fn()``, device-synchronised around every call.

    The first ``warmup`` calls (compilation, CUDA-graph recording) are timed apart as ``first_ms``.
    """
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup - 1):
        fn()
    synchronize(device)
    samples = []
    start = time.perf_counter()
    while len(samples) < reps or time.perf_counter() - start < min_time_s:
        if device.startswith("cuda"):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            samples.append(a.elapsed_time(b))
        else:
            t = time.perf_counter()
            fn()
            synchronize(device)
            samples.append((time.perf_counter() - t) * 1e3)
    samples.sort()
    n = len(samples)
    return {
        "median_ms": statistics.median(samples),
        "p10_ms": samples[n // 10],
        "p90_ms": samples[(9 * n) // 10],
        "first_ms": first_ms,
        "reps": n,
    }


def time_back_to_back(fn: Callable[[], Any], device: str, calls: int = 50, rounds: int = 9) -> float:
    """Median milliseconds per call of ``calls`` consecutive calls with no synchronisation between them.

    This is how a decode loop runs (and how Triton's ``do_bench`` measures): the host enqueues ahead,
    so per-call host overhead hides behind device time unless it is the larger of the two.
    """
    for _ in range(3):
        fn()
    synchronize(device)
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        if device.startswith("cuda"):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(calls):
                fn()
            b.record()
            b.synchronize()
            per.append(a.elapsed_time(b) / calls)
        else:
            for _ in range(calls):
                fn()
            synchronize(device)
            per.append((time.perf_counter() - t0) * 1e3 / calls)
    return statistics.median(per)
