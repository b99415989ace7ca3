"""The run report: one offline HTML page (summary, then the figures of ``tuner._report_plots``), and the
entry points that write it for a run or a single study.

plotly.js is inlined once: gzip-compressed and base85-encoded (a quarter of its size), unpacked in
the browser with ``DecompressionStream`` (Chrome 80+, Firefox 113+, Safari 16.4+), then every figure
is drawn from one JSON block. ``body[data-figures-drawn]`` says how many figures were drawn.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._report_data import (
    ReportFile,
    RunReport,
    collect_run_report,
    existing_storage_url,
    load_report_study,
    report_path,
    study_report,
    summary_lines,
    summary_markdown,
)
from ._report_plots import report_figures

if TYPE_CHECKING:
    from storage import TuningDB
    from .settings import TunerSettings

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
_SAFE = str.maketrans("<>", ".,")  # no '<' inside the <script> that holds the bundle: no "</script", no "<!--"


def _md_inline(text: str) -> str:
    """HTML of one summary line: escaped, with Markdown's `code` and **bold**."""
    out = html.escape(text)
    out = re.sub(r"`([^`]*)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]*)\*\*", r"<b>\1</b>", out)


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


def write_study_report(study_name: str, *, settings: TunerSettings, storage: str | None = None,
                       out: Path | None = None) -> ReportFile:
    """Write the report of one study (default storage: the tuner's; default HOME/reports/<study>.html)."""
    study = load_report_study(study_name, existing_storage_url(settings, storage))
    return write_report(study_report(study), out or report_path(settings.resolved_home(), study_name))


def write_run_report(
    db: TuningDB,
    run_id: int,
    study_names: Sequence[str],
    *,
    settings: TunerSettings,
    failed: Mapping[str, str] | None = None,
    profile_path: Path | None = None,
    out: Path | None = None,
) -> ReportFile:
    """Write the report of tuning run ``run_id`` (studies from the tuner's storage; default
    HOME/reports/run-<id>.html)."""
    from ._study import optuna_storage

    report = collect_run_report(db, run_id, study_names, optuna_storage(db, settings), failed=failed,
                                profile_path=profile_path)
    return write_report(report, out or report_path(settings.resolved_home(), f"run-{run_id}"))
