"""The run report: content built from real Optuna storage and a real tuning DB, rendered in headless Chromium.

Studies are synthetic (``study.add_trial`` with the tuner's attributes, ``report_helpers``): the
report's content is under test, not the tuner, so nothing is compiled.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
from pathlib import Path

import optuna
import pytest
from report_helpers import DECODE, PREFILL, WINNER, add_trial, synthetic_study
from typer.testing import CliRunner

import storage
import tuner
import xlstm_kernels as xk
from flows.cli import app
from tuner._report_data import workload_view
from tuner._report_plots import heatmap_figure, speedup_figure
from xlstm_kernels.kernels.config import KernelConfig

MODEL = "model:tiny,1,16,float32"
DRAWN = "document.body.dataset.figuresDrawn !== undefined || !document.getElementById('load-error').hidden"


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium, installed here when missing (root + apt-get); skip only when it cannot be."""
    from browser import install_chromium

    path, why = install_chromium()
    if path is None:
        pytest.skip(f"headless Chromium unavailable and could not be installed: {why}")
    return path


def _artifact(path: Path) -> None:
    """Copy a test artifact to $XLSTM_AUTOTUNE_TEST_ARTIFACTS when set (CI keeps it)."""
    dest = os.environ.get("XLSTM_AUTOTUNE_TEST_ARTIFACTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(dest) / path.name)


def _model_study(storage_url: str) -> optuna.Study:
    """A model workload's study: native (default) and tuned candidates with TTFT and tokens/s."""
    study = optuna.create_study(study_name=f"machine0/{MODEL}/sig0/torch-x", storage=storage_url)
    study.set_user_attr("workload", MODEL)
    for n, (cfg, ttft, tps, extra) in enumerate([
        (KernelConfig(), 40.0, 900.0, {}),
        (KernelConfig(compile_mode="max-autotune-no-cudagraphs"), 25.0, 1500.0, {"speedup_ci": [1.4, 1.9]}),
    ]):
        add_trial(study, cfg, "ok", n + 1, is_default=n == 0, value=ttft,
                  extra={"ttft_ms": ttft, "tokens_per_s": tps, **extra})
    return study


@pytest.fixture(scope="module")
def run_report(tmp_path_factory):
    """A tuning run in a real tuning DB with its studies in the tuner's Optuna storage beside it:
    a 30-candidate prefill study (re-timed winner recorded), a one-candidate decode study, a model study."""
    home = tmp_path_factory.mktemp("report-home")
    settings = tuner.TunerSettings(home=home)
    with storage.open_db(settings.resolved_db_path()) as db:
        machine_id = db.record_machine(xk.fingerprint("cpu"))
        run_id = db.start_run(machine_id, device="cpu", torch_version="2.x", triton=None, quick=True, settings={})
        url = tuner.optuna_storage_url(db.path, settings)
        pre = synthetic_study(url, 30, workload=PREFILL)
        dec = optuna.create_study(study_name=f"machine0/{DECODE}/sig0/torch-x", storage=url)
        add_trial(dec, KernelConfig(), "ok", 1, is_default=True)
        model = _model_study(url)
        db.record_result(run_id=run_id, workload=xk.Workload.parse(PREFILL), machine_id=machine_id,
                         config=WINNER, trial_id=None, t_inner_effective=2, median_ms=0.8, spread_ms=0.02,
                         tokens_per_s=6.4e5, default_median_ms=1.35, speedup=1.35 / 0.8, equivalence_error=3e-6,
                         compile_s=3.4, n_trials=30, n_rejected=3, n_failed=2, retime=[])
        db.finish_run(run_id, "completed")
        names = [pre.study_name, dec.study_name, model.study_name]
        written = tuner.write_run_report(db, run_id, names, settings=settings,
                                         failed={"1,3,64,16,16,float32,prefill": "UnbandableWorkload: NH=3"})
    return written, pre


def test_report_renders_in_chromium_every_figure_drawn(chromium, run_report, tmp_path):
    from browser import Browser

    written, study = run_report
    with Browser(chromium) as browser:
        browser.open(written.path.resolve().as_uri(), DRAWN)
        shot = browser.screenshot(tmp_path / "run-report.png")
        _artifact(shot)
        assert browser.errors() == []
        figures = browser.evaluate("document.querySelectorAll('div.figure').length")
        assert figures == 4  # prefill heatmap, speedup, compile vs run, model (decode: one candidate, a note)
        assert browser.evaluate("document.body.dataset.figuresDrawn") == str(figures)
        counts = browser.evaluate("""Object.fromEntries(Array.from(document.querySelectorAll('div.figure')).map(d =>
            [d.id, {plot: d.classList.contains('js-plotly-plot'), heat: d.querySelectorAll('.hm image').length,
                    bars: d.querySelectorAll('.bars .point').length, errs: d.querySelectorAll('.errorbar').length,
                    points: d.querySelectorAll('.scatterlayer .point').length}]))""")
        summary = browser.evaluate("document.getElementById('summary').innerText")
    assert all(c["plot"] for c in counts.values())
    panels = {(t.config["family"], t.config["heads_per_band"]) for t in workload_view(study).trials}
    assert counts["fig-0"]["heat"] == len(panels)  # one heatmap image per family x heads_per_band panel
    assert counts["fig-0"]["points"] > 0  # rejected/failed crosses and the winner's star
    assert counts["fig-1"]["bars"] == 3 and counts["fig-1"]["errs"] == 3  # three workloads, one with an interval
    n_timed = sum(1 for t in workload_view(study).trials if t.median_ms) + 3  # + decode one, model two
    assert counts["fig-2"]["points"] == n_timed
    assert counts["fig-3"]["bars"] == 4  # tokens/s and TTFT, native and tuned
    assert f"winner {WINNER.short()}" in summary and "1.69x the default (1.35 ms)" in summary
    assert "from paired re-timing" in summary and "interval 1.40-1.90x" in summary
    assert "UnbandableWorkload" in summary and "Rejected or failed" in summary
    assert shot.stat().st_size > 20_000


def test_page_reports_a_broken_bundle_as_a_js_error(chromium, run_report, tmp_path):
    """The browser check sees a failure to draw: a damaged plotly bundle shows the error and logs it."""
    from browser import Browser

    text = run_report[0].path.read_text()
    start = text.index("id='plotly-b85'>") + 100
    broken = tmp_path / "broken.html"
    broken.write_text(text[:start] + "0000000000" + text[start + 10:])
    with Browser(chromium) as browser:
        browser.open(broken.resolve().as_uri(), DRAWN)
        errors = browser.errors()
        shown = browser.evaluate("document.getElementById('load-error').innerText")
    assert any("could not be drawn" in e for e in errors) and "could not be drawn" in shown


def test_page_is_one_offline_file_with_plotly_inlined_once(run_report):
    written, _ = run_report
    text = written.path.read_text()
    assert written.bytes == written.path.stat().st_size < 2_500_000
    assert text.count("id='plotly-b85'") == 1 and text.count("Plotly.newPlot") == 1
    assert not re.search(r"<script[^>]*\bsrc=", text) and "cdn.plot.ly" not in text
    bundle = text.split("id='plotly-b85'>")[1].split("</script>")[0]
    assert "<" not in bundle and len(bundle) > 1_000_000
    figures = json.loads(text.split("id='figures'>")[1].split("</script>")[0])
    assert [f["id"] for f in figures] == [f"fig-{i}" for i in range(4)]


def test_heatmap_log_colour_reasons_on_hover_and_winner_star(tmp_path):
    study = synthetic_study(None, 40)
    view = workload_view(study)
    fig = heatmap_figure(view).to_plotly_json()
    heat = [t for t in fig["data"] if t["type"] == "heatmap"]
    z = [v for t in heat for row in t["z"] for v in row if v is not None]
    cells: dict[tuple, list] = {}
    for t in view.trials:
        c = t.config
        cells.setdefault((c["family"], c["heads_per_band"], c["chunk_size"], c["t_inner"]), []).append(t)
    best = [min(t.median_ms for t in ts if t.median_ms) for ts in cells.values() if any(t.median_ms for t in ts)]
    assert sorted(z) == pytest.approx(sorted(math.log10(m) for m in best))  # colour: log10 of the cell's best ms
    ticks = fig["layout"]["coloraxis"]["colorbar"]["ticktext"]
    assert any(t.endswith(" ms") for t in ticks)
    crosses = [t for t in fig["data"] if t["type"] == "scatter" and t["marker"]["symbol"] == "x"]
    hover = html.unescape(" ".join(h for t in crosses for h in t["text"]))  # plotly reads the entities
    bad = [ts for ts in cells.values() if not any(t.median_ms for t in ts)]  # cells where nothing validated
    assert sum(len(t["x"]) for t in crosses) == len(bad) > 0
    assert "rejected: equivalence error 2.2e-02 > tolerance" in hover and "failed: InductorError" in hover
    [star] = [t for t in fig["data"] if t["type"] == "scatter" and t["marker"]["symbol"] == "star"]
    assert (star["x"], star["y"]) == ([str(WINNER.chunk_size)], [str(WINNER.t_inner)])
    assert heatmap_figure(workload_view(synthetic_study(None, 1))) is None  # one candidate: a note, no grid


def test_speedup_bars_carry_the_interval_and_busy_marks_reach_the_summary():
    study = synthetic_study(None, 8)
    view = workload_view(study)
    view.winner = dict(view.winner, interval=(1.2, 2.5), mark="unstable")
    bar = speedup_figure([view]).to_plotly_json()["data"][0]
    s = view.winner["speedup"]
    assert bar["error_y"]["array"] == [pytest.approx(2.5 - s)]
    assert bar["error_y"]["arrayminus"] == [pytest.approx(s - 1.2)]
    add_trial(study, KernelConfig(chunk_size=16, t_inner=1), "ok", 99, mark="spread 40% of median")
    report = tuner.study_report(study)
    lines = tuner.summary_markdown(report)
    assert "**machine busy**: 1 candidate(s) marked" in lines
    assert "from trial medians (not re-timed)" in lines


def test_report_command_reads_the_tuners_storage_and_creates_none(home):
    result = CliRunner().invoke(app, ["report", "--study", "nope"])
    assert result.exit_code == 1 and "no Optuna storage at" in result.output
    assert not (home / "tuning.optuna.db").exists() and not (home / "optuna.db").exists()
    synthetic_study(f"sqlite:///{home / 'tuning.optuna.db'}", 12, name="a/b/c")
    result = CliRunner().invoke(app, ["report", "--study", "a/b/c", "--json"])
    assert result.exit_code == 0, result.output
    path = Path(json.loads(result.output)["path"])
    assert path == home / "reports" / "a%2Fb%2Fc.html" and "winner <b><code>" in path.read_text()


@pytest.fixture()
def home(tuner_home):
    """A fresh HOME with settings re-read (conftest's ``tuner_home``)."""
    return tuner_home
