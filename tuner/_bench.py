"""Side-by-side benchmark of one config against the default config on one workload.

``bench(workload)`` times the config this machine's profile would pick (``xk.explain_config``'s choice)
or a given one against ``DEFAULT_CONFIG``, with the tuner's own stages: each is compiled, validated
against the float64 reference (never timed when invalid), then both are timed in interleaved rounds
of synchronised samples (order alternating, warm-up outside the rounds) so drift hits both alike.
The speedup is the median of the per-round ratios with its order-statistic interval; each side's
samples are checked for instability and the load over the rounds is reported (``tuner._timing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import xlstm_kernels as xk
from xlstm_kernels.kernels.config import DEFAULT_CONFIG, KernelConfig, Workload
from xlstm_kernels.device import default_device
from xlstm_kernels.kernels.validation import check_workload_memory

from ._errors import CandidateFailed
from ._evaluate import Evaluation, Evaluator, calls_per_sample
from ._timing import Interval, LoadMeter, MachineLoad, median_interval, paired_ratios, summarize
from ._space import parse_workload
from .settings import TunerSettings, resolve_tuner_settings


@dataclass(frozen=True)
class BenchSide:
    """One side of a benchmark: config, median/spread of the paired timing, equivalence error."""

    config: KernelConfig
    median_ms: float
    spread_ms: float
    tokens_per_s: float
    equivalence_error: float
    compile_s: float | None
    min_ms: float | None = None
    instability: str | None = None  # why its samples are unstable (None: stable)

    def to_dict(self, mode: str = "prefill") -> dict[str, Any]:
        """Plain-JSON form (``mode``: the workload's, for the short name)."""
        return {"config": self.config.to_dict(), "config_short": self.config.short(mode), "median_ms": self.median_ms,
                "spread_ms": self.spread_ms, "tokens_per_s": self.tokens_per_s,
                "equivalence_error": self.equivalence_error, "compile_s": self.compile_s,
                "min_ms": self.min_ms, "instability": self.instability}


@dataclass(frozen=True)
class BenchResult:
    """The chosen config against the default, side by side; ``speedup`` = default median / chosen median."""

    workload: Workload
    device: str
    source: str  # "given" or explain_config's source: exact | nearest | default | no-profile | ...
    reason: str
    chosen: BenchSide
    default: BenchSide
    rounds: int
    interval: Interval | None = None  # median per-round default/chosen ratio and its interval
    load: MachineLoad | None = None  # load average / CPU steal over the rounds
    busy_reason: str | None = None  # set: the numbers are not trustworthy, and why
    ratios: tuple[float, ...] = ()  # default/chosen per paired round

    @property
    def speedup(self) -> float:
        """Median per-round ratio of the default's time over the chosen config's (medians' ratio without rounds)."""
        if self.interval is not None:
            return self.interval.median
        return self.default.median_ms / self.chosen.median_ms

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        iv = self.interval
        return {"workload": str(self.workload), "device": self.device, "source": self.source, "reason": self.reason,
                "chosen": self.chosen.to_dict(self.workload.mode), "default": self.default.to_dict(self.workload.mode),
                "speedup": self.speedup,
                "rounds": self.rounds,
                "speedup_low": iv.low if iv else None, "speedup_high": iv.high if iv else None,
                "speedup_confidence": iv.confidence if iv else None,
                "load_avg": self.load.load_avg if self.load else None,
                "steal_fraction": self.load.steal_fraction if self.load else None,
                "busy_reason": self.busy_reason, "ratios": list(self.ratios)}


def profile_choice(workload: Workload, device: torch.device) -> tuple[KernelConfig, str, str]:
    """(config, source, reason) the runtime would use for ``workload`` on ``device`` (profile or default)."""
    one = torch.empty((), dtype=workload.torch_dtype, device=device)  # expanded views: only shapes are read
    if workload.mode == "decode":
        q = one.expand(workload.B, workload.NH, workload.DHQK)
        v = one.expand(workload.B, workload.NH, workload.DHV)
    else:
        q = one.expand(workload.B, workload.NH, workload.S, workload.DHQK)
        v = one.expand(workload.B, workload.NH, workload.S, workload.DHV)
    choice = xk.explain_config(q, None, v, mode=workload.mode)
    return choice.config, choice.source, choice.reason


def _validated(evaluator: Evaluator, config: KernelConfig, label: str) -> Evaluation:
    try:
        ev = evaluator.evaluate(config)
    except Exception as exc:  # noqa: BLE001 - e.g. a config the kernels refuse before compiling
        raise CandidateFailed(f"the {label} config {config.short()} failed: {type(exc).__name__}: {exc}") from exc
    if ev.status != "ok":
        raise CandidateFailed(f"the {label} config {ev.config.short()} {ev.status}: {ev.reason}")
    return ev


def bench(
    workload: Workload | str,
    config: KernelConfig | None = None,
    *,
    device: torch.device | str | None = None,
    rounds: int | None = None,
    settings: TunerSettings | None = None,
) -> BenchResult:
    """Time ``config`` (default: what this machine's profile picks) against the default config, side by side.

    Raises ``UnknownWorkload`` for a bad workload and ``CandidateFailed`` when either config fails to
    compile/run or fails the equivalence check (it is then not timed).
    """
    settings = resolve_tuner_settings(settings)
    wl = parse_workload(workload)
    dev = torch.device(device) if device is not None else default_device()
    if config is None:
        config, source, reason = profile_choice(wl, dev)
    else:
        source, reason = "given", "config given on the command line"
    if wl.mode != "decode":
        config.bands(wl.NH)  # the one heads_per_band rule (ValueError), as probe and tune apply it
    check_workload_memory(wl, dev, settings.validate_max_s, settings, config)  # before any allocation
    ev = Evaluator(wl, dev, settings)
    chosen = _validated(ev, config, "chosen")
    default = _validated(ev, DEFAULT_CONFIG, "default")
    inputs, run = ev.timing_inputs(), ev.runner
    n = rounds or max(settings.tune_retime_rounds, settings.tune_repeats, settings.tune_speedup_rounds)
    with xk.tuning(), LoadMeter() as meter:
        ratios, d_s, c_s = paired_ratios(lambda: run(wl, inputs, default.effective),
                                         lambda: run(wl, inputs, chosen.effective), dev, rounds=n,
                                         calls=calls_per_sample(wl, settings), warmup=settings.tune_warmup)
    interval = median_interval(ratios, settings.tune_speedup_confidence)
    out = []
    for e, s in ((chosen, c_s), (default, d_s)):
        tm = summarize(s, settings)
        assert e.equivalence_error is not None
        out.append(BenchSide(e.effective, tm.median_ms, tm.spread_ms, wl.tokens() / (tm.median_ms / 1e3),
                             e.equivalence_error, e.compile_s, tm.min_ms, tm.instability))
    why = [f"{label} samples unstable: {side.instability}" for label, side in zip(("chosen", "default"), out)
           if side.instability]
    if interval.low is not None and interval.relative_width > settings.tune_speedup_max_width:
        why.append(f"speedup interval wider than {settings.tune_speedup_max_width:.0%} of {interval.median:.3g}")
    if why and meter.load.busy_reason(settings):
        why.append(meter.load.busy_reason(settings) or "")
    busy = ("machine busy: results not trustworthy (" + "; ".join(why) + ")") if why else None
    return BenchResult(wl, str(dev), source, reason, out[0], out[1], n, interval, meter.load, busy, tuple(ratios))
