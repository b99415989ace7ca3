"""The tuner: search-space constraints, a real study end to end into a temporary DB (real Optuna
storage, real torch.compile), a deliberately wrong kernel variant rejected and never timed,
resume after Ctrl-C and after a killed process, TPE with duplicates, decode, and `best` after a run.

Compiles: the studies share one tiny workload and three kernels (recurrent T1/T2 and the default
chunkwise L64, effective T1 at S=16), plus the decode step; the in-process compile cache makes
every study after the first cheap.
"""

from __future__ import annotations

import io
import json
import math
import socket
import subprocess
import sys

import optuna
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import storage
import tuner
import xlstm_kernels as xk
from flows.cli import app
from tuner import SearchSpace, UnbandableWorkload, UnknownWorkload

WL = xk.Workload.parse("1,2,16,8,8,float32")
BAD = dict(family="recurrent", t_inner=2)  # the variant the wrong kernel is injected into


def _space(wl: xk.Workload = WL) -> SearchSpace:
    return SearchSpace.for_workload(wl, "cpu", families=["recurrent"], heads_per_band=[2], t_inners=[1, 2])


class CountingRunner:
    """The production runner, counting calls per config; ``wrong`` adds an error to one variant."""

    def __init__(self, wrong: bool = False, interrupt_at: int | None = None) -> None:
        self.calls: dict[str, int] = {}
        self.wrong, self.interrupt_at = wrong, interrupt_at

    def __call__(self, wl, inputs, config):
        short = config.short()
        if short not in self.calls and self.interrupt_at is not None and len(self.calls) + 1 == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls[short] = self.calls.get(short, 0) + 1
        h, states = tuner.run_kernel(wl, inputs, config)
        if self.wrong and config.family == BAD["family"] and config.t_inner == BAD["t_inner"]:
            h = h + 1e-2 * h.abs().max()  # a deliberately wrong kernel variant
        return h, states


def _matches_reference(config: xk.KernelConfig, wl: xk.Workload, seed: int = 7) -> float:
    """Relative h error of ``config`` on fresh inputs vs the float64 reference (independent of the tuner's gate)."""
    from conftest import make_inputs, rel_err

    inputs = make_inputs(wl.B, wl.NH, wl.S, wl.DHQK, wl.DHV, seed=seed)
    if wl.mode == "decode":
        z = (torch.zeros(wl.B, wl.NH, wl.DHQK, wl.DHV), torch.zeros(wl.B, wl.NH, wl.DHQK),
             torch.zeros(wl.B, wl.NH, 1))
        q, k, v, i, f = tuple(x[:, :, 0] for x in inputs[:3]) + (inputs[3][:, :, :1], inputs[4][:, :, :1])
        h, _ = xk.mlstm_step(q, k, v, i, f, *z)
        return rel_err(h, xk.mlstm_reference(*(x[:, :, :1] for x in inputs))[0][:, :, 0])
    h, _ = xk.mlstm(*inputs, config=config)
    return rel_err(h, xk.mlstm_reference(*inputs)[0])


def _fast(monkeypatch):
    for k, v in dict(TUNE_REPEATS="4", TUNE_WARMUP="1", TUNE_RETIME_ROUNDS="3").items():
        monkeypatch.setenv(f"XLSTM_AUTOTUNE_{k}", v)
    xk.reset_settings()


@pytest.fixture()
def fast(monkeypatch):
    _fast(monkeypatch)
    yield
    xk.reset_settings()


# -- the search space -------------------------------------------------------------------------------

def test_space_constraints():
    wl = xk.Workload.parse("1,6,40,8,8,float32")
    sp = SearchSpace.for_workload(wl, "cpu")
    assert sp.dims["heads_per_band"] == (1, 2, 3, 6)
    assert sp.dims["chunk_size"] == (8, 16, 32)  # powers of two <= S
    assert sp.dims["compile_mode"] == ("default",) and sp.dims["precision"] == ("fp32",)
    cands = sp.candidates()
    assert cands[0] == sp.default == xk.DEFAULT_CONFIG.replace(heads_per_band=6)
    keys = [tuner.effective_key(c, wl) for c in cands]
    assert len(keys) == len(set(keys))  # one candidate per effective kernel
    for c in cands:
        assert wl.NH % c.heads_per_band == 0 and c.t_inner in xk.kernels.config.T_INNER_LADDER
        assert tuner.effective_t_inner(c, wl) <= c.t_inner
    assert all(c.chunk_size % c.t_inner == 0 for c in cands if c.family == "recurrent")
    assert len(_space().candidates()) == 3


