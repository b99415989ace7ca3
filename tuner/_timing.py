"""Timing that notices interference: samples, their stability, the machine's load, paired ratios.

The one timer of the project: the tuner's evaluation and re-timing, ``bench`` and the benchmark
scripts (``benchmarks/common.py``) all measure with it (see ``docs/timing.md``).

* ``time_one`` / ``time_callable`` / ``interleaved_samples``: device-synchronised samples (ms per call).
* ``summarize`` -> ``Timing``: median, interquartile spread, min, and ``instability``: why the samples
  cannot be trusted (spread over ``tune_unstable_spread`` of the median, or median over
  ``tune_unstable_tail`` x min: a descheduled thread stalls some calls and not others), else None.
* ``LoadMeter``: the 1-minute load average (``os.getloadavg``) and the fraction of CPU time stolen by
  a hypervisor (``/proc/stat``'s steal column) over a measurement, where the OS reports them.
* ``paired_ratios`` + ``median_interval``: a speedup from fresh paired rounds (B then A, A then B,
  alternating) as the median of the per-round ratios, with a distribution-free confidence interval
  from order statistics of the ratios (the binomial interval of the median).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from xlstm_kernels.device import synchronize
from .settings import TunerSettings

PROC_STAT = Path("/proc/stat")


# -- the machine ---------------------------------------------------------------------------------

def load_average() -> float | None:
    """The 1-minute load average, or None where the OS does not report one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def cpu_count() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_times(path: Path = PROC_STAT) -> tuple[int, int] | None:
    """(total, steal) jiffies of all CPUs from ``/proc/stat``, or None where it is absent."""
    try:
        first = path.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if first[:1] != ["cpu"] or len(first) < 9:
        return None
    vals = [int(x) for x in first[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already counted in user/nice]
    return sum(vals[:8]), vals[7]


@dataclass(frozen=True)
class MachineLoad:
    """What the OS says about competing load: load average per core, stolen CPU fraction (None: unknown)."""

    load_avg: float | None
    cores: int
    steal_fraction: float | None = None

    @property
    def load_per_core(self) -> float | None:
        """Load average over cores."""
        return None if self.load_avg is None else self.load_avg / self.cores

    def busy_reason(self, settings: TunerSettings) -> str | None:
        """Why the machine counts as busy (load per core or steal over the settings' limits), else None."""
        why = []
        lpc = self.load_per_core
        if lpc is not None and lpc > settings.busy_load_per_core:
            why.append(f"load average {self.load_avg:.2f} on {self.cores} cores "
                       f"(over {settings.busy_load_per_core:g} per core)")
        if self.steal_fraction is not None and self.steal_fraction > settings.busy_steal_fraction:
            why.append(f"{self.steal_fraction:.0%} of CPU time stolen by the hypervisor")
        return "; ".join(why) or None


def machine_load() -> MachineLoad:
    """The load right now (no steal: that needs a window, see ``LoadMeter``)."""
    return MachineLoad(load_average(), cpu_count())


def busy_now(settings: TunerSettings) -> str | None:
    """Why the machine is busy right now (load average per core over the settings' limit), else None."""
    return machine_load().busy_reason(settings)


@dataclass(frozen=True)
class QuietWait:
    """The outcome of ``wait_for_quiet``: quiet in the end or not, seconds waited, the last busy reason."""

    quiet: bool
    waited_s: float
    reason: str | None


def wait_for_quiet(settings: TunerSettings, *, max_wait_s: float | None = None) -> QuietWait:
    """Wait (bounded: ``serve_quiet_wait_s``, polling every ``serve_quiet_poll_s``) until the machine is
    not busy; scheduled runs call it before timing so a backup or a build does not decide a winner."""
    limit = settings.serve_quiet_wait_s if max_wait_s is None else max_wait_s
    t0 = time.monotonic()
    reason = busy_now(settings)
    while reason is not None and time.monotonic() - t0 < limit:
        time.sleep(min(settings.serve_quiet_poll_s, max(0.0, limit - (time.monotonic() - t0))))
        reason = busy_now(settings)
    return QuietWait(reason is None, time.monotonic() - t0, reason)


class LoadMeter:
    """Load over a window: ``with LoadMeter() as m: ...`` then ``m.load`` (max load average, steal fraction)."""

    def __init__(self, path: Path = PROC_STAT) -> None:
        self.path = path
        self.load = MachineLoad(None, cpu_count())
        self._start: tuple[int, int] | None = None
        self._la: float | None = None

    def __enter__(self) -> LoadMeter:
        self._start, self._la = cpu_times(self.path), load_average()
        return self

    def __exit__(self, *exc: object) -> None:
        end, la = cpu_times(self.path), load_average()
        steal = None
        if self._start is not None and end is not None and end[0] > self._start[0]:
            steal = (end[1] - self._start[1]) / (end[0] - self._start[0])
        loads = [x for x in (self._la, la) if x is not None]
        self.load = MachineLoad(max(loads) if loads else None, cpu_count(), steal)


# -- samples -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """Steady-state timing of one candidate (compile excluded); ``instability`` None means trusted."""

    median_ms: float
    spread_ms: float  # interquartile range
    min_ms: float
    repeats: int
    samples_ms: tuple[float, ...] = field(repr=False, default=())
    instability: str | None = None
    remeasures: int = 0  # extra measurement rounds taken because the samples were unstable
    load: MachineLoad | None = None

    @property
    def unstable(self) -> bool:
        """True when the samples stayed unstable (the candidate may not decide a winner)."""
        return self.instability is not None


def instability(samples_ms: list[float] | tuple[float, ...], settings: TunerSettings) -> str | None:
    """Why these samples cannot be trusted (spread or tail over the settings' limits), else None."""
    s = sorted(samples_ms)
    med, lo = statistics.median(s), s[0]
    spread = _iqr(s)
    why = []
    if med > 0 and spread > settings.tune_unstable_spread * med:
        why.append(f"spread {spread:.3g} ms is {spread / med:.0%} of the median {med:.3g} ms "
                   f"(limit {settings.tune_unstable_spread:.0%})")
    if lo > 0 and med > settings.tune_unstable_tail * lo:
        why.append(f"median {med:.3g} ms is {med / lo:.2f}x the min {lo:.3g} ms "
                   f"(limit {settings.tune_unstable_tail:g}x)")
    return "; ".join(why) or None


def _iqr(s: list[float]) -> float:
    if len(s) >= 4:
        q = statistics.quantiles(s, n=4)
        return q[2] - q[0]
    return s[-1] - s[0]


def summarize(samples_ms: list[float], settings: TunerSettings | None = None) -> Timing:
    """Median, interquartile spread and min of timing samples (and their instability, given settings)."""
    s = sorted(samples_ms)
    why = instability(s, settings) if settings is not None else None
    return Timing(statistics.median(s), _iqr(s), s[0], len(s), tuple(samples_ms), why)


def time_one(fn: Callable[[], Any], device: torch.device | str, calls: int = 1, *, events: bool = False) -> float:
    """Wall time per call of ``calls`` back-to-back calls between two synchronisations, in ms.

    ``events`` on a CUDA device: CUDA events around the calls instead (device time, no host wake-up).
    """
    if events and torch.device(device).type == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(calls):
            fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / calls
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - t0) * 1e3 / calls


