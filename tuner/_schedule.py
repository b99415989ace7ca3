"""The re-validation rule of scheduled runs: keep a published winner, re-tune it, or tune a new workload.

A scheduled run on an unchanged machine does not re-tune from scratch. For each workload, in order:

1. not in the published profile                                  -> ``tune``   (new workload)
2. the profile's software versions differ from the current ones  -> ``retune`` (timings don't carry over)
3. the winner was not re-measured (it failed to compile or run)  -> ``retune``
4. the winner failed the equivalence gate                        -> ``retune``
5. it has slowed by more than ``slowdown`` (setting ``retune_slowdown``, default 15%) -> ``retune``:
   where the profile has a speedup over the default and the re-measurement timed the winner against
   the default in fresh paired rounds, "slowed" is the published speedup over the fresh one (median
   of per-round ratios: a busy machine slows both sides of a round alike); a fresh interval wider
   than the trust limit (``busy_reason``) is no evidence either way -> ``keep``, said so - unless even
   its upper end is slower than the published speedup by more than ``slowdown`` (slowed beyond doubt,
   ``retune``). Without a
   paired speedup, the winner's fresh median against the published median decides.
6. otherwise                                                     -> ``keep``   (re-validated)

Only workloads in step 3-6 need a re-measurement (``needs_remeasure``): a software change re-tunes
without timing the old winner first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Action = Literal["keep", "retune", "tune"]


@dataclass(frozen=True)
class PublishedEntry:
    """A workload's entry in the published profile."""

    workload: str
    config: dict[str, Any]
    median_ms: float
    software: dict[str, Any]
    speedup: float | None = None  # published speedup over the default (fresh paired rounds)


@dataclass(frozen=True)
class Remeasurement:
    """A fresh quick re-time and equivalence check of a published winner.

    ``checked``: the winner compiled and ran, so ``equiv_ok`` is a verdict (a winner that fails the
    check is never timed: ``median_ms`` None); unchecked with no median means it could not run.
    """

    workload: str
    median_ms: float | None
    equiv_ok: bool
    error: str | None = None
    checked: bool = False
    speedup: float | None = None  # median per-round default/winner ratio of fresh paired rounds
    speedup_low: float | None = None
    speedup_high: float | None = None
    busy_reason: str | None = None  # set: the paired rounds were too uncertain to judge


@dataclass(frozen=True)
class Decision:
    """What a scheduled run does with one workload, and why."""

    workload: str
    action: Action
    reason: str


def software_diff(published: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Software components whose versions differ: name -> (published, current)."""
    keys = sorted(set(published) | set(current))
    return {k: (published.get(k), current.get(k)) for k in keys if published.get(k) != current.get(k)}


def needs_remeasure(
    workloads: Iterable[str], published: Mapping[str, PublishedEntry], software: Mapping[str, Any]
) -> list[str]:
    """Workloads whose published winner should be re-timed and re-checked before deciding."""
    return [w for w in workloads if w in published and not software_diff(published[w].software, software)]


def decide(
    workloads: Iterable[str],
    published: Mapping[str, PublishedEntry],
    fresh: Mapping[str, Remeasurement],
    software: Mapping[str, Any],
    slowdown: float = 0.15,
) -> list[Decision]:
    """Apply the re-validation rule (module docstring) to each workload, in the given order."""
    if slowdown <= 0:
        raise ValueError(f"slowdown must be > 0, got {slowdown}")
    decisions = []
    for w in workloads:
        entry = published.get(w)
        if entry is None:
            decisions.append(Decision(w, "tune", "new workload: not in the published profile"))
            continue
        diff = software_diff(entry.software, software)
        if diff:
            changed = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items())
            decisions.append(Decision(w, "retune", f"software changed: {changed}"))
            continue
        m = fresh.get(w)
        if m is not None and m.checked and not m.equiv_ok:
            decisions.append(Decision(w, "retune", f"winner failed the equivalence check{': ' + m.error if m.error else ''}"))
            continue
        if m is None or m.median_ms is None:
            why = m.error if m is not None and m.error else "not re-measured"
            decisions.append(Decision(w, "retune", f"winner could not be re-timed: {why}"))
            continue
        if not m.equiv_ok:
            decisions.append(Decision(w, "retune", f"winner failed the equivalence check{': ' + m.error if m.error else ''}"))
            continue
        if m.speedup is not None and entry.speedup is not None:
            beyond_doubt = m.speedup_high is not None and entry.speedup / m.speedup_high - 1.0 > slowdown
            if m.busy_reason is not None and not beyond_doubt:
                decisions.append(Decision(w, "keep", f"re-validated (equivalence); speed not re-judged: {m.busy_reason}; "
                                          f"the published winner stands"))
                continue
            change = entry.speedup / m.speedup - 1.0
            span = f" [{m.speedup_low:.2f}, {m.speedup_high:.2f}]" if m.speedup_low and m.speedup_high else ""
            if change > slowdown:
                decisions.append(Decision(w, "retune", f"winner slowed {change:.0%} against the default "
                                          f"({entry.speedup:.2f}x published -> {m.speedup:.2f}x{span} in fresh "
                                          f"paired rounds), beyond {slowdown:.0%}"))
            else:
                decisions.append(Decision(w, "keep", f"re-validated: {m.speedup:.2f}x{span} over the default in "
                                          f"fresh paired rounds vs {entry.speedup:.2f}x published ({-change:+.0%})"))
            continue
        change = m.median_ms / entry.median_ms - 1.0
        if change > slowdown:
            decisions.append(
                Decision(
                    w,
                    "retune",
                    f"winner slowed {change:.0%} ({entry.median_ms:.3g} -> {m.median_ms:.3g} ms), "
                    f"beyond {slowdown:.0%}",
                )
            )
            continue
        decisions.append(Decision(w, "keep", f"re-validated: {m.median_ms:.3g} ms vs {entry.median_ms:.3g} ms published ({change:+.0%})"))
    return decisions