def test_space_bad_input():
    with pytest.raises(UnbandableWorkload, match=r"heads_per_band \[4\] cannot band NH=6.*\[1, 2, 3, 6\]"):
        SearchSpace.for_workload("1,6,16,8,8,float32", "cpu", heads_per_band=[4])
    with pytest.raises(UnbandableWorkload, match="default config"):
        SearchSpace.for_workload("1,3,16,8,8,float32", "cpu", default=xk.KernelConfig(heads_per_band=2))
    for text in ("1,2,3", "1,2,16,8,8,float64", "a,2,16,8,8,float32", "1,2,16,8,8,float32,train",
                 "1,2,0,8,8,float32", "1,2,16,8,8,float32,decode"):
        with pytest.raises(UnknownWorkload, match="unknown workload"):
            tuner.parse_workload(text)
    with pytest.raises(ValueError, match="CUDA only"):
        SearchSpace.for_workload(WL, "cpu", compile_modes=["reduce-overhead"])


def test_decode_space_has_only_compile_mode():
    sp = SearchSpace.for_workload("1,2,1,8,8,float32,decode", "cpu")
    assert sp.dims == {"compile_mode": ("default",)} and len(sp.candidates()) == 1


def test_bad_workload_writes_nothing(db_path):
    with pytest.raises(UnknownWorkload):
        tuner.autotune([str(WL), "1,2,16,8"], db=db_path, device="cpu")
    with pytest.raises(UnknownWorkload, match="float64"):
        tuner.tune_workload("1,2,16,8,8,float64", db=db_path, device="cpu")
    assert not db_path.exists()


# -- a real study -----------------------------------------------------------------------------------