def interleaved_samples(fns: list[Callable[[], Any]], device: torch.device | str, *, rounds: int, calls: int,
                        warmup: int) -> list[list[float]]:
    """Warm every ``fn`` up (untimed), then ``rounds`` rounds of one sample each in rotating order,
    so drifting load hits them alike; the samples (ms per call) per ``fn``."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        for j in range(len(fns)):
            idx = (j + r) % len(fns)
            samples[idx].append(time_one(fns[idx], device, calls))
    return samples


def time_callable(fn: Callable[[], Any], device: torch.device | str, *, warmup: int, repeats: int,
                  budget_s: float, calls: int = 1, settings: TunerSettings | None = None) -> Timing:
    """Warm up (untimed), then take up to ``repeats`` samples within ``budget_s`` (at least 3).

    With ``settings``, unstable samples are re-measured: up to ``tune_remeasure_max`` more batches
    of ``repeats`` samples, each after a back-off (``tune_remeasure_backoff_s``, doubling), judged
    on the newest batch; what stays unstable comes back with ``instability`` set.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    with LoadMeter() as meter:
        samples = _batch(fn, device, repeats, budget_s, calls)
        tm = summarize(samples, settings)
        extra = 0
        while settings is not None and tm.unstable and extra < settings.tune_remeasure_max:
            time.sleep(settings.tune_remeasure_backoff_s * 2 ** extra)
            extra += 1
            samples = _batch(fn, device, repeats, budget_s, calls)
            tm = summarize(samples, settings)
    return replace(tm, remeasures=extra, load=meter.load)


