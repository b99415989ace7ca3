"""The run report's content: what a tuning run found, read from its Optuna studies and the tuning DB,
and the text summary that heads the page and the Prefect artifacts.

Reads the run's Optuna studies (any Optuna storage) and, when given, the tuning DB (the run, its
machine, the paired re-timing's winners) and the published profile.

Optional fields, read when present (other parts of the tuner add them; nothing requires them):
trial attrs ``unstable`` / ``busy`` (a mark, bool or reason), ``ttft_ms`` / ``ttft_s`` and
``tokens_per_s`` (model workloads); speedup intervals as ``speedup_ci`` / ``speedup_interval``
(``[low, high]``) or ``speedup_low`` + ``speedup_high``, on a DB result row, a trial, or a profile
entry; ``busy`` / ``unstable`` on a result row or profile entry.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from storage import TuningDB
    from .settings import TunerSettings

REASON_CHARS = 240  # hover text and summary lines cut reasons (compile errors run to pages) to this


class ReportError(ValueError):
    """The study cannot be reported (unknown, or without a single finished trial)."""


def workload_mode(workload: str) -> str:
    """``decode`` or ``prefill``: a kernel workload's mode (``Workload.parse``); a model workload prefills,
    and so does any other study (``report --study`` reports any study in the storage, named as it likes)."""
    from xlstm_kernels.kernels.config import Workload
    from xlstm_kernels.models.workload import is_model_workload

    if is_model_workload(workload):
        return "prefill"
    try:
        return Workload.parse(workload).mode
    except ValueError:  # not a tuner study: its trials are shown as the tuner shows prefill ones
        return "prefill"


@dataclass(frozen=True)
class TrialView:
    """One evaluated candidate as the report shows it (duplicates and out-of-space draws left out)."""

    number: int
    status: str  # ok | rejected | failed
    config: dict[str, Any]
    label: str
    median_ms: float | None
    compile_s: float | None
    reason: str
    equivalence_error: float | None
    t_inner_effective: int | None
    is_default: bool
    mark: str | None  # "unstable"/"busy" mark left by the timing, if any
    user_attrs: dict[str, Any]


@dataclass
class WorkloadView:
    """One workload of the run: its study's trials and the winner the tuner confirmed."""

    workload: str
    study_name: str
    trials: list[TrialView]
    n_duplicates: int = 0
    winner: dict[str, Any] | None = None  # label, median_ms, speedup, default_ms, interval, mark, source

    @property
    def mode(self) -> str:
        """``decode``, ``prefill`` or ``model``."""
        if any(ttft_ms(t.user_attrs) is not None for t in self.trials) or self.workload.startswith("model"):
            return "model"
        return workload_mode(self.workload)


@dataclass
class RunReport:
    """Everything the page and the artifact summary say about one run."""

    title: str
    workloads: list[WorkloadView]
    run: dict[str, Any] | None = None
    machine: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    failed: dict[str, str] = field(default_factory=dict)
    generated: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


@dataclass(frozen=True)
class ReportFile:
    """A written report: where, how big, and the summary it opens with (Markdown)."""

    path: Path
    bytes: int
    summary: str


# -- reading ------------------------------------------------------------------------------------


def report_path(home: Path, name: str) -> Path:
    """Where the report called ``name`` (a run, or a study name) goes: HOME/reports/<name>.html."""
    from xlstm_kernels.paths import join_under, safe_component

    return join_under(Path(home).expanduser() / "reports", safe_component(name) + ".html")


