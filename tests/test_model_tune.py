"""Model workloads: parsing, the model study end to end (gate, DB, Optuna), the profile round trip, CLI.

One tiny model (the ``tiny`` preset: tests/test_runner.py's shape, so the Inductor graphs are shared),
float32, B=1, a short prompt. The study's space is four candidates: state dtype {float32, bfloat16} x
threads {None, 1}; the runner factory compiles one runner per state dtype and hands the threads=1
float32 candidate a runner whose greedy tokens are deliberately wrong, so the gate's two rules each
reject a candidate and only the default passes. Two runners compile for the whole file.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from typer.testing import CliRunner

import storage
import tuner
import xlstm_kernels as xk
from conftest import settings_env
from flows.cli import EXIT_USAGE, app
from tuner._model_evaluate import default_runner_factory

PROMPT = 12
FAST = {  # small timing budgets: these tests check behaviour, never speed
    "TUNE_MODEL_DECODE_STEPS": "3", "TUNE_MODEL_GATE_STEPS": "3", "TUNE_MODEL_REPEATS": "3",
    "TUNE_WARMUP": "1", "TUNE_RETIME_ROUNDS": "2", "TUNE_MODEL_STEP_MODES": '["default"]',
    "TUNE_MODEL_THREADS": "[1]", "TUNE_MODEL_STATE_DTYPES": '["float32", "bfloat16"]',
    "TUNE_MODEL_PREFILL_WINNERS": "0", "TUNE_MODEL_FUSE_PROJECTIONS": "[false]", "DEVICE": "cpu",
}
cli = CliRunner()


# -- the model workload kind ------------------------------------------------------------------------

def test_model_workload_round_trip():
    w = xk.ModelWorkload.parse(" model:3f2a9c1b7d04e5f6 , 2, 512, bf16 ")
    assert (w.model_key, w.B, w.S, w.dtype) == ("3f2a9c1b7d04e5f6", 2, 512, "bfloat16")
    assert str(w) == "model:3f2a9c1b7d04e5f6,2,512,bfloat16"
    assert xk.ModelWorkload.parse(str(w)) == w


@pytest.mark.parametrize("text, needle", [
    ("1,4,512,64,64,float32", "expected 'model:<model key>,B,S,dtype'"),
    ("model:abc,1,512", "4 fields"),
    ("model:abc,1,x,float32", "B and S must be integers"),
    ("model:abc,0,512,float32", "B must be a positive integer"),
    ("model:abc,1,512,int8", "unknown dtype 'int8'"),
    ("model:../etc,1,512,float32", "model key must be"),
])
def test_model_workload_bad_input(text, needle):
    with pytest.raises(ValueError, match="model workload") as info:
        xk.ModelWorkload.parse(text)
    assert needle in str(info.value)


def test_a_low_precision_model_runs_eagerly_with_native_kernels():
    """The side by side's native row: a built bf16 model prefills and decodes eagerly (its states in
    bf16: xlstm's native step refuses float32 states beside bf16 inputs); float32 models keep float32."""
    tokens = torch.randint(0, 64, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    for dtype, want in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        model = xk.build_model("tiny", dtype=dtype)
        with torch.no_grad():
            logits, state = model(tokens)
            logits, state = model(logits[:, -1].argmax(-1)[:, None], state)
        assert logits.dtype == want and {x.dtype for st in state.values() for x in st} == {want}


def test_low_precision_gate_allows_the_dtypes_own_error(monkeypatch):
    """A bf16 model's tolerance is at least TOL_MODEL_EAGER_FACTOR times the eager bf16 model's own
    error vs the eager float32 model (prefill and the gate's decode steps); a float32 model's is fixed."""
    fields, wl = tuner.model_workload_for("tiny", 1, PROMPT, "bfloat16")
    settings = tuner.TunerSettings(tol_model_low_precision=1e-6, tol_model_eager_factor=3.0, tune_model_gate_steps=3)
    ev = tuner.ModelEvaluator(fields, wl, torch.device("cpu"), settings)
    ref_prefill, ref_steps, ref_tokens = ev.reference()
    with torch.no_grad():
        logits, state = ev.model(ev.tokens)
        errs = [tuner.logits_error(logits, ref_prefill)]
        for t, ref in enumerate(ref_steps):
            out, state = ev.model(ref_tokens[:, t:t + 1], state)
            errs.append(tuner.logits_error(out[:, -1], ref))
    assert 1e-4 < ev.eager_error == max(errs) and ev.tolerance == 3.0 * ev.eager_error
    loose = tuner.ModelEvaluator(fields, wl, torch.device("cpu"), settings.model_copy(update={"tol_model_low_precision": 0.5}))
    assert loose.tolerance == 0.5  # the fixed tolerance when it is the larger
    fields32, wl32 = tuner.model_workload_for("tiny", 1, PROMPT, "float32")
    exact = tuner.ModelEvaluator(fields32, wl32, torch.device("cpu"), settings)
    assert exact.eager_error is None and exact.tolerance == settings.tol_model_fp32


def test_graph_dimensions_are_tuned_on_cuda_only():
    """CUDA graphs of the step and of the prefill are dimensions on CUDA (both values) and fixed to the
    default's elsewhere, where asking for them is an error; every candidate is a distinct config."""
    w = xk.ModelWorkload.parse("model:3f2a9c1b7d04e5f6,1,64,float32")
    cuda = tuner.ModelSpace.build(w, "cuda", state_dtypes=["float32"], fuse_projections=[False])
    assert cuda.dims["prefill_graphs"] == (False, True) and cuda.dims["cuda_graphs"] == (True, False)
    keys = [tuner.run_config_key(c) for c in cuda.candidates()]
    assert len(keys) == len(set(keys)) == 2 * 2 * 2  # step modes x cuda_graphs x prefill_graphs
    assert {c.prefill_graphs for c in cuda.candidates()} == {False, True}
    cpu = tuner.ModelSpace.build(w, "cpu", state_dtypes=["float32"], fuse_projections=[False], threads=[1])
    assert cpu.dims["prefill_graphs"] == (False,) and not any(c.prefill_graphs for c in cpu.candidates())
    for kwargs, needle in ((dict(prefill_graphs=[True]), "prefill_graphs is tuned on CUDA only"),
                           (dict(cuda_graphs=[False]), "cuda_graphs is tuned on CUDA only")):
        with pytest.raises(ValueError, match=needle):
            tuner.ModelSpace.build(w, "cpu", **kwargs)
    with pytest.raises(ValueError, match="prefill_graphs choices must be booleans"):
        tuner.ModelSpace.build(w, "cuda", prefill_graphs=["yes"])


NATIVE_PREFILL = xk.MlstmKernelsPrefill("chunkwise--native_autograd", 16)


def test_child_failure_says_how_the_child_ended():
    """A crash that would kill the study's process (a Triton compile's abort) only ends a child, and
    the reason says how: the signal, the exit status with the last stderr line, or the timeout."""
    from tuner._external_check import child_failure

    py = sys.executable
    assert child_failure([py, "-c", "pass"], 30) is None
    assert child_failure([py, "-c", "import os; os.abort()"], 30).startswith("was killed by SIGABRT")
    assert child_failure([py, "-c", "raise SystemExit('bad shape')"], 30) == "exited with status 1: bad shape"
    assert child_failure([py, "-c", "import time; time.sleep(20)"], 0.5) == "did not finish within 0.5 s"


def test_mlstm_kernels_prefill_candidates_and_their_space():
    """mlstm_kernels kernels as prefill candidates: none by default off CUDA; the setting's list where
    it can run, an error naming one that cannot; the space encodes and decodes them like kernel configs."""
    base = tuner.get_tuner_settings().model_copy(update={"tune_model_mlstm_kernels": None})
    cpu = torch.device("cpu")
    assert tuner.mlstm_kernels_candidates(cpu, base) == []
    native = base.model_copy(update={"tune_model_mlstm_kernels": ["chunkwise--native_autograd@16"]})
    assert tuner.mlstm_kernels_candidates(cpu, native) == [NATIVE_PREFILL]
    if not torch.cuda.is_available():
        triton = base.model_copy(update={"tune_model_mlstm_kernels": ["chunkwise--triton_xl_chunk@128"]})
        with pytest.raises(ValueError, match="tune_model_mlstm_kernels: mlstm_kernels has no kernel "
                           "'chunkwise--triton_xl_chunk' on this machine"):
            tuner.mlstm_kernels_candidates(cpu, triton)
    with pytest.raises(ValueError, match=r"(?s)tune_model_mlstm_kernels.*'<chunkwise kernel>@<chunk size>', got 'x'"):
        tuner.TunerSettings(tune_model_mlstm_kernels=["x"])
    w = xk.ModelWorkload.parse("model:3f2a9c1b7d04e5f6,1,64,float32")
    # with a head shape each candidate first runs once in a child process: it ran, or it is an error
    assert tuner.mlstm_kernels_candidates(cpu, native, (1, 2, 40, 16, 32), "float32") == [NATIVE_PREFILL]
    hasty = native.model_copy(update={"tune_model_mlstm_kernels_check_s": 0.01})
    with pytest.raises(ValueError, match=r"tune_model_mlstm_kernels: a trial run of mlstm_kernels:native_autograd@L16 "
                       r"at B=1 NH=2 S=40 DHQK=16 DHV=32 float32 on cpu in a child process did not finish within 0.01 s"):
        tuner.mlstm_kernels_candidates(cpu, hasty, (1, 2, 40, 16, 32), "float32")
    space = tuner.ModelSpace.build(w, "cpu", prefills=[NATIVE_PREFILL], step_modes=["default"], threads=[1],
                                   state_dtypes=["float32"], fuse_projections=[False])
    assert space.dims["prefill"] == (None, NATIVE_PREFILL)
    ext = [c for c in space.candidates() if c.prefill == NATIVE_PREFILL]
    assert len(ext) == 2  # threads None and 1
    for cfg in ext:
        assert space.suggest(optuna.trial.FixedTrial(space.params_of(cfg))) == cfg


def test_model_spec_errors(tmp_path):
    with pytest.raises(tuner.UnknownModel, match="neither a preset"):
        tuner.model_workload_for("no-such-model", 1, 8, "float32")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**xk.models.presets.PRESETS["tiny"], "hidden_size": 3}))
    with pytest.raises(tuner.UnknownModel, match=r"unknown xLSTMLargeConfig fields \['hidden_size'\]"):
        tuner.model_workload_for(str(bad), 1, 8, "float32")
    bad.write_text(json.dumps({"embedding_dim": 128}))
    with pytest.raises(tuner.UnknownModel, match="missing required fields"):
        tuner.model_workload_for(str(bad), 1, 8, "float32")
    good = tmp_path / "tiny.json"
    good.write_text(json.dumps(xk.models.presets.PRESETS["tiny"]))
    # a JSON file of the same fields is the same model: the same key
    assert tuner.model_workload_for(str(good), 1, 8, "float32")[1] == tuner.model_workload_for("tiny", 1, 8, "float32")[1]


