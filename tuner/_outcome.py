"""What one tuned workload yields, what a run yields, and the artifact tables/markdown built from them.

Plain data and plain functions: no Prefect here, so all of it is tested without a server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from xlstm_kernels.kernels.config import KernelConfig, Workload

if TYPE_CHECKING:
    from xlstm_kernels.profiles.profile import ProfileEntry

    from ._study import WorkloadResult


def _config_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, KernelConfig):
        return config.to_dict()
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    raise TypeError(f"a winner config must be a KernelConfig or a mapping, got {type(config).__name__}")


def config_short(config: Mapping[str, Any], mode: str = "prefill") -> str:
    """``KernelConfig.short(mode)`` of a config dict; the dict itself when it is not a valid KernelConfig."""
    try:
        return KernelConfig.from_dict(dict(config)).short(mode)
    except (ValueError, TypeError):
        return ", ".join(f"{k}={v}" for k, v in config.items())


@dataclass(frozen=True)
class WorkloadOutcome:
    """The confirmed winner of one workload.

    config: the winning KernelConfig as a dict (its t_inner the effective one); median_ms: its median
    time; speedup: default config's median over the winner's; equiv_err: the winner's error in the
    equivalence gate; rejected: (config dict, reason) of every candidate the tuner rejected;
    action: ``tuned`` (by this run) or ``kept`` (a published winner re-validated), with ``reason``.
    """

    workload: str
    config: dict[str, Any]
    median_ms: float
    speedup: float
    equiv_err: float
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    t_inner_requested: int | None = None
    tokens_per_s: float | None = None
    study_name: str | None = None
    action: Literal["tuned", "kept"] = "tuned"
    reason: str = ""
    # the speedup's interval (fresh paired rounds) and, on a busy machine, why it is not trustworthy
    speedup_low: float | None = None
    speedup_high: float | None = None
    speedup_confidence: float | None = None
    busy_reason: str | None = None
    # the profile entry this outcome was read from (tuned or kept): published as is, never rebuilt
    entry: ProfileEntry | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("median_ms", "speedup", "equiv_err"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")

    def config_short(self) -> str:
        """The winner in compact form."""
        return config_short(self.config, Workload.parse(self.workload).mode)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (without the profile entry it was read from)."""
        d = asdict(replace(self, entry=None))
        del d["entry"]
        d["rejected"] = [{"config": c, "reason": r} for c, r in self.rejected]
        return d

    @classmethod
    def from_entry(
        cls,
        entry: ProfileEntry,
        *,
        rejected: list[tuple[dict[str, Any], str]] | None = None,
        study_name: str | None = None,
        action: Literal["tuned", "kept"] = "tuned",
        reason: str = "",
    ) -> WorkloadOutcome:
        """The outcome of a profile entry (a fresh winner, or a kept published one)."""
        return cls(
            workload=entry.workload, config=dict(entry.config), median_ms=entry.median_s * 1e3,
            speedup=entry.speedup_vs_default, equiv_err=entry.equivalence_error, rejected=list(rejected or []),
            t_inner_requested=entry.t_inner_requested, tokens_per_s=entry.tokens_per_s, study_name=study_name,
            action=action, reason=reason, speedup_low=entry.speedup_low, speedup_high=entry.speedup_high,
            speedup_confidence=entry.speedup_confidence, busy_reason=entry.busy_reason, entry=entry,
        )

    @classmethod
    def from_result(cls, result: WorkloadResult) -> WorkloadOutcome:
        """The outcome of ``tuner.tune_workload``; ``tuner.NoWinner`` when no candidate validated."""
        from ._publish import profile_entry

        entry = profile_entry(result)
        rejected = [(r.config.to_dict(), f"{r.status}: {r.reason}") for r in result.rejected]
        return cls.from_entry(entry, rejected=rejected, study_name=result.study_name, action="tuned",
                              reason=f"{result.n_trials} trial(s) this run, {result.sampler} over "
                                     f"{result.n_candidates} candidate(s)")

    def to_profile_entry(self) -> ProfileEntry:
        """This winner as a profile entry: the one it was read from, else built from the tuner's fields."""
        from xlstm_kernels.profiles.profile import ProfileEntry

        if self.entry is not None:
            return self.entry
        if self.t_inner_requested is None or self.tokens_per_s is None:
            raise ValueError(f"{self.workload}: outcome lacks t_inner_requested/tokens_per_s (not from the tuner)")
        return ProfileEntry(
            workload=self.workload, config=self.config, t_inner_requested=self.t_inner_requested,
            t_inner_effective=int(self.config["t_inner"]), median_s=self.median_ms / 1e3,
            tokens_per_s=self.tokens_per_s, speedup_vs_default=self.speedup, equivalence_error=self.equiv_err,
            speedup_low=self.speedup_low, speedup_high=self.speedup_high,
            speedup_confidence=self.speedup_confidence, busy_reason=self.busy_reason,
        )

    @classmethod
    def coerce(cls, result: Any, workload: str) -> WorkloadOutcome:
        """Read a tuner result (this class, a ``WorkloadResult``, a mapping, or an object with these names)."""
        if isinstance(result, cls):
            return result
        if hasattr(result, "retimed") and hasattr(result, "study_name"):
            return cls.from_result(result)
        get = result.get if isinstance(result, Mapping) else lambda k, d=None: getattr(result, k, d)
        config = get("config", None)
        if config is None:
            config = get("winner", None)
        missing = [k for k in ("median_ms", "speedup", "equiv_err") if get(k, None) is None]
        if config is None or missing:
            raise TypeError(
                f"tuner result for {workload} lacks {missing + ([] if config is not None else ['config'])}: "
                f"{result!r}"
            )
        rejected = []
        for item in get("rejected", None) or []:
            if isinstance(item, Mapping):
                rejected.append((_config_dict(item["config"]), str(item["reason"])))
            else:
                cfg, reason = item
                rejected.append((_config_dict(cfg), str(reason)))
        return cls(
            workload=str(get("workload", None) or workload),
            config=_config_dict(config),
            median_ms=float(get("median_ms")),
            speedup=float(get("speedup")),
            equiv_err=float(get("equiv_err")),
            rejected=rejected,
        )


