"""The run report's figures (plotly): per workload a heatmap of median time over chunk_size x T_inner
(a panel per family and heads_per_band, log colour, rejected and failed cells marked with their reason),
then for the run the winner-vs-default speedup (error bars when an interval exists), compile time vs
run time per candidate, and tokens/s and time to first token of model workloads when there are any.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from ._report_data import REASON_CHARS, RunReport, TrialView, WorkloadView, fmt_ms, ttft_ms


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def _log_ticks(values: Sequence[float]) -> tuple[list[float], list[str]]:
    lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    vals = [10.0 ** e * m for e in range(lo, hi + 1) for m in (1, 2, 5)]
    vals = [v for v in vals if min(values) / 1.5 <= v <= max(values) * 1.5] or [min(values), max(values)]
    return [math.log10(v) for v in vals], [fmt_ms(v) for v in vals]


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
            cell = [t for t in trials
                    if str(t.config.get("family", "")) == fam and t.config.get("heads_per_band") == hpb]
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
                    text[i][j] = (f"{fmt_ms(t.median_ms)}<br>{html.escape(t.label)}<br>trial {t.number}"
                                  + (f"<br>[{t.mark}]" if t.mark else "")
                                  + (f"<br>{others} other variant(s) here, {len(here) - len(ok)} rejected/failed"
                                     if others else ""))
                    continue
                bad_x.append(str(xs[j]))  # no variant validated: a cross, every variant's reason on hover
                bad_y.append(str(ys[i]))
                bad_color.append("#d62728" if all(t.status == "failed" for t in here) else "#ff7f0e")
                bad_text.append("<br>".join(f"{t.status}: {html.escape(t.reason[:REASON_CHARS])}<br>"
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
                           "hovertext": [f"{w.winner['label']}<br>{fmt_ms(w.winner['median_ms'])} vs default "
                                         f"{fmt_ms(w.winner.get('default_ms'))}<br>{w.winner['source']}" for w in rows],
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
                                                            f" run {fmt_ms(t.median_ms)}" for t in pts],
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
        ttft = [ttft_ms(p[pick].user_attrs) for p in pairs if p[pick] is not None]
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
        if fig is None:  # e.g. a decode step, whose candidates differ in compile mode only
            each = "; ".join(f"{t.label}: {fmt_ms(t.median_ms) if t.median_ms else t.status}" for t in w.trials[:12])
            note = f"No chunk_size x T_inner grid to draw: {len(w.trials)} candidate(s) ({each or 'none'})."
        out.append((w.workload, "Median time over chunk_size x T_inner", fig, note))
    out.append(("Run", "Speedup over the default", speedup_figure(report.workloads),
                "No workload has a default timing to compare with."))
    out.append(("Run", "Compile time vs run time", compile_figure(report.workloads),
                "No validated candidate has a recorded compile time."))
    if any(w.mode == "model" for w in report.workloads):
        out.append(("Run", "Model workloads", model_figure(report.workloads), "No validated model candidate."))
    return out