def test_study_end_to_end_rejects_the_wrong_variant(db_path, fast):
    runner = CountingRunner(wrong=True)
    out = io.StringIO()
    with tuner.RichProgress(Console(file=out, width=200, force_terminal=False)) as progress:
        wr = tuner.tune_workload(WL, db=db_path, device="cpu", runner=runner, progress=progress, space=_space())
    assert wr.sampler == "grid" and wr.n_trials == 3 == wr.n_candidates
    bad = xk.KernelConfig("recurrent", chunk_size=16, heads_per_band=2, t_inner=2)
    # rejected with its reason, and never timed: one probe/compile call and one validation call
    assert [(r.config, r.status) for r in wr.rejected] == [(bad, "rejected")]
    assert "exceeds the float32 tolerance" in wr.rejected[0].reason
    assert runner.calls[bad.short()] == 2
    assert all(n >= 2 + 1 + 4 for c, n in runner.calls.items() if c != bad.short())  # + warm-up, repeats
    assert wr.winner is not None and wr.winner.config != bad
    assert wr.winner.median_ms > 0 and _matches_reference(wr.winner.config, WL) < 1e-4
    assert wr.default is not None and wr.default.config == _space().default
    iv = wr.speedup_interval  # the median of fresh paired default/winner ratios (not a ratio of medians)
    assert wr.speedup == iv.median and iv.low <= wr.speedup <= iv.high
    assert {c.config for c in wr.retimed} == {c for c in _space().candidates() if c != bad}
    assert "best" in out.getvalue() and "3/3" in out.getvalue()

    with storage.TuningDB(db_path) as db:
        assert db.run(wr.run_id)["status"] == "completed"
        mid = db.run(wr.run_id)["machine_id"]
        rows = db.trials(run_id=wr.run_id)
        assert [r["is_default"] for r in rows] == [1, 0, 0]  # the baseline is enqueued first
        by_status = {r["status"]: r for r in rows}
        rej = by_status["rejected"]
        assert rej["median_ms"] is None and rej["equivalence_error"] > 1e-4 and "tolerance" in rej["reason"]
        for r in rows:
            if r["status"] == "ok":
                assert r["compile_s"] > 0 and r["median_ms"] > 0 and r["spread_ms"] >= 0
                assert r["tokens_per_s"] == pytest.approx(16 / (r["median_ms"] / 1e3))
                assert r["validation_shape"] == "B=1,NH=2,S=16,DHQK=8,DHV=8,float32"
        best = db.best(WL, mid)
        assert best.source == "result" and best.config == wr.winner.config and best.run_id == wr.run_id
    study = optuna.load_study(study_name=wr.study_name, storage=tuner.optuna_storage(storage.open_db(db_path), tuner.get_tuner_settings()))
    rejected = [t for t in study.trials if t.user_attrs.get("status") == "rejected"]
    assert len(rejected) == 1 and rejected[0].constraints["equivalence"] > 0 and math.isinf(rejected[0].value)
    feasible = [t for t in study.trials if t.user_attrs.get("status") == "ok"]
    assert all(t.constraints["equivalence"] <= 0 for t in feasible)

    # the best command answers from this run
    cli = CliRunner()
    got = cli.invoke(app, ["best", "--workload", str(WL), "--machine", mid, "--db", str(db_path), "--json"])
    assert got.exit_code == 0, got.output
    data = json.loads(got.stdout)
    assert data["config"] == wr.winner.config.to_dict() and data["run_id"] == wr.run_id
    assert data["speedup"] == pytest.approx(wr.speedup)
    got = cli.invoke(app, ["best", "--workload", "1,2,32,8,8,float32", "--machine", mid, "--db", str(db_path)])
    assert got.exit_code == 1 and "no tuned config" in got.stderr

    # running again on the same DB continues the finished study: nothing re-evaluated, re-timed again
    again = tuner.tune_workload(WL, db=db_path, device="cpu", runner=runner, space=_space())
    assert again.n_trials == 0 and again.winner is not None and again.run_id != wr.run_id


def test_ctrl_c_keeps_finished_trials_and_the_next_run_resumes(db_path, fast, monkeypatch):
    with pytest.raises(KeyboardInterrupt):
        tuner.tune_workload(WL, db=db_path, device="cpu", space=_space(),
                            runner=CountingRunner(interrupt_at=2))
    with storage.TuningDB(db_path) as db:
        (run,) = db.runs()
        assert run["status"] == "interrupted"
        first = db.trials()
        assert len(first) == 1 and first[0]["is_default"] == 1
        machine_id = run["machine_id"]
    st = tuner.optuna_storage(storage.open_db(db_path), tuner.get_tuner_settings())
    name = tuner.study_name_for(machine_id, WL, _space())
    assert torch.__version__ in name  # a software change starts a new study
    study = optuna.load_study(study_name=name, storage=st)
    states = sorted(t.state.name for t in study.trials)
    assert states.count("COMPLETE") == 1 and states.count("FAIL") == 1

    # a trial left RUNNING by a killed process: its pid is dead
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    zombie = study.ask()
    zombie.set_user_attr("pid", int(dead.stdout))
    zombie.set_user_attr("host", socket.gethostname())

    runner = CountingRunner()
    monkeypatch.setenv("XLSTM_AUTOTUNE_TUNE_REMEASURE_MAX", "0")  # no re-measuring: the counts are exact
    xk.reset_settings()
    res = tuner.tune_workload(WL, db=db_path, device="cpu", space=_space(), runner=runner)
    assert res.n_trials == 2  # only the two unfinished candidates
    # the default finished before Ctrl-C: only warmed up and re-timed now (1 + 3 calls), not re-evaluated,
    # then (when another config won) warmed up and timed in the fresh paired rounds of the speedup
    paired = 0 if res.winner.config == _space().default else 1 + tuner.get_tuner_settings().tune_speedup_rounds
    assert runner.calls[_space().default.short()] == 1 + 3 + paired
    with storage.TuningDB(db_path) as db:
        assert [r["status"] for r in db.runs()] == ["completed", "interrupted"]
        keys = [r["config_key"] for r in db.trials()]
        assert len(keys) == 3 == len(set(keys))
    study = optuna.load_study(study_name=name, storage=st)
    assert study.trials[zombie.number].state.name == "FAIL"
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 3