# -- the model study --------------------------------------------------------------------------------

class WrongTokens:
    """A real runner whose greedy generation is deliberately wrong (logits untouched): the last token
    of every sequence moves to the next vocabulary id."""

    def __init__(self, runner, vocab: int) -> None:
        self.runner, self.vocab = runner, vocab

    def prefill(self, *a, **kw):
        return self.runner.prefill(*a, **kw)

    def decode(self, *a, **kw):
        return self.runner.decode(*a, **kw)

    def generate(self, tokens, n):
        out = self.runner.generate(tokens, n).clone()
        out[:, -1] = (out[:, -1] + 1) % self.vocab
        return out


@pytest.fixture(scope="module")
def study(tmp_path_factory, prefect_harness):
    """The tiny model's tuning run into a temporary HOME (DB, Optuna storage, profile), run once through
    the ``model-autotune`` flow (``tuner.autotune_model``: study, then the winner published):
    (home, the study's ``ModelWorkloadResult``, the flow's final state)."""
    from flows.model_flow import model_autotune

    home = tmp_path_factory.mktemp("model-home")
    mp = pytest.MonkeyPatch()
    compiled: dict[str, object] = {}
    studies: list[tuner.ModelWorkloadResult] = []

    def factory(model, config, B, max_len):
        if config.state_dtype not in compiled:  # threads do not change the graphs: share them
            compiled[config.state_dtype] = default_runner_factory(model, config.replace(threads=None), B, max_len)
        runner = compiled[config.state_dtype]
        if config.threads == 1 and config.state_dtype == "float32":
            return WrongTokens(runner, xk.models.presets.PRESETS["tiny"]["vocab_size"])
        return runner

    def tune(model, **kwargs):  # the real tuner, with the factory above under the gate
        studies.append(tuner.tune_model(model, runner_factory=factory, **kwargs))
        return studies[-1]

    with settings_env(mp, {"HOME": str(home), "DEVICE": "cpu", **FAST}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", xk.ProfileWarning)  # no kernel profile in this HOME
            state = model_autotune(model="tiny", batch_size=1, prompt_len=PROMPT, tune_fn=tune, return_state=True)
        yield home, studies[0], state
    mp.undo()


def test_the_run_publishes_the_winner_as_a_model_entry(study):
    """The flow over ``tuner.autotune_model``: one run, its study's winner published as the profile's
    only entry, the summary artifact's content."""
    home, result, state = study
    assert state.is_completed(), state.message
    run = state.result()
    assert run.failed == {} and run.run_id == result.run_id and run.result == result.to_dict()
    profile = xk.load_profile(run.profile_path)
    assert Path(run.profile_path).parent == home / "profiles" and run.profile_version == profile.publication.version == 1
    assert profile.entries == [] and profile.model_entries == [tuner.model_profile_entry(result)]
    md = run.summary_markdown()
    assert f"winner `{result.winner.config.short()}`" in md and "version 1" in md and md.count("| rejected |") == 3


def test_study_picks_the_only_candidate_that_passes(study):
    _, result, _ = study
    assert result.n_candidates == 4 and result.sampler == "grid" and result.n_trials == 4
    assert result.winner is not None and result.winner.config == xk.ModelRunConfig()
    assert result.speedup == pytest.approx(1.0)  # the default is the winner: re-timed once
    assert result.winner.logits_error < 1e-4 and result.winner.greedy_match
    assert result.winner.ttft_ms > 0 and result.winner.decode_tokens_per_s > 0


def test_gate_rejects_wrong_state_dtype_and_wrong_tokens(study):
    _, result, _ = study
    by = {(r.config.state_dtype, r.config.threads): r for r in result.rejected}
    assert set(by) == {("bfloat16", None), ("bfloat16", 1), ("float32", 1)}
    assert all(r.status == "rejected" for r in by.values())
    assert "exceeds the float32 tolerance" in by[("bfloat16", None)].reason
    assert "greedy tokens differ" in by[("float32", 1)].reason
    assert by[("float32", 1)].logits_error < 1e-4  # its logits are right: the token rule caught it


def test_study_lands_in_the_db(study):
    home, result, _ = study
    with storage.open_db(home / "tuning.db") as db:
        rows = storage.model_trials(db, run_id=result.run_id)
        assert len(rows) == 4 and {r["workload"] for r in rows} == {str(result.workload)}
        rejected = [r for r in rows if r["status"] == "rejected"]
        assert len(rejected) == 3 and all(r["reason"] and r["objective_ms"] is None for r in rejected)
        ok = [r for r in rows if r["status"] == "ok"]
        assert len(ok) == 1 and ok[0]["is_default"] == 1 and ok[0]["ttft_ms"] > 0
        best = storage.best_model(db, result.workload, db.run(result.run_id)["machine_id"])
        assert best.config == xk.ModelRunConfig().to_dict() and best.run_id == result.run_id
        assert db.run(result.run_id)["status"] == "completed"
        assert db.trials(run_id=result.run_id) == []  # the kernel trials' table holds none of them


# -- the profile round trip -------------------------------------------------------------------------

def _entry(workload: xk.ModelWorkload, config: xk.ModelRunConfig) -> xk.ModelProfileEntry:
    return xk.ModelProfileEntry(workload=str(workload), config=config.to_dict(), ttft_s=0.01,
                                decode_tokens_per_s=50.0, objective_s=0.1, decode_steps=32,
                                speedup_vs_default=1.3, logits_error=1e-6, greedy_match=True)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    with settings_env(monkeypatch, {"HOME": str(tmp_path), "DEVICE": "cpu"}, unset=("PROFILE_PATH", "USE_PROFILE")):
        yield tmp_path


def test_profile_round_trip_picks_the_entry(home, study):
    _, result, _ = study
    model = xk.build_model("tiny")
    tuned = xk.ModelRunConfig(step_compile_mode="max-autotune-no-cudagraphs", threads=1)
    wl = xk.ModelWorkload(xk.model_key(model), 1, 256, "float32")
    entries = [_entry(wl, tuned), tuner.model_profile_entry(result)]  # the study's winner: another prompt bucket
    published = tuner.publish_entries(xk.fingerprint("cpu"), [], model_entries=entries, db=home / "tuning.db")
    assert json.loads(published.path.read_text())["model_entries"][0]["workload"] == str(wl)
    xk.reload_profile()
    with warnings.catch_warnings():
        warnings.simplefilter("error", xk.ProfileWarning)
        assert xk.compile_model(model, max_seq_len=256).config == tuned  # exact
        assert xk.compile_model(model, max_seq_len=400).config == tuned  # nearest bucket (256 vs 12)
        assert xk.compile_model(model, max_seq_len=16).config == xk.ModelRunConfig()  # the study's entry
    choice = xk.explain_model_config(model, batch_size=1, prompt_len=400)
    assert choice.source == "nearest" and choice.entry.workload == str(wl) and "nearest prompt bucket" in str(choice)
    # a kernel tune publishing afterwards keeps the model entries
    kernel = xk.ProfileEntry(workload="1,2,16,32,64,float32,prefill", config=xk.DEFAULT_CONFIG.to_dict(),
                             t_inner_requested=4, t_inner_effective=4, median_s=1e-3, tokens_per_s=1e4,
                             speedup_vs_default=1.0, equivalence_error=1e-6)
    tuner.publish_entries(xk.fingerprint("cpu"), [kernel], db=home / "tuning.db")
    assert {e.workload for e in xk.load_profile(published.path).model_entries} == {e.workload for e in entries}


def test_missing_model_entry_falls_back_with_one_warning(home):
    model = xk.build_model("tiny")
    other = xk.ModelWorkload("0123456789abcdef", 1, 256, "float32")  # another model's entry only
    tuner.publish_entries(xk.fingerprint("cpu"), [], model_entries=[_entry(other, xk.ModelRunConfig(threads=1))],
                          db=home / "tuning.db")
    xk.reload_profile()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = xk.compile_model(model, max_seq_len=256)
        second = xk.compile_model(model, max_seq_len=256)
    msgs = [str(w.message) for w in caught if issubclass(w.category, xk.ProfileWarning)]
    assert first.config == second.config == xk.ModelRunConfig()
    assert len(msgs) == 1 and "no model entry for model" in msgs[0] and "tune --model" in msgs[0]


def test_an_entry_whose_mlstm_kernels_prefill_cannot_run_here_falls_back_with_one_warning(home):
    """A model entry naming an mlstm_kernels kernel this machine lacks (a Triton kernel off CUDA) gives
    the defaults with one warning saying so; one naming a kernel that runs here is used as it is."""
    if torch.cuda.is_available():
        pytest.skip("the Triton kernels run on this machine")
    model = xk.build_model("tiny")
    key = xk.model_key(model)
    triton = xk.ModelRunConfig(prefill=xk.MlstmKernelsPrefill("chunkwise--triton_xl_chunk", 128))
    native = xk.ModelRunConfig(prefill=NATIVE_PREFILL)
    entries = [_entry(xk.ModelWorkload(key, 1, 256, "float32"), triton),
               _entry(xk.ModelWorkload(key, 2, 256, "float32"), native)]
    tuner.publish_entries(xk.fingerprint("cpu"), [], db=home / "tuning.db", model_entries=entries)
    xk.reload_profile()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = xk.explain_model_config(model, batch_size=1, prompt_len=256)
        second = xk.explain_model_config(model, batch_size=1, prompt_len=300)
    msgs = [str(w.message) for w in caught if issubclass(w.category, xk.ProfileWarning)]
    assert (first.source, first.config) == (second.source, second.config) == ("unusable-entry", xk.ModelRunConfig())
    assert len(msgs) == 1 and "cannot run here: mlstm_kernels has no kernel 'chunkwise--triton_xl_chunk'" in msgs[0]
    assert xk.explain_model_config(model, batch_size=2, prompt_len=256).config == native


def test_profiles_without_model_entries_keep_their_checksum(home):
    kernel = xk.ProfileEntry(workload="1,2,16,32,64,float32,prefill", config=xk.DEFAULT_CONFIG.to_dict(),
                             t_inner_requested=4, t_inner_effective=4, median_s=1e-3, tokens_per_s=1e4,
                             speedup_vs_default=1.0, equivalence_error=1e-6)
    path = xk.publish_profile(xk.Profile.for_machine(xk.fingerprint("cpu"), [kernel])).path
    data = json.loads(path.read_text())
    assert "model_entries" not in data  # the file an older xlstm_kernels wrote, and still reads
    # ... with the checksum the older code computes (of the body without publication)
    body = {k: v for k, v in data.items() if k != "publication"}
    old = "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert data["publication"]["checksum"] == old
    assert xk.load_profile(path).model_entries == []


# -- the command line -------------------------------------------------------------------------------

def test_cli_help_names_the_model_options():
    out = cli.invoke(app, ["tune", "--help"])
    assert out.exit_code == 0 and "--model" in out.output and "--prompt" in out.output
    out = cli.invoke(app, ["generate", "--help"])
    assert out.exit_code == 0 and "--prompt-len" in out.output and "--new-tokens" in out.output


@pytest.mark.parametrize("args, needle", [
    (["tune", "--model", "no-such-model"], "neither a preset"),
    (["tune", "--model", "tiny", "--dtype", "int8"], "unknown dtype"),
    (["tune", "--model", "tiny", "-w", "1,4,512,64,64,float32"], "without --workload"),
    (["generate", "--model", "no-such-model"], "neither a preset"),
])
def test_cli_bad_model_input_is_usage_error(home, args, needle):
    out = cli.invoke(app, args)
    assert out.exit_code == EXIT_USAGE, out.output
    assert needle in out.output and "Traceback" not in out.output


def test_a_v1_database_gains_the_model_tables(db_path):
    import sqlite3

    from storage._schema import MIGRATIONS

    conn = sqlite3.connect(db_path)
    for stmt in MIGRATIONS[0]:
        conn.execute(stmt)
    conn.execute("INSERT INTO workloads (spec, B, NH, S, DHQK, DHV, dtype, mode) "
                 "VALUES ('1,4,8,16,16,float32,prefill', 1, 4, 8, 16, 16, 'float32', 'prefill')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with storage.TuningDB(db_path) as db:
        assert db.schema_version == storage.SCHEMA_VERSION >= 3
        assert {"model_trials", "model_results"} <= set(db.db.table_names())
        assert db.db["workloads"].count == 1  # the v1 rows are kept


def test_prefill_candidates_are_this_machines_winners_for_the_head_shape(home, fresh_db):
    fields = xk.models.presets.PRESETS["tiny"]  # NH 2, DHQK 32, DHV 64
    fp = xk.fingerprint("cpu")
    mid = fresh_db.record_machine(fp)
    run_id = fresh_db.start_run(mid, device="cpu", torch_version=fp.torch, triton=None)
    won = {"db": xk.KernelConfig("chunkwise", chunk_size=16, t_inner=2),
           "other head": xk.KernelConfig("chunkwise", chunk_size=32, t_inner=1),
           "unbandable": xk.KernelConfig("chunkwise", chunk_size=8, t_inner=1, heads_per_band=4)}
    for cfg, wl in ((won["db"], "1,2,64,32,64,float32"), (won["other head"], "1,2,64,16,64,float32"),
                    (won["unbandable"], "1,8,64,32,64,float32")):
        fresh_db.record_result(run_id=run_id, workload=xk.Workload.parse(wl), machine_id=mid, config=cfg,
                               trial_id=None, t_inner_effective=cfg.t_inner, median_ms=1.0, spread_ms=0.1,
                               tokens_per_s=64e3, default_median_ms=None, speedup=None, equivalence_error=1e-6,
                               compile_s=None, n_trials=1, n_rejected=0, n_failed=0, retime=[])
    in_profile = xk.KernelConfig("recurrent", chunk_size=16, t_inner=4)
    entry = xk.ProfileEntry(workload="1,2,128,32,64,float32,prefill", config=in_profile.to_dict(),
                            t_inner_requested=4, t_inner_effective=4, median_s=1e-3, tokens_per_s=1e5,
                            speedup_vs_default=1.2, equivalence_error=1e-6)
    xk.publish_profile(xk.Profile.for_machine(fp, [entry]))
    settings = tuner.get_tuner_settings().model_copy(update={"tune_model_prefill_winners": 3})
    found = tuner.prefill_candidates(fresh_db, mid, fields, "float32", settings)
    assert found == [won["db"], in_profile]  # DB results first, then the profile; other shapes left out
    assert tuner.prefill_candidates(fresh_db, mid, fields, "bfloat16", settings) == []
    assert tuner.prefill_candidates(fresh_db, mid, fields, "float32",
                                    settings.model_copy(update={"tune_model_prefill_winners": 1})) == [won["db"]]
