"""A self-contained HTML report of one Optuna study: Optuna's plots (plotly inlined) and a winners table."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from .outcome import WorkloadOutcome, winners_table

if TYPE_CHECKING:
    from storage import TuningDB


class ReportError(ValueError):
    """The study cannot be reported (unknown, or without a single completed trial)."""


def load_study(study_name: str, storage: str) -> optuna.Study:
    """Load ``study_name`` from ``storage``; ``ReportError`` lists the studies there when it is unknown."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage=storage)]
        raise ReportError(f"no study named {study_name!r} in {storage}; studies there: {names}") from None


def _completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def _varying_params(trials: Sequence[optuna.trial.FrozenTrial]) -> list[str]:
    names = sorted({p for t in trials for p in t.params})
    return [p for p in names if len({repr(t.params.get(p)) for t in trials}) > 1]


def study_figures(study: optuna.Study) -> list[tuple[str, Any | None, str]]:
    """(title, plotly figure or None, note) for history, parallel coordinates and importances."""
    from optuna import visualization as vis

    done = _completed(study)
    if not done:
        raise ReportError(f"study {study.study_name!r} has no completed trial to report")
    varying = _varying_params(done)
    figs: list[tuple[str, Any | None, str]] = [("Optimization history", vis.plot_optimization_history(study), "")]
    if done[0].params:
        figs.append(("Parallel coordinates", vis.plot_parallel_coordinate(study), ""))
    else:
        figs.append(("Parallel coordinates", None, "The trials have no parameters."))
    if len(done) >= 2 and varying:
        figs.append(("Parameter importances", vis.plot_param_importances(study, params=varying), ""))
    else:
        figs.append(
            (
                "Parameter importances",
                None,
                f"Needs at least 2 completed trials with a varying parameter; this study has {len(done)} "
                f"completed trial(s) and {len(varying)} varying parameter(s).",
            )
        )
    return figs


def study_winner_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """A winners table from the study itself: its best trial's parameters and value."""
    best = study.best_trial
    row: dict[str, Any] = {"study": study.study_name, "trial": best.number, "value": best.value}
    row.update({f"param {k}": v for k, v in best.params.items()})
    row.update({k: v for k, v in best.user_attrs.items() if isinstance(v, (int, float, str, bool))})
    return [row]


def _html_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No winners.</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _page(title: str, intro: str, rows: list[dict[str, Any]], parts: list[str]) -> str:
    """A self-contained HTML page: title, intro line, winners table, then the plot sections."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:4px 8px}.note{color:#666}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{intro}; generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}.</p>"
        f"<h2>Winners</h2>{_html_table(rows)}" + "".join(parts) + "</body></html>\n"
    )


def _figures_html(figs: Sequence[tuple[str, Any, str]], heading: str, inlined: bool) -> tuple[list[str], bool]:
    """HTML of one study's plots; plotly.js goes into the first plot of the page only."""
    parts = []
    for title, fig, note in figs:
        parts.append(f"<{heading}>{html.escape(title)}</{heading}>")
        if fig is None:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
            continue
        parts.append(fig.to_html(full_html=False, include_plotlyjs=not inlined))
        inlined = True
    return parts, inlined


def render_report(study: optuna.Study, winners: Sequence[WorkloadOutcome] | None = None) -> str:
    """The report page as one HTML string; plotly.js is inlined once, so the page works offline."""
    figs = study_figures(study)
    rows = winners_table(winners) if winners else study_winner_rows(study)
    parts, _ = _figures_html(figs, "h2", inlined=False)
    n_done = len(_completed(study))
    return _page(f"xlstm-autotune report: {study.study_name}",
                 f"{len(study.trials)} trials, {n_done} completed", rows, parts)


def write_report(study: optuna.Study, path: Path, winners: Sequence[WorkloadOutcome] | None = None) -> Path:
    """Write the report of ``study`` to ``path`` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(study, winners), encoding="utf-8")
    return path


def render_run_report(title: str, studies: Sequence[optuna.Study], winners: Sequence[WorkloadOutcome]) -> str:
    """One page for a tuning run: the winners table, then each study's plots (plotly.js inlined once)."""
    parts, inlined = [], False
    for study in studies:
        n_done = len(_completed(study))
        parts.append(f"<h2>Study {html.escape(study.study_name)}</h2>"
                     f"<p>{len(study.trials)} trials, {n_done} completed (all runs of this study).</p>")
        try:
            figs = study_figures(study)
        except ReportError as exc:
            parts.append(f'<p class="note">{html.escape(str(exc))}</p>')
            continue
        more, inlined = _figures_html(figs, "h3", inlined)
        parts += more
    return _page(title, f"{len(studies)} studies", winners_table(winners), parts)


def write_run_report(
    run_id: int,
    study_names: Sequence[str],
    db: TuningDB,
    winners: Sequence[WorkloadOutcome],
    out: Path | None = None,
) -> Path:
    """Write the report of tuning run ``run_id`` (its studies, from the tuner's Optuna storage of the
    tuning DB ``db``) to ``out`` (default HOME/reports/run-<run_id>.html) and return the path."""
    from tuner import optuna_storage
    from xlstm_kernels.settings import get_settings

    settings = get_settings()
    storage = optuna_storage(db, settings)
    studies = [load_study(name, storage) for name in study_names]
    out = Path(out) if out is not None else settings.resolved_home() / "reports" / f"run-{run_id}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_run_report(f"xlstm-autotune run {run_id}", studies, winners), encoding="utf-8")
    return out