def test_tpe_reuses_duplicates_and_starts_with_the_default(db_path, fast):
    res = tuner.tune_workload(WL, db=db_path, device="cpu", space=_space(), sampler="tpe", n_trials=6)
    assert res.sampler == "tpe" and res.n_trials == 3  # the space is exhausted after 3 candidates
    with storage.TuningDB(db_path) as db:
        rows = db.trials()
        assert rows[0]["is_default"] == 1
        assert len({r["config_key"] for r in rows}) == len(rows) == 3  # duplicates not re-evaluated
    res = tuner.tune_workload(WL, db=db_path, device="cpu", space=_space(), sampler="tpe", n_trials=6)
    assert res.n_trials == 0  # resumed: nothing left


def test_tpe_tries_the_one_block_seeds_right_after_the_default(db_path, fast):
    wl = xk.Workload.parse("1,2,256,8,8,float32")
    space = SearchSpace.for_workload(wl, "cpu", families=["chunkwise"], heads_per_band=[2],
                                     chunk_sizes=[32, 64, 128], t_inners=[1, 2, 4])
    assert space.default.chunk_size == 64 and space.default.t_inner == 4  # already one block of 256
    assert [(c.chunk_size, c.t_inner) for c in space.seeds()] == [(128, 2)]
    assert SearchSpace.for_workload(xk.Workload.parse("1,2,1,8,8,float32,decode"), "cpu").seeds() == []

    def reference_runner(w, inputs, config):  # exact and compile-free: the order is what is tested
        return xk.mlstm_reference(*inputs)

    tuner.tune_workload(wl, db=db_path, device="cpu", space=space, sampler="tpe", n_trials=3,
                        runner=reference_runner)
    with storage.TuningDB(db_path) as db:
        first = [json.loads(r["config_json"]) for r in db.trials()[:2]]
    assert [(c["chunk_size"], c["t_inner"]) for c in first] == [(64, 4), (128, 2)]


def test_tpe_queues_an_unexplored_candidate_after_each_wasted_draw(db_path, fast):
    """Late in a small space TPE keeps proposing candidates it has: each such draw queues one that is
    neither evaluated nor queued, so exhausting a space of n candidates takes at most 2n Optuna trials.
    (Before, this space of 28 got 22 evaluated in its cap of 160 trials, each trial a round of storage
    statements: benchmarks/storage_statements.py.)"""
    wl = xk.Workload.parse("1,2,64,8,8,float32")
    space = SearchSpace.for_workload(wl, "cpu", families=["chunkwise", "recurrent"], heads_per_band=[1, 2],
                                     chunk_sizes=[8, 16, 32, 64], t_inners=[1, 2, 4, 8])
    n = len(space.candidates())

    def reference_runner(w, inputs, config):  # exact and compile-free: the draws are what is tested
        return xk.mlstm_reference(*inputs)

    res = tuner.tune_workload(wl, db=db_path, device="cpu", space=space, sampler="tpe", n_trials=n,
                              runner=reference_runner)
    study = optuna.load_study(study_name=res.study_name,
                              storage=tuner.optuna_storage(storage.open_db(db_path), tuner.get_tuner_settings()))
    wasted = [t for t in study.trials if "duplicate_of" in t.user_attrs or t.user_attrs.get("outside_space")]
    assert res.n_trials == n == 28
    assert len(study.trials) == n + len(wasted) <= 2 * n, (len(study.trials), n)