def load_report_study(study_name: str, storage: str | optuna.storages.BaseStorage) -> optuna.Study:
    """Load ``study_name`` from ``storage``; ``ReportError`` lists the studies there when it is unknown."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage=storage)]
        raise ReportError(f"no study named {study_name!r} in {_storage_text(storage)}; "
                          f"studies there: {names}") from None


class NoStorage(ReportError):
    """The tuning storage named does not exist yet (no run has written studies there)."""


def existing_storage_url(settings: TunerSettings, storage: str | None = None) -> str:
    """``storage``, else the tuner's storage rule for the settings' DB; ``NoStorage`` (nothing created) when
    it is an SQLite file that does not exist."""
    from ._study import optuna_storage_url

    url = storage or optuna_storage_url(settings.resolved_db_path(), settings)
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not path.is_file():
            raise NoStorage(f"no Optuna storage at {path}: no tuning run has written studies there yet "
                            "(run `xlstm-autotune tune` first, or pass --storage)")
    return url


def _storage_text(storage: Any) -> str:
    url = getattr(getattr(storage, "engine", None), "url", None)
    return url.render_as_string(hide_password=True) if url is not None else str(storage)


def _mark(attrs: Mapping[str, Any]) -> str | None:
    for key in ("busy", "unstable", "machine_busy"):
        value = attrs.get(key)
        if value:
            return key if value is True else f"{key}: {value}"
    return None


def _interval(attrs: Mapping[str, Any] | None) -> tuple[float, float] | None:
    if not attrs:
        return None
    for key in ("speedup_ci", "speedup_interval"):
        value = attrs.get(key)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            return float(value[0]), float(value[1])
    for lo, hi in (("speedup_low", "speedup_high"), ("speedup_lo", "speedup_hi")):
        if isinstance(attrs.get(lo), (int, float)) and isinstance(attrs.get(hi), (int, float)):
            return float(attrs[lo]), float(attrs[hi])
    return None


def ttft_ms(attrs: Mapping[str, Any]) -> float | None:
    if isinstance(attrs.get("ttft_ms"), (int, float)):
        return float(attrs["ttft_ms"])
    if isinstance(attrs.get("ttft_s"), (int, float)):
        return float(attrs["ttft_s"]) * 1e3
    return None


def _label(config: Mapping[str, Any], mode: str) -> str:
    from xlstm_kernels.kernels.config import KernelConfig

    try:
        return KernelConfig.from_dict(dict(config)).short("decode" if mode == "decode" else "prefill")
    except (ValueError, TypeError):
        return ", ".join(f"{k}={v}" for k, v in sorted(config.items())) or "(no parameters)"


def trial_views(study: optuna.Study, mode: str = "prefill") -> tuple[list[TrialView], int]:
    """The study's evaluated candidates (and how many duplicate draws were left out)."""
    views, duplicates = [], 0
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if a.get("duplicate_of") is not None:
            duplicates += 1
            continue
        if a.get("outside_space") or t.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL):
            continue
        status = a.get("status") or ("ok" if t.state == optuna.trial.TrialState.COMPLETE else "failed")
        if t.state == optuna.trial.TrialState.FAIL and status == "ok":
            status = "failed"
        config = dict(a.get("config") or t.params)
        median = float(t.value) if status == "ok" and t.value is not None and math.isfinite(t.value) else None
        if status == "ok" and median is None:
            status = "rejected"
        reason = str(a.get("reason") or ("" if status == "ok" else f"{status} (no reason recorded)"))
        views.append(TrialView(
            number=t.number, status=status, config=config, label=str(a.get("label") or _label(config, mode)),
            median_ms=median, compile_s=a.get("compile_s"), reason=reason,
            equivalence_error=a.get("equivalence_error"), t_inner_effective=a.get("t_inner_effective"),
            is_default=bool(a.get("is_default")), mark=_mark(a), user_attrs=dict(a)))
    return views, duplicates


def workload_of(study: optuna.Study) -> str:
    """The workload a study tunes: its ``workload`` attr, else the second part of the tuner's study name."""
    if study.user_attrs.get("workload"):
        return str(study.user_attrs["workload"])
    parts = study.study_name.split("/")
    return parts[1] if len(parts) >= 2 else study.study_name


def _study_winner(views: Sequence[TrialView]) -> dict[str, Any] | None:
    ok = [t for t in views if t.status == "ok" and t.mark is None] or [t for t in views if t.status == "ok"]
    if not ok:
        return None
    best = min(ok, key=lambda t: t.median_ms)
    default = next((t for t in views if t.is_default and t.status == "ok"), None)
    return {"label": best.label, "config": best.config, "median_ms": best.median_ms,
            "default_ms": default.median_ms if default else None,
            "speedup": default.median_ms / best.median_ms if default else None,
            "interval": _interval(best.user_attrs), "mark": best.mark, "source": "trial medians (not re-timed)"}