@dataclass(frozen=True)
class AutotuneResult:
    """What one tuning run (``tuner.autotune``) produced: winners, failed workloads (with why), profile, report.

    ``decisions``: the re-validation decisions (workload, action, reason) of a ``revalidate`` run;
    ``report_summary``: the report's markdown summary (for the flow's artifact; not in ``to_dict``).
    """

    machine_id: str
    outcomes: list[WorkloadOutcome]
    failed: dict[str, str]
    profile_path: str | None
    run_id: int | None = None
    profile_version: int | None = None
    profile_checksum: str | None = None
    report_path: str | None = None
    decisions: list[dict[str, str]] = field(default_factory=list)
    report_summary: str | None = None

    @property
    def ok(self) -> bool:
        """True when every workload produced a winner."""
        return not self.failed

    def status_message(self) -> str:
        """One line for the run's final state: what failed, how many were tuned and kept."""
        n_kept = sum(o.action == "kept" for o in self.outcomes)
        done = f"{len(self.outcomes) - n_kept} tuned" + (f", {n_kept} kept" if n_kept else "")
        if self.failed:
            return f"{len(self.failed)} failed ({', '.join(self.failed)}); {done}"
        return f"{len(self.outcomes)} workload(s): {done}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "machine_id": self.machine_id,
            "outcomes": [o.to_dict() for o in self.outcomes],
            "failed": dict(self.failed),
            "profile_path": self.profile_path,
            "run_id": self.run_id,
            "profile_version": self.profile_version,
            "profile_checksum": self.profile_checksum,
            "report_path": self.report_path,
            "decisions": list(self.decisions),
        }


def winners_table(outcomes: Sequence[WorkloadOutcome]) -> list[dict[str, Any]]:
    """Rows of the winners table artifact: workload, config, time, speedup, equivalence error."""
    return [
        {
            "workload": o.workload,
            "action": o.action,
            "config": o.config_short(),
            "median_ms": round(o.median_ms, 4),
            "speedup_vs_default": round(o.speedup, 3),
            "equiv_err": f"{o.equiv_err:.2e}",
        }
        for o in outcomes
    ]


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def run_summary_markdown(result: AutotuneResult) -> str:
    """The run summary artifact: winners, failed workloads, rejected candidates with their reasons."""
    lines = [f"# Autotune run on machine `{result.machine_id}`", ""]
    n_ok, n_failed = len(result.outcomes), len(result.failed)
    lines.append(f"{n_ok} workload(s) tuned, {n_failed} failed.")
    if result.run_id is not None:
        lines.append(f"Tuning run: {result.run_id}.")
    if result.profile_path and result.profile_version is not None:
        lines.append(f"Profile: `{result.profile_path}` (version {result.profile_version}, {result.profile_checksum}).")
    elif result.profile_path:
        lines.append(f"Profile: `{result.profile_path}` (unchanged).")
    else:
        lines.append("Profile: not published.")
    if result.report_path:
        lines.append(f"Report: `{result.report_path}`.")
    lines.append("")
    if result.decisions:
        lines += ["## Re-validation", "", "| workload | action | reason |", "|---|---|---|"]
        lines += [f"| {_md_cell(d['workload'])} | {d['action']} | {_md_cell(d['reason'])} |" for d in result.decisions]
        lines.append("")
    if result.outcomes:
        lines += ["## Winners", "", "| workload | action | config | median ms | speedup | equiv err |",
                  "|---|---|---|---|---|---|"]
        for row in winners_table(result.outcomes):
            lines.append(
                f"| {_md_cell(row['workload'])} | {row['action']} | {_md_cell(row['config'])} | {row['median_ms']} | "
                f"{row['speedup_vs_default']}x | {row['equiv_err']} |"
            )
        lines.append("")
    if result.failed:
        lines += ["## Failed workloads", ""]
        lines += [f"- `{w}`: {_md_cell(msg)}" for w, msg in result.failed.items()]
        lines.append("")
    lines += ["## Rejected candidates", ""]
    rejected = [(o.workload, c, r) for o in result.outcomes for c, r in o.rejected]
    if not rejected:
        lines.append("None.")
    else:
        lines += ["| workload | config | reason |", "|---|---|---|"]
        lines += [f"| {_md_cell(w)} | {_md_cell(config_short(c))} | {_md_cell(r)} |" for w, c, r in rejected]
    return "\n".join(lines) + "\n"