def test_queue_one_unexplored_skips_what_is_done_or_queued():
    """The helper both studies (kernel and model) call after a wasted draw: one trial, the first
    candidate of the seeded order that is neither done nor waiting; nothing once all are taken."""
    from tuner._study import queue_one_unexplored, unexplored_order

    cands = [(f"k{i}", {"x": i}) for i in range(5)] + [("k0", {"x": 99})]  # a repeated key counts once
    order = unexplored_order(cands, seed=0)
    assert sorted(k for k, _ in order) == ["k0", "k1", "k2", "k3", "k4"] and order == unexplored_order(cands, 0)
    study = optuna.create_study()
    done, waiting = {order[0][0]}, {order[1][0]}
    queue_one_unexplored(study, order, done, waiting, key_attr=True)
    queued = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(queued) == 1 and queued[0].user_attrs == {"config_key": order[2][0]}
    assert queued[0].system_attrs["fixed_params"] == order[2][1] and order[2][0] in waiting
    done |= {k for k, _ in order}
    queue_one_unexplored(study, order, done, waiting)
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 1


def test_decode_workload(db_path, fast):
    events = []
    wr = tuner.tune_workload("1,2,1,8,8,float32,decode", db=db_path, device="cpu", progress=events.append)
    assert events and all(e.config.startswith("step ") and e.best_config.startswith("step ") for e in events)
    assert wr.winner is not None and wr.speedup == 1.0
    assert _matches_reference(wr.winner.config, xk.Workload.parse("1,2,1,8,8,float32,decode")) < 1e-4
    assert wr.winner.tokens_per_s > 0


def test_decode_samples_time_bursts_of_back_to_back_steps():
    from tuner._evaluate import calls_per_sample

    settings = tuner.get_tuner_settings()
    assert calls_per_sample(xk.Workload.parse("1,2,1,8,8,float32,decode"), settings) == settings.tune_decode_burst > 1
    assert calls_per_sample(WL, settings) == 1
    calls = []
    timing = tuner.time_callable(lambda: calls.append(1), torch.device("cpu"), warmup=1, repeats=3,
                                 budget_s=0.0, calls=4)
    assert len(calls) == 1 + 3 * 4 and timing.median_ms >= 0


def test_failed_compile_is_a_failed_trial(db_path, fast):
    def broken(wl, inputs, config):
        if config.t_inner == 1 and config.family == "recurrent":
            raise RuntimeError("InductorError: number of constant buffers exceeds maximum supported (31)")
        return tuner.run_kernel(wl, inputs, config)

    res = tuner.tune_workload(WL, db=db_path, device="cpu", space=_space(), runner=broken)
    assert [(r.status, r.config.t_inner) for r in res.rejected] == [("failed", 1)]
    assert "constant buffers" in res.rejected[0].reason
    assert res.winner is not None
    assert not (res.winner.config.family == "recurrent" and res.winner.config.t_inner == 1)
    with storage.TuningDB(db_path) as db:
        (row,) = db.trials(status="failed")
        assert row["median_ms"] is None and row["compile_s"] is None and "constant buffers" in row["reason"]
        probes = db.db.execute("SELECT ok, t_inner_requested, error FROM probes ORDER BY id").fetchall()
        assert sorted(p[0] for p in probes) == [0, 1, 1]
        assert [p[1:] for p in probes if not p[0]][0][0] == 1 and "constant buffers" in [p for p in probes if not p[0]][0][2]


def test_buffer_limit_ratchets_t_inner_inside_a_study(db_path, fast, monkeypatch):
    """With Metal's limit emulated, a candidate whose kernel is over it is tuned at a lower T_inner."""
    monkeypatch.setenv("XLSTM_AUTOTUNE_MAX_BUFFERS", "31")
    xk.reset_settings()
    space = SearchSpace.for_workload(WL, "cpu", families=["recurrent"], heads_per_band=[2], t_inners=[4])
    res = tuner.tune_workload(WL, db=db_path, device="cpu", space=space)
    with storage.TuningDB(db_path) as db:
        rows = [r for r in db.trials() if json.loads(r["config_json"])["family"] == "recurrent"]
        probes = db.db.execute("SELECT t_inner_requested, t_inner_effective, ok FROM probes").fetchall()
    assert [(r["status"], r["t_inner_effective"]) for r in rows] == [("ok", 2)]
    assert (4, 2, 1) in [tuple(p) for p in probes]
    assert res.winner is not None