def _batch(fn: Callable[[], Any], device: torch.device | str, repeats: int, budget_s: float,
           calls: int) -> list[float]:
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats and (len(samples) < 3 or time.perf_counter() - start < budget_s):
        samples.append(time_one(fn, device, calls))
    return samples


# -- paired ratios and their interval ------------------------------------------------------------

def paired_ratios(numerator: Callable[[], Any], denominator: Callable[[], Any], device: torch.device | str, *,
                  rounds: int, calls: int = 1, warmup: int = 1,
                  span_s: float = 0.0) -> tuple[list[float], list[float], list[float]]:
    """``rounds`` fresh rounds, each timing both callables back to back (order alternating per round).

    Returns (ratios numerator/denominator per round, numerator samples, denominator samples), in ms.
    Load that comes and goes hits one round's pair alike, or some rounds only, so the median ratio holds;
    ``span_s`` paces round r to start no earlier than r * span_s / rounds seconds in, so a batch of fast
    calls is not over before a burst of load has come and gone (all of it inside one burst, or none);
    the gaps are filled with untimed calls of both, alternately, so every timed call stays warm (an idle
    gap lets threads sleep and caches go cold, which slows and scatters the call after it).
    """
    for fn in (numerator, denominator):
        for _ in range(warmup):
            fn()
    ratios, num, den = [], [], []
    t0, filler = time.monotonic(), 0
    for r in range(rounds):
        while time.monotonic() < t0 + r * span_s / rounds:
            (numerator if filler % 2 == 0 else denominator)()
            filler += 1
        if r % 2 == 0:
            a = time_one(numerator, device, calls)
            b = time_one(denominator, device, calls)
        else:
            b = time_one(denominator, device, calls)
            a = time_one(numerator, device, calls)
        num.append(a)
        den.append(b)
        ratios.append(a / b if b > 0 else math.inf)
    return ratios, num, den


def order_statistic_rank(n: int, confidence: float) -> int:
    """The largest k (1-based) with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2; 0 if none.

    [x_(k), x_(n+1-k)] of n sorted values then covers their population median with probability
    at least ``confidence``, whatever the distribution (the sign-test interval).
    """
    alpha = (1.0 - confidence) / 2
    k, below = 0, 0.0
    while k < n:
        below_next = below + math.comb(n, k) / 2 ** n  # P(B <= k) = P(B < k + 1)
        if below_next > alpha:
            break
        k, below = k + 1, below_next
    return k


@dataclass(frozen=True)
class Interval:
    """A median with its order-statistic confidence interval; ``low``/``high`` None when n is too small."""

    median: float
    low: float | None
    high: float | None
    confidence: float
    n: int

    @property
    def relative_width(self) -> float:
        """(high - low) / median; infinite without an interval."""
        if self.low is None or self.high is None or self.median <= 0:
            return math.inf
        return (self.high - self.low) / self.median

    def contains(self, value: float) -> bool:
        """True when ``value`` lies in [low, high]."""
        return self.low is not None and self.high is not None and self.low <= value <= self.high


def median_interval(values: list[float], confidence: float) -> Interval:
    """The median of ``values`` with the order-statistic interval at ``confidence`` (see above)."""
    s = sorted(values)
    k = order_statistic_rank(len(s), confidence)
    if k == 0:
        return Interval(statistics.median(s), None, None, confidence, len(s))
    return Interval(statistics.median(s), s[k - 1], s[len(s) - k], confidence, len(s))