def workload_view(study: optuna.Study, result: Mapping[str, Any] | None = None) -> WorkloadView:
    """A workload section from its study and, when the tuner stored one, its re-timed winner row."""
    workload = workload_of(study)
    mode = workload_mode(workload)
    views, dups = trial_views(study, mode)
    view = WorkloadView(workload, study.study_name, views, dups)
    if result is not None:
        try:
            config = json.loads(result["config_json"])
        except (KeyError, TypeError, ValueError):
            config = {}
        label, t_eff = _label(config, mode), result.get("t_inner_effective")
        if mode != "decode" and t_eff is not None and config.get("t_inner") not in (None, t_eff):
            label += f" (compiled at T{t_eff})"
        view.winner = {"label": label, "config": config, "median_ms": result.get("median_ms"),
                       "default_ms": result.get("default_median_ms"), "speedup": result.get("speedup"),
                       "interval": _interval(result), "mark": _mark(result), "source": "paired re-timing"}
    else:
        view.winner = _study_winner(views)
    return view


def _results(db: TuningDB, run_id: int) -> dict[str, dict[str, Any]]:
    rows = db.db.query("SELECT r.*, w.spec AS workload FROM results r JOIN workloads w ON w.id = r.workload_id "
                       "WHERE r.run_id = ?", [run_id])
    return {r["workload"]: r for r in rows}


