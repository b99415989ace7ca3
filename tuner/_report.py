"""The run report: one offline HTML page that says what a tuning run found, with plots built for it.

Reads the run's Optuna studies (any Optuna storage) and, when given, the tuning DB (the run, its
machine, the paired re-timing's winners) and the published profile. Builds, per workload, a heatmap
of median time over chunk_size x T_inner (a panel per family and heads_per_band, rejected and failed
cells marked with their reason), then for the run a winner-vs-default speedup bar chart (error bars
when the tuner stored an interval), compile time vs run time per candidate, and tokens/s and time to
first token of model workloads when such trials exist. A text summary heads the page; the same
summary (Markdown) goes to the Prefect artifacts.

plotly.js is inlined once: gzip-compressed and base85-encoded (a quarter of its size), unpacked in
the browser with ``DecompressionStream`` (Chrome 80+, Firefox 113+, Safari 16.4+), then every figure
is drawn from one JSON block. ``body[data-figures-drawn]`` says how many figures were drawn.

Optional fields, read when present (other parts of the tuner add them; nothing requires them):
trial attrs ``unstable`` / ``busy`` (a mark, bool or reason), ``ttft_ms`` / ``ttft_s`` and
``tokens_per_s`` (model workloads); speedup intervals as ``speedup_ci`` / ``speedup_interval``
(``[low, high]``) or ``speedup_low`` + ``speedup_high``, on a DB result row, a trial, or a profile entry;
``busy`` / ``unstable`` on a result row or profile entry.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
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
    from xlstm_kernels.settings import Settings

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
_SAFE = str.maketrans("<>", ".,")  # no '<' inside the <script> that holds the bundle: no "</script", no "<!--"
_REASON_CHARS = 240  # hover text and summary lines cut reasons (compile errors run to pages) to this


class ReportError(ValueError):
    """The study cannot be reported (unknown, or without a single finished trial)."""


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
        if any(_ttft_ms(t.user_attrs) is not None for t in self.trials) or self.workload.startswith("model"):
            return "model"
        return "decode" if self.workload.endswith(",decode") else "prefill"


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
    safe = re.sub(r"[^A-Za-z0-9._,=+-]", "_", name).strip(".") or "report"
    return Path(home).expanduser() / "reports" / f"{safe}.html"


def load_report_study(study_name: str, storage: str | optuna.storages.BaseStorage) -> optuna.Study:
    """Load ``study_name`` from ``storage``; ``ReportError`` lists the studies there when it is unknown."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage=storage)]
        raise ReportError(f"no study named {study_name!r} in {_storage_text(storage)}; studies there: {names}") from None


class NoStorage(ReportError):
    """The tuning storage named does not exist yet (no run has written studies there)."""


def existing_storage_url(settings: Settings, storage: str | None = None) -> str:
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


def _ttft_ms(attrs: Mapping[str, Any]) -> float | None:
    if isinstance(attrs.get("ttft_ms"), (int, float)):
        return float(attrs["ttft_ms"])
    if isinstance(attrs.get("ttft_s"), (int, float)):
        return float(attrs["ttft_s"]) * 1e3
    return None


def _label(config: Mapping[str, Any], mode: str) -> str:
    from xlstm_kernels.config import KernelConfig

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
    return {"label": best.label, "config": best.config, "median_ms": best.median_ms, "default_ms": default.median_ms if default else None,
            "speedup": default.median_ms / best.median_ms if default else None,
            "interval": _interval(best.user_attrs), "mark": best.mark, "source": "trial medians (not re-timed)"}


