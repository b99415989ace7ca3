"""CPU thread count as a tuning dimension and a runtime context (issue 16): a tuned CPU study records
the count, a profile entry's count is applied around ``xk.mlstm`` (compiled for it, restored after),
and profiles written before the field existed still load.

Compiles: the study runs ``tests/test_trust.py``'s workload and kernels (chunkwise L64, effective T1 at
S=16, and recurrent hpb2 T1) at the suite's count and at one thread, as ``test_trust.py``'s one-thread
study already does. The runtime tests need a call the fast path serves (one band, one block, no
padding): ``tests/test_fastpath.py``'s ``CHUNK_T1`` on its one-call shape, plus that kernel at one
thread: the one compile key this file adds.
"""

from __future__ import annotations

import json

import pytest
import torch

import storage
import tuner
import xlstm_kernels as xk
from conftest import CANON_RTOL, CHUNK_T1, make_inputs, rel_err, settings_env
from profile_fixtures import entry, home, make_profile  # noqa: F401 - fixture
from xlstm_kernels.kernels import fastpath
from xlstm_kernels.kernels.compiler import CompiledKernel

WL = xk.Workload.parse("1,2,16,8,8,float32")
REC_T1 = xk.KernelConfig("recurrent", chunk_size=16, heads_per_band=2, t_inner=1)
ONE_CALL = xk.Workload(B=2, NH=4, S=8, DHQK=16, DHV=32)  # tests/test_fastpath.py's: one compiled call
CALLER = 2  # the caller's count; any count other than the entry's 1 (settable on a one-core box too)


@pytest.fixture()
def caller_threads():
    """torch's count set to CALLER for the test, the session's count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(CALLER)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def seen(monkeypatch) -> list[tuple[int, int]]:
    """(torch's count, the kernel's CompileKey.threads) inside every CPU kernel call, full and fast path
    alike (both run through ``CompiledKernel._in_precision``); the real kernel still runs."""
    calls: list[tuple[int, int]] = []
    real = CompiledKernel._in_precision

    def spy(self, run, args):
        calls.append((torch.get_num_threads(), self.key.threads))
        return real(self, run, args)

    monkeypatch.setattr(CompiledKernel, "_in_precision", spy)
    return calls


def _inputs() -> tuple[torch.Tensor, ...]:
    return make_inputs(ONE_CALL.B, ONE_CALL.NH, ONE_CALL.S, ONE_CALL.DHQK, ONE_CALL.DHV)





def test_profile_entry_threads_run_the_call_with_that_count_and_restore_the_callers(
        home, caller_threads, seen):
    xk.publish_profile(make_profile([entry(str(ONE_CALL), CHUNK_T1.replace(threads=1))]))
    x = _inputs()
    assert xk.explain_config(*x[:3]).config.threads == 1
    outs = []
    for n in range(3):  # the first call compiles and is remembered; the repeats take the fast path
        outs.append(xk.mlstm(*x)[0])
        assert torch.get_num_threads() == CALLER, "the caller's count must be restored after the call"
        if n == 0:
            assert fastpath._entry(x + (None,) * 3, 1e-6, None) is not None, "the repeats must be fast calls"
    assert len(seen) == 3 and set(seen) == {(1, 1)}, seen
    seen.clear()
    h_caller = xk.mlstm(*x, config=CHUNK_T1)[0]  # threads=None: the caller's count, its own kernel
    assert set(seen) == {(CALLER, CALLER)}, seen
    assert all(rel_err(h, h_caller) < CANON_RTOL for h in outs)


def test_a_caller_that_changes_its_count_gets_the_kernel_compiled_for_it(caller_threads, seen):
    """threads=None: a repeat call after ``torch.set_num_threads`` leaves the fast path's remembered
    kernel (compiled for the old count) for the one compiled for the new count."""
    x = _inputs()
    for _ in range(2):
        xk.mlstm(*x, config=CHUNK_T1)
    assert fastpath._entry(x + (None,) * 3, 1e-6, CHUNK_T1) is not None
    torch.set_num_threads(1)
    seen.clear()
    xk.mlstm(*x, config=CHUNK_T1)
    assert set(seen) == {(1, 1)}, seen


def test_tuned_cpu_study_records_the_thread_count(db_path, monkeypatch):
    env = dict(TUNE_FAMILIES='["chunkwise","recurrent"]', TUNE_CHUNK_SIZES="[64]", TUNE_HEADS_PER_BAND="[2]",
               TUNE_T_INNERS="[1]", TUNE_THREADS="[1]", TUNE_REPEATS="4", TUNE_WARMUP="1",
               TUNE_RETIME_ROUNDS="3", TUNE_SPEEDUP_ROUNDS="3")
    with settings_env(monkeypatch, env):
        settings = tuner.get_tuner_settings()
        space = tuner.SearchSpace.from_settings(WL, "cpu", settings)
        assert space.dims["threads"] == ((1,) if torch.get_num_threads() != 1 else ())
        res = tuner.tune_workload(WL, db=db_path, device="cpu", settings=settings)
    assert res.winner is not None
    with storage.TuningDB(db_path) as db:
        rows = db.db.execute("SELECT config_json, config_key, status FROM trials WHERE run_id = ?",
                             [res.run_id]).fetchall()
    configs = [xk.KernelConfig.from_dict(json.loads(r[0])) for r in rows]
    assert {c.threads for c in configs} == {None, 1}, configs
    assert {(c.family, c.threads) for c in configs} == {(f, n) for f in ("chunkwise", "recurrent") for n in (None, 1)}
    assert all(('"threads": 1' in r[1]) == (c.threads == 1) for r, c in zip(rows, configs))
    assert all(r[2] == "ok" for r in rows)


def test_old_profile_entries_without_threads_load_as_unchanged(home):
    old = entry(str(WL), REC_T1)
    assert "threads" not in old["config"]  # what every profile written before the field holds
    xk.publish_profile(make_profile([old]))
    (loaded,) = xk.loaded_profile().entries
    assert loaded.kernel_config == REC_T1 and loaded.kernel_config.threads is None
    pinned = REC_T1.replace(threads=3)
    assert xk.KernelConfig.from_dict(pinned.to_dict()) == pinned and pinned.to_dict()["threads"] == 3
    assert pinned.short().endswith(" threads=3") and "threads" not in REC_T1.short()
    with pytest.raises(ValueError, match="threads"):
        xk.KernelConfig(threads=0)


def test_thread_choices_offer_the_other_cpu_counts_and_nothing_off_the_cpu():
    n = torch.get_num_threads()
    assert tuner.thread_choices("cpu", [1, 2, 3, 2]) == tuple(t for t in (1, 2, 3) if t != n)
    assert tuner.thread_choices("cpu", []) == ()
    assert tuner.thread_choices("cpu", None, max_threads=1) == (() if n == 1 else (1,))
    assert tuner.thread_choices("cuda") == () and tuner.thread_choices("mps", []) == ()
    with pytest.raises(ValueError, match="CPU only"):
        tuner.thread_choices("cuda", [1])