def _profile_info(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    import xlstm_kernels as xk

    try:
        profile = xk.load_profile(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable profile is reported, not raised
        return {"path": str(path), "error": f"{type(exc).__name__}: {exc}"}
    pub = profile.publication
    entries = []
    for e in profile.entries:
        d = e.model_dump()
        entries.append({"workload": e.workload, "label": _label(e.config, workload_mode(e.workload)),
                        "median_ms": e.median_s * 1e3, "speedup": e.speedup_vs_default,
                        "interval": _interval(d), "mark": _mark(d)})
    return {"path": str(path), "version": getattr(pub, "version", None), "entries": entries}


def collect_run_report(
    db: TuningDB,
    run_id: int,
    study_names: Sequence[str],
    storage: str | optuna.storages.BaseStorage,
    *,
    failed: Mapping[str, str] | None = None,
    profile_path: Path | None = None,
) -> RunReport:
    """Gather run ``run_id``: its studies (from ``storage``), run and machine rows, winners, profile."""
    results = _results(db, run_id)
    run = db.run(run_id)
    machine = next((m for m in db.machines() if m["id"] == run["machine_id"]), None)
    views = []
    for name in study_names:
        study = load_report_study(name, storage)
        views.append(workload_view(study, results.get(workload_of(study))))
    return RunReport(f"xlstm-autotune run {run_id}", views, run=run, machine=machine,
                     profile=_profile_info(profile_path), failed=dict(failed or {}))


def study_report(study: optuna.Study) -> RunReport:
    """A report of one study alone (``xlstm-autotune report --study``): winner from its trial medians."""
    view = workload_view(study)
    if not view.trials:
        raise ReportError(f"study {study.study_name!r} has no finished trial to report")
    return RunReport(f"xlstm-autotune report: {study.study_name}", [view])


# -- the summary ----------------------------------------------------------------------------------


def _short_reason(reason: str) -> str:
    first = reason.strip().splitlines()[0] if reason.strip() else "no reason recorded"
    # "error 2e-2 > 1e-4" and "error 3e-2 > 1e-4" are one reason
    first = re.sub(r"(?<![\w.])\d+(\.\d+)?(e[-+]?\d+)?(?![\w.])", "#", first)
    return first[:120]


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "?"
    return f"{ms:.3g} ms" if ms >= 0.01 else f"{ms * 1e3:.3g} us"


def _speedup_text(w: Mapping[str, Any]) -> str:
    if w.get("speedup") is None:
        return "no default timing to compare with"
    text = f"{w['speedup']:.2f}x the default ({fmt_ms(w.get('default_ms'))})"
    if w.get("interval"):
        lo, hi = w["interval"]
        text += f", interval {lo:.2f}-{hi:.2f}x"
    return text + f", from {w['source']}"


def _busy_line(report: RunReport) -> str:
    marks = [(w.workload, t) for w in report.workloads for t in w.trials if t.mark]
    win_marks = [w.workload for w in report.workloads if w.winner and w.winner.get("mark")]
    spreads = [t.user_attrs["spread_ms"] / t.median_ms for w in report.workloads for t in w.trials
               if t.median_ms and isinstance(t.user_attrs.get("spread_ms"), (int, float))]
    parts = []
    if marks or win_marks:
        parts.append(f"**machine busy**: {len(marks)} candidate(s) marked unstable/busy by the timing"
                     + (f"; winner(s) of {', '.join(win_marks)} marked - not trustworthy" if win_marks else ""))
    if spreads:
        spreads.sort()
        med, worst = spreads[len(spreads) // 2], spreads[-1]
        verdict = "quiet" if worst < 0.1 else ("some noise" if med < 0.1 else "noisy (likely busy)")
        parts.append(f"timing spread (spread/median per candidate): median {med:.1%}, worst {worst:.1%} - {verdict}")
    return "Machine: " + ("; ".join(parts) if parts else "no busy marks or timing spreads recorded")


def summary_lines(report: RunReport) -> list[str]:
    """The summary as Markdown bullet lines: what was tuned, the winners, the rejections, profile, machine."""
    lines = []
    n_trials = sum(len(w.trials) for w in report.workloads)
    what = f"Tuned {len(report.workloads)} workload(s), {n_trials} candidate(s) evaluated"
    if report.machine:
        m = report.machine
        what += f" on {m.get('device_name')} ({m.get('device_type')}, machine `{m['id']}`)"
    if report.run:
        what += (f"; run {report.run['id']} ({'quick' if report.run.get('quick') else 'full'}),"
                 f" torch {report.run.get('torch')}, started {report.run.get('started_at')}")
    lines.append(what + ".")
    for w in report.workloads:
        n = Counter(t.status for t in w.trials)
        counts = f"{n['ok']} ok, {n['rejected']} rejected, {n['failed']} failed"
        if w.winner is None:
            lines.append(f"`{w.workload}`: **no winner** - nothing validated ({counts}).")
            continue
        mark = f" **[{w.winner['mark']}]**" if w.winner.get("mark") else ""
        lines.append(f"`{w.workload}`: winner **`{w.winner['label']}`** at {fmt_ms(w.winner['median_ms'])},"
                     f" {_speedup_text(w.winner)}{mark} ({counts}).")
    reasons = Counter(_short_reason(t.reason) for w in report.workloads for t in w.trials if t.status != "ok")
    if reasons:
        top = "; ".join(f"{r} (x{c})" for r, c in reasons.most_common(4))
        lines.append(f"Rejected or failed: {sum(reasons.values())} - {top}.")
    else:
        lines.append("Rejected or failed: none.")
    for workload, message in report.failed.items():
        lines.append(f"Failed `{workload}`: {message[:REASON_CHARS]}")
    if report.profile is None:
        lines.append("Profile: not published by this run.")
    elif "error" in report.profile:
        lines.append(f"Profile `{report.profile['path']}`: unreadable ({report.profile['error'][:REASON_CHARS]}).")
    else:
        entries = "; ".join(f"`{e['workload']}` -> `{e['label']}` {fmt_ms(e['median_ms'])} ({e['speedup']:.2f}x)"
                            + (f" [{e['mark']}]" if e.get("mark") else "") for e in report.profile["entries"])
        p = report.profile
        lines.append(f"Profile v{p['version']} `{p['path']}` now says: {entries or 'no entries'}.")
    lines.append(_busy_line(report) + ".")
    return lines


def summary_markdown(report: RunReport, path: Path | None = None) -> str:
    """The summary as a Markdown block (the Prefect artifact carries it), with a link to the report file."""
    text = f"## {report.title}\n\n" + "\n".join(f"- {line}" for line in summary_lines(report)) + "\n"
    if path is not None:
        text += f"\nFull report (plots): [{path.name}]({Path(path).resolve().as_uri()}) - `{path}`\n"
    return text
