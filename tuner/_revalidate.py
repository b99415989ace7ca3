"""Re-validation of a published profile (scheduled runs): re-check and re-time each published winner,
then apply the rule of ``tuner._schedule.decide``. Prefect-free: the flow's task calls ``revalidate``.

A winner is re-checked with the tuner's own ``Evaluator`` (quick mode): compiled, validated against the
float64 reference on fresh inputs, and - only when valid - timed. Then it is timed against the default
config in fresh paired rounds (``tuner.bench``): the rule compares that speedup (median of per-round
ratios, with its interval) with the published one; the winner's median alone where there is no pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from xlstm_kernels.kernels.config import DEFAULT_CONFIG, Workload
from xlstm_kernels.profiles.fingerprint import Fingerprint
from xlstm_kernels.profiles.profile import Profile, ProfileEntry, ProfileError, load_profile
from tuner.settings import TunerSettings

from ._schedule import Decision, PublishedEntry, Remeasurement, decide, needs_remeasure


@dataclass
class Revalidation:
    """Per-workload decisions, the published entries to keep, and the fresh re-measurements."""

    decisions: list[Decision]
    kept: dict[str, ProfileEntry] = field(default_factory=dict)
    fresh: dict[str, Remeasurement] = field(default_factory=dict)
    profile_path: Path | None = None
    note: str = ""

    def to_tune(self) -> list[str]:
        """Workloads to tune or re-tune, in order."""
        return [d.workload for d in self.decisions if d.action != "keep"]

    def decision_rows(self) -> list[dict[str, Any]]:
        """Plain-JSON rows (workload, action, reason)."""
        return [{"workload": d.workload, "action": d.action, "reason": d.reason} for d in self.decisions]


def published_entries(profile: Profile) -> dict[str, PublishedEntry]:
    """The profile's entries in the form the re-validation rule reads (median in ms, software versions)."""
    software = {"torch": profile.torch, "triton": profile.triton, "python": profile.fingerprint.get("python")}
    return {e.workload: PublishedEntry(e.workload, dict(e.config), e.median_s * 1e3, software,
                                       e.speedup_vs_default if e.speedup_low is not None else None)
            for e in profile.entries}


def remeasure(entry: ProfileEntry, device: torch.device | str, settings: TunerSettings) -> Remeasurement:
    """Quick re-check of a published winner with the tuner's Evaluator: compile, validate, time."""
    from tuner import Evaluator

    try:
        ev = Evaluator(entry.parsed_workload, torch.device(device), settings, quick=True).evaluate(entry.kernel_config)
    except Exception as exc:  # noqa: BLE001 - a winner that cannot even be set up is one that cannot be re-timed
        return Remeasurement(entry.workload, None, False, f"{type(exc).__name__}: {exc}")
    if ev.status == "failed":
        return Remeasurement(entry.workload, None, False, ev.reason)
    if ev.status == "rejected":
        return Remeasurement(entry.workload, None, False, ev.reason, checked=True)
    assert ev.timing is not None
    fresh = Remeasurement(entry.workload, ev.timing.median_ms, True, None, checked=True)
    if entry.speedup_low is None or entry.kernel_config == DEFAULT_CONFIG:
        return fresh  # an older profile without a paired speedup, or the default won: the median decides
    from tuner import CandidateFailed, bench

    try:
        paired = bench(entry.parsed_workload, entry.kernel_config, device=device, settings=settings)
    except CandidateFailed:
        return fresh  # the default does not run here: no pair to compare
    iv = paired.interval
    return replace(fresh, speedup=paired.speedup, speedup_low=iv.low if iv else None,
                   speedup_high=iv.high if iv else None, busy_reason=paired.busy_reason)


def revalidate(
    workloads: Sequence[str],
    *,
    fingerprint: Fingerprint,
    device: torch.device | str,
    profile_path: Path,
    settings: TunerSettings,
) -> Revalidation:
    """Decide keep / re-tune / tune per workload against the profile published at ``profile_path``.

    No profile there (or a damaged one, or one of another machine): every workload is tuned.
    """
    names = [str(Workload.parse(w)) for w in workloads]
    profile = None
    note = ""
    try:
        profile = load_profile(profile_path)
    except ProfileError as exc:
        note = f"no usable published profile ({exc})"
    if profile is not None and profile.machine_id != fingerprint.machine_id:
        note, profile = f"the profile at {profile_path} is for machine {profile.machine_id}", None
    if profile is None:
        return Revalidation([Decision(w, "tune", f"new workload: {note}") for w in names], profile_path=profile_path,
                            note=note)
    published = published_entries(profile)
    by_name = {e.workload: e for e in profile.entries}
    software = fingerprint.software()
    fresh = {}
    for w in needs_remeasure(names, published, software):
        fresh[w] = remeasure(by_name[w], device, settings)
    decisions = decide(names, published, fresh, software, settings.retune_slowdown)
    kept = {d.workload: by_name[d.workload] for d in decisions if d.action == "keep"}
    return Revalidation(decisions, kept, fresh, profile_path, note)