def workload_view(study: optuna.Study, result: Mapping[str, Any] | None = None) -> WorkloadView:
    """A workload section from its study and, when the tuner stored one, its re-timed winner row."""
    workload = workload_of(study)
    mode = "decode" if workload.endswith(",decode") else "prefill"
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
        entries.append({"workload": e.workload, "label": _label(e.config, "decode" if e.workload.endswith(",decode")
                                                                else "prefill"),
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
    first = re.sub(r"(?<![\w.])\d+(\.\d+)?(e[-+]?\d+)?(?![\w.])", "#", first)  # group "error 2e-2 > 1e-4" with "error 3e-2 > 1e-4"
    return first[:120]


def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "?"
    return f"{ms:.3g} ms" if ms >= 0.01 else f"{ms * 1e3:.3g} us"


def _speedup_text(w: Mapping[str, Any]) -> str:
    if w.get("speedup") is None:
        return "no default timing to compare with"
    text = f"{w['speedup']:.2f}x the default ({_fmt_ms(w.get('default_ms'))})"
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
        what += f" on {report.machine.get('device_name')} ({report.machine.get('device_type')}, machine `{report.machine['id']}`)"
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
        lines.append(f"`{w.workload}`: winner **`{w.winner['label']}`** at {_fmt_ms(w.winner['median_ms'])},"
                     f" {_speedup_text(w.winner)}{mark} ({counts}).")
    reasons = Counter(_short_reason(t.reason) for w in report.workloads for t in w.trials if t.status != "ok")
    if reasons:
        top = "; ".join(f"{r} (x{c})" for r, c in reasons.most_common(4))
        lines.append(f"Rejected or failed: {sum(reasons.values())} - {top}.")
    else:
        lines.append("Rejected or failed: none.")
    for workload, message in report.failed.items():
        lines.append(f"Failed `{workload}`: {message[:_REASON_CHARS]}")
    if report.profile is None:
        lines.append("Profile: not published by this run.")
    elif "error" in report.profile:
        lines.append(f"Profile `{report.profile['path']}`: unreadable ({report.profile['error'][:_REASON_CHARS]}).")
    else:
        entries = "; ".join(f"`{e['workload']}` -> `{e['label']}` {_fmt_ms(e['median_ms'])} ({e['speedup']:.2f}x)"
                            + (f" [{e['mark']}]" if e.get("mark") else "") for e in report.profile["entries"])
        lines.append(f"Profile v{report.profile['version']} `{report.profile['path']}` now says: {entries or 'no entries'}.")
    lines.append(_busy_line(report) + ".")
    return lines


def summary_markdown(report: RunReport, path: Path | None = None) -> str:
    """The summary as a Markdown block (the Prefect artifact carries it), with a link to the report file."""
    text = f"## {report.title}\n\n" + "\n".join(f"- {line}" for line in summary_lines(report)) + "\n"
    if path is not None:
        text += f"\nFull report (plots): [{path.name}]({Path(path).resolve().as_uri()}) - `{path}`\n"
    return text


def _md_inline(text: str) -> str:
    """HTML of one summary line: escaped, with Markdown's `code` and **bold**."""
    out = html.escape(text)
    out = re.sub(r"`([^`]*)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]*)\*\*", r"<b>\1</b>", out)


# -- figures --------------------------------------------------------------------------------------


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def _log_ticks(values: Sequence[float]) -> tuple[list[float], list[str]]:
    lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    vals = [10.0 ** e * m for e in range(lo, hi + 1) for m in (1, 2, 5)]
    vals = [v for v in vals if min(values) / 1.5 <= v <= max(values) * 1.5] or [min(values), max(values)]
    return [math.log10(v) for v in vals], [_fmt_ms(v) for v in vals]


def heatmap_figure(view: WorkloadView) -> Any | None:
    """Median time over chunk_size x T_inner, a panel per (family, heads_per_band); None if < 2 cells."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    trials = [t for t in view.trials if "chunk_size" in t.config and "t_inner" in t.config]
    if len({(t.config.get("family"), t.config.get("heads_per_band"), t.config["chunk_size"], t.config["t_inner"])
            for t in trials}) < 2:
        return None
    panels = sorted({(str(t.config.get("family", "")), t.config.get("heads_per_band")) for t in trials},
                    key=lambda p: (p[0], _sort_key(p[1] if p[1] is not None else 10**9)))
    cols = sorted({p[1] for p in panels}, key=lambda h: _sort_key(h if h is not None else 10**9))
    rows = sorted({p[0] for p in panels})
    titles = [f"{fam}, heads_per_band {'all' if h is None else h}" if (fam, h) in panels else ""
              for fam in rows for h in cols]
    fig = make_subplots(rows=len(rows), cols=len(cols), subplot_titles=titles, horizontal_spacing=0.08,
                        vertical_spacing=0.18 if len(rows) > 1 else 0.1)
    ok_ms = [t.median_ms for t in trials if t.median_ms]
    for r, fam in enumerate(rows, 1):
        for c, hpb in enumerate(cols, 1):
            cell = [t for t in trials if str(t.config.get("family", "")) == fam and t.config.get("heads_per_band") == hpb]
            if not cell:
                continue
            xs = sorted({t.config["chunk_size"] for t in cell}, key=_sort_key)
            ys = sorted({t.config["t_inner"] for t in cell}, key=_sort_key)
            z = [[None] * len(xs) for _ in ys]
            text = [[""] * len(xs) for _ in ys]
            bad_x, bad_y, bad_text, bad_color = [], [], [], []
            by_cell: dict[tuple[int, int], list[TrialView]] = {}
            for t in cell:
                by_cell.setdefault((ys.index(t.config["t_inner"]), xs.index(t.config["chunk_size"])), []).append(t)
            for (i, j), here in by_cell.items():
                ok = [t for t in here if t.median_ms is not None]
                if ok:  # the cell's colour: its fastest validated variant (compile mode, precision, ...)
                    t = min(ok, key=lambda t: t.median_ms)
                    z[i][j] = math.log10(t.median_ms)
                    others = len(here) - 1
                    text[i][j] = (f"{_fmt_ms(t.median_ms)}<br>{html.escape(t.label)}<br>trial {t.number}"
                                  + (f"<br>[{t.mark}]" if t.mark else "")
                                  + (f"<br>{others} other variant(s) here, {len(here) - len(ok)} rejected/failed"
                                     if others else ""))
                    continue
                bad_x.append(str(xs[j]))  # no variant validated: a cross, every variant's reason on hover
                bad_y.append(str(ys[i]))
                bad_color.append("#d62728" if all(t.status == "failed" for t in here) else "#ff7f0e")
                bad_text.append("<br>".join(f"{t.status}: {html.escape(t.reason[:_REASON_CHARS])}<br>"
                                            f"{html.escape(t.label)} (trial {t.number})" for t in here))
            xs_s, ys_s = [str(x) for x in xs], [str(y) for y in ys]
            if ok_ms:
                fig.add_trace(go.Heatmap(x=xs_s, y=ys_s, z=z, text=text, hoverinfo="text", coloraxis="coloraxis",
                                         xgap=2, ygap=2, name=f"{fam} hpb {hpb}"), row=r, col=c)
            win = (view.winner or {}).get("config") or {}
            if (win.get("family"), win.get("heads_per_band")) == (fam, hpb) and win.get("chunk_size") in xs:
                t_win = win.get("t_inner_requested", win.get("t_inner"))
                if t_win in ys:
                    fig.add_trace(go.Scatter(x=[str(win["chunk_size"])], y=[str(t_win)], mode="markers",
                                             marker={"symbol": "star", "size": 16, "color": "white",
                                                     "line": {"color": "black", "width": 1}},
                                             hoverinfo="text", text=[f"winner: {html.escape(view.winner['label'])}"],
                                             showlegend=False), row=r, col=c)
            if bad_x:
                fig.add_trace(go.Scatter(x=bad_x, y=bad_y, mode="markers", text=bad_text, hoverinfo="text",
                                         marker={"symbol": "x", "size": 14, "color": bad_color},
                                         name="rejected / failed", showlegend=False), row=r, col=c)
            fig.update_xaxes(title_text="chunk_size", type="category", categoryarray=xs_s, row=r, col=c)
            fig.update_yaxes(title_text="T_inner", type="category", categoryarray=ys_s, row=r, col=c)
    layout: dict[str, Any] = {"height": 260 + 230 * len(rows), "margin": {"t": 60, "b": 40},
                              "title": {"text": f"{view.workload}: median time (log colour); x = rejected (orange)"
                                                f" / failed (red), hover for the reason"}}
    if ok_ms:
        tickvals, ticktext = _log_ticks(ok_ms)
        layout["coloraxis"] = {"colorscale": "Viridis", "colorbar": {"title": {"text": "median"}, "tickvals": tickvals,
                                                                     "ticktext": ticktext}}
    fig.update_layout(**layout)
    return fig


def speedup_figure(views: Sequence[WorkloadView]) -> Any | None:
    """Winner-vs-default speedup per workload, error bars when the tuner stored an interval."""
    import plotly.graph_objects as go

    rows = [w for w in views if w.winner and w.winner.get("speedup")]
    if not rows:
        return None
    ys = [w.winner["speedup"] for w in rows]
    ivs = [w.winner.get("interval") for w in rows]
    bar: dict[str, Any] = {"x": [w.workload for w in rows], "y": ys,
                           "text": [f"{y:.2f}x" + (" [" + w.winner["mark"] + "]" if w.winner.get("mark") else "")
                                    for y, w in zip(ys, rows)], "textposition": "outside",
                           "marker": {"color": ["#bbbbbb" if w.winner.get("mark") else "#1f77b4" for w in rows]},
                           "hovertext": [f"{w.winner['label']}<br>{_fmt_ms(w.winner['median_ms'])} vs default "
                                         f"{_fmt_ms(w.winner.get('default_ms'))}<br>{w.winner['source']}" for w in rows],
                           "hoverinfo": "text"}
    if any(ivs):
        bar["error_y"] = {"type": "data", "symmetric": False,
                          "array": [max(0.0, iv[1] - y) if iv else 0 for iv, y in zip(ivs, ys)],
                          "arrayminus": [max(0.0, y - iv[0]) if iv else 0 for iv, y in zip(ivs, ys)]}
    fig = go.Figure(go.Bar(**bar))
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="default")
    fig.update_layout(title="Winner vs default: speedup per workload" + (" (bars: interval)" if any(ivs) else
                                                                        " (no interval recorded)"),
                      yaxis_title="default median / winner median", height=380, margin={"t": 60})
    return fig


def compile_figure(views: Sequence[WorkloadView]) -> Any | None:
    """Compile time vs run time per candidate: what tuning cost against what it bought."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for w in views:
        pts = [t for t in w.trials if t.median_ms and isinstance(t.compile_s, (int, float))]
        if pts:
            fig.add_trace(go.Scatter(x=[t.compile_s for t in pts], y=[t.median_ms for t in pts], mode="markers",
                                     name=w.workload, text=[f"{html.escape(t.label)}<br>compile {t.compile_s:.2f} s,"
                                                            f" run {_fmt_ms(t.median_ms)}" for t in pts],
                                     hoverinfo="text", marker={"size": 9}))
    if not fig.data:
        return None
    fig.update_layout(title="Cost of tuning: compile time vs median run time per validated candidate",
                      xaxis_title="compile s (first call)", yaxis_title="median run time, ms (log)",
                      yaxis_type="log", height=420, margin={"t": 60})
    return fig


def model_figure(views: Sequence[WorkloadView]) -> Any | None:
    """Model workloads: tokens/s and time to first token, native (default) vs tuned (winner)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pairs = []
    for w in (v for v in views if v.mode == "model"):
        ok = [t for t in w.trials if t.status == "ok"]
        default = next((t for t in ok if t.is_default), None)
        best = min(ok, key=lambda t: t.median_ms or math.inf) if ok else None
        if best is not None:
            pairs.append((w.workload, default, best))
    if not pairs:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("decode tokens/s (higher is better)",
                                                        "time to first token, ms (lower is better)"))
    for side, pick, color in (("native", 1, "#999999"), ("tuned", 2, "#1f77b4")):
        xs = [p[0] for p in pairs if p[pick] is not None]
        tps = [p[pick].user_attrs.get("tokens_per_s") for p in pairs if p[pick] is not None]
        ttft = [_ttft_ms(p[pick].user_attrs) for p in pairs if p[pick] is not None]
        fig.add_trace(go.Bar(x=xs, y=tps, name=side, marker_color=color), row=1, col=1)
        fig.add_trace(go.Bar(x=xs, y=ttft, name=side, marker_color=color, showlegend=False), row=1, col=2)
    fig.update_layout(title="Model workloads: native vs tuned", barmode="group", height=400, margin={"t": 70})
    return fig


def report_figures(report: RunReport) -> list[tuple[str, str, Any | None, str]]:
    """(section, title, figure or None, note) in page order."""
    out = []
    for w in report.workloads:
        fig = heatmap_figure(w)
        note = ""
        if fig is None:
            only = w.trials[0].label if w.trials else "none"
            note = (f"{len(w.trials)} candidate(s) evaluated ({only}"
                    + (f", {_fmt_ms(w.trials[0].median_ms)}" if w.trials and w.trials[0].median_ms else "")
                    + "): no grid to draw.")
        out.append((w.workload, "Median time over chunk_size x T_inner", fig, note))
    out.append(("Run", "Speedup over the default", speedup_figure(report.workloads),
                "No workload has a default timing to compare with."))
    out.append(("Run", "Compile time vs run time", compile_figure(report.workloads),
                "No validated candidate has a recorded compile time."))
    if any(w.mode == "model" for w in report.workloads):
        out.append(("Run", "Model workloads", model_figure(report.workloads), "No validated model candidate."))
    return out


# -- the page -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def plotly_bundle() -> str:
    """plotly.js, gzip-compressed and base85-encoded (safe inside a <script> element)."""
    from plotly.offline import get_plotlyjs

    packed = gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0)
    return base64.b85encode(packed).decode("ascii").translate(_SAFE)


_LOADER = """
(async function () {
  const fail = (msg) => { const e = document.getElementById('load-error'); e.textContent = msg; e.hidden = false;
                          console.error(msg); };
  try {
    if (typeof DecompressionStream === 'undefined') {
      fail('This browser cannot unpack the embedded plotly.js (needs DecompressionStream: Chrome 80+, ' +
           'Firefox 113+, Safari 16.4+). The summary above is complete without the plots.');
      return;
    }
    const A = __ALPHABET__, T = new Uint8Array(128);
    for (let i = 0; i < 85; i++) T[A.charCodeAt(i)] = i;
    const s = document.getElementById('plotly-b85').textContent.trim(), n = s.length, rem = n % 5;
    const out = new Uint8Array(Math.floor(n / 5) * 4 + (rem ? rem - 1 : 0));
    let o = 0;
    for (let i = 0; i < n; i += 5) {  // 5 digits -> 4 bytes, big-endian; a short last group is padded with '~'
      let v = 0;
      for (let j = 0; j < 5; j++) v = v * 85 + (i + j < n ? T[s.charCodeAt(i + j)] : 84);
      const k = Math.min(4, out.length - o);
      for (let b = 0; b < k; b++) out[o++] = Math.floor(v / 2 ** (8 * (3 - b))) % 256;
    }
    const js = await new Response(new Blob([out]).stream().pipeThrough(new DecompressionStream('gzip'))).text();
    const tag = document.createElement('script'); tag.text = js; document.head.appendChild(tag);
    const figs = JSON.parse(document.getElementById('figures').textContent);
    for (const f of figs) await Plotly.newPlot(f.id, f.data, f.layout, {responsive: true, displaylogo: false});
    document.body.dataset.figuresDrawn = String(figs.length);
  } catch (err) { fail('The plots could not be drawn: ' + err); }
})();
"""

_CSS = ("body{font-family:system-ui,sans-serif;margin:1.5em 2em;max-width:1400px;color:#222}"
        "ul.summary li{margin:.3em 0;line-height:1.4}code{background:#f3f3f3;padding:0 .25em}"
        ".note{color:#666}.error{color:#b00;font-weight:bold}h2{border-bottom:1px solid #ddd;margin-top:1.6em}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 8px;font-size:90%}")


def _decoder() -> str:
    """The loader script: unpack plotly.js, run it, draw every figure, then mark the page."""
    return _LOADER.replace("__ALPHABET__", json.dumps(_ALPHABET.translate(_SAFE)))


def render_report(report: RunReport) -> str:
    """The report page as one HTML string that opens offline (plotly.js inlined once)."""
    import plotly.io as pio

    parts, figs, section = [], [], None
    views = {w.workload: w for w in report.workloads}
    for sec, title, fig, note in report_figures(report):
        if sec != section:
            parts.append(f"<h2>{html.escape(sec)}</h2>")
            section = sec
            if sec in views:
                w = views[sec]
                parts.append(f"<p class='note'>study <code>{html.escape(w.study_name)}</code>: {len(w.trials)} "
                             f"candidate(s) evaluated over all its runs, {w.n_duplicates} repeated draw(s) reused</p>")
        parts.append(f"<h3>{html.escape(title)}</h3>")
        if fig is None:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
            continue
        div = f"fig-{len(figs)}"
        parts.append(f'<div id="{div}" class="figure"></div>')
        figs.append(f'{{"id": "{div}", ' + pio.to_json(fig, validate=False)[1:])
    figures_json = ("[" + ",".join(figs) + "]").replace("</", "<\\/")
    summary = "".join(f"<li>{_md_inline(line)}</li>" for line in summary_lines(report))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(report.title)}</h1><p class='note'>generated {report.generated}</p>"
        f"<ul class='summary' id='summary'>{summary}</ul>"
        "<p id='load-error' class='error' hidden></p>" + "".join(parts)
        + f"<script type='application/json' id='figures'>{figures_json}</script>"
        + f"<script type='text/plain' id='plotly-b85'>{plotly_bundle()}</script>"
        + f"<script>{_decoder()}</script></body></html>\n"
    )


def write_report(report: RunReport, path: Path) -> ReportFile:
    """Write ``report`` to ``path`` (parents created); returns the path, its size and the summary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(report)
    path.write_text(text, encoding="utf-8")
    return ReportFile(path, len(text.encode("utf-8")), summary_markdown(report, path))


def write_study_report(study_name: str, *, settings: Settings, storage: str | None = None,
                       out: Path | None = None) -> ReportFile:
    """Write the report of one study (default storage: the tuner's; default HOME/reports/<study>.html)."""
    study = load_report_study(study_name, existing_storage_url(settings, storage))
    return write_report(study_report(study), out or report_path(settings.resolved_home(), study_name))


def write_run_report(
    db: TuningDB,
    run_id: int,
    study_names: Sequence[str],
    *,
    settings: Settings,
    failed: Mapping[str, str] | None = None,
    profile_path: Path | None = None,
    out: Path | None = None,
) -> ReportFile:
    """Write the report of tuning run ``run_id`` (default HOME/reports/run-<id>.html, studies from the tuner's storage)."""
    from ._study import optuna_storage

    report = collect_run_report(db, run_id, study_names, optuna_storage(db, settings), failed=failed,
                                profile_path=profile_path)
    return write_report(report, out or report_path(settings.resolved_home(), f"run-{run_id}"))
