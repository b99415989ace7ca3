"""What one tuned workload yields, what a run yields, and the artifact tables/markdown built from them.

Plain data and plain functions: no Prefect here, so all of it is tested without a server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from xlstm_kernels.config import KernelConfig


def _config_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, KernelConfig):
        return config.to_dict()
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    raise TypeError(f"a winner config must be a KernelConfig or a mapping, got {type(config).__name__}")


def config_short(config: Mapping[str, Any]) -> str:
    """``KernelConfig.short()`` of a config dict; the dict itself when it is not a valid KernelConfig."""
    try:
        return KernelConfig.from_dict(dict(config)).short()
    except (ValueError, TypeError):
        return ", ".join(f"{k}={v}" for k, v in config.items())


@dataclass(frozen=True)
class WorkloadOutcome:
    """The confirmed winner of one workload.

    config: the winning KernelConfig as a dict; median_ms: its median time; speedup: default config's
    median over the winner's; equiv_err: the winner's error in the equivalence gate; rejected:
    (config dict, reason) of every candidate the tuner rejected.
    """

    workload: str
    config: dict[str, Any]
    median_ms: float
    speedup: float
    equiv_err: float
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("median_ms", "speedup", "equiv_err"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")

    def config_short(self) -> str:
        """The winner in compact form."""
        return config_short(self.config)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        d = asdict(self)
        d["rejected"] = [{"config": c, "reason": r} for c, r in self.rejected]
        return d

    @classmethod
    def coerce(cls, result: Any, workload: str) -> WorkloadOutcome:
        """Read a tuner result (this class, a mapping, or an object with these attribute names)."""
        if isinstance(result, cls):
            return result
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
    """What one autotune flow run produced: winners, failed workloads (with why), the profile path."""

    machine_id: str
    outcomes: list[WorkloadOutcome]
    failed: dict[str, str]
    profile_path: str | None

    @property
    def ok(self) -> bool:
        """True when every workload produced a winner."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "machine_id": self.machine_id,
            "outcomes": [o.to_dict() for o in self.outcomes],
            "failed": dict(self.failed),
            "profile_path": self.profile_path,
        }


def winners_table(outcomes: Sequence[WorkloadOutcome]) -> list[dict[str, Any]]:
    """Rows of the winners table artifact: workload, config, time, speedup, equivalence error."""
    return [
        {
            "workload": o.workload,
            "config": o.config_short(),
            "median_ms": round(o.median_ms, 4),
            "speedup_vs_default": round(o.speedup, 3),
            "equiv_err": f"{o.equiv_err:.2e}",
        }
        for o in outcomes
    ]


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_markdown(result: AutotuneResult) -> str:
    """The run summary artifact: winners, failed workloads, rejected candidates with their reasons."""
    lines = [f"# Autotune run on machine `{result.machine_id}`", ""]
    n_ok, n_failed = len(result.outcomes), len(result.failed)
    lines.append(f"{n_ok} workload(s) tuned, {n_failed} failed.")
    lines.append(f"Profile: `{result.profile_path}`" if result.profile_path else "Profile: not published.")
    lines.append("")
    if result.outcomes:
        lines += ["## Winners", "", "| workload | config | median ms | speedup | equiv err |", "|---|---|---|---|---|"]
        for row in winners_table(result.outcomes):
            lines.append(
                f"| {_md_cell(row['workload'])} | {_md_cell(row['config'])} | {row['median_ms']} | "
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
