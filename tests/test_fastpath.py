"""Repeat calls served whole by one compiled graph skip the bookkeeping (xlstm_kernels/kernels/fastpath.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import CHUNK_T1, REC_T1, REF_RTOL, make_inputs, rel_err
from profile_fixtures import entry, home, make_profile  # noqa: F401 - fixture

import xlstm_kernels as xk
from xlstm_kernels import api
from xlstm_kernels.kernels import fastpath
from xlstm_kernels.kernels.compiler import CACHE

# S = one chunk of CHUNK_T1: one band, one block, no padding; the compile key is the suite's CHUNK_T1 key
ONE_CALL = dict(B=2, NH=4, S=8, DHQK=16, DHV=32)


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    """Each test starts with nothing remembered, whatever ran before it."""
    monkeypatch.setattr(fastpath, "_MEMO", {})


@pytest.fixture()
def counted_validation(monkeypatch):
    """Calls that reach ``xk.mlstm``'s input validation (the full path)."""
    seen = []
    check = api.check_sequence_inputs
    monkeypatch.setattr(api, "check_sequence_inputs", lambda *a: seen.append(a) or check(*a))
    return seen


def _same(a, b) -> bool:
    return torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


def test_repeat_call_skips_validation_with_the_same_results(counted_validation):
    x = make_inputs(**ONE_CALL)
    first = xk.mlstm(*x, config=CHUNK_T1)
    assert len(counted_validation) == 1
    again = xk.mlstm(*x, config=CHUNK_T1)
    assert len(counted_validation) == 1  # the repeat took the fast path
    assert _same(first, again)
    h_ref, st_ref = xk.mlstm_reference(*x)
    assert rel_err(again[0], h_ref) < REF_RTOL[torch.float32]
    assert all(rel_err(a, b) < REF_RTOL[torch.float32] for a, b in zip(again[1], st_ref))
    assert torch.equal(xk.mlstm(*x, config=CHUNK_T1, return_last_states=False), first[0])

    # carried-in states: a signature of its own, remembered after its first (full) call
    states = first[1]
    carried = xk.mlstm(*x, *states, config=CHUNK_T1)
    assert _same(xk.mlstm(*x, *states, config=CHUNK_T1), carried)
    assert len(counted_validation) == 3
    h_ref2, _ = xk.mlstm_reference(*x, *st_ref)
    assert rel_err(carried[0], h_ref2) < REF_RTOL[torch.float32]


def test_other_inputs_still_reach_validation(counted_validation):
    """Anything that differs from a remembered call (a dtype, a missing state, eps, config) takes the full path."""
    q, k, v, i, f = make_inputs(**ONE_CALL)
    xk.mlstm(q, k, v, i, f, config=CHUNK_T1)
    xk.mlstm(q, k, v, i, f, config=CHUNK_T1)
    before = len(counted_validation)
    with pytest.raises(ValueError, match="eps"):
        xk.mlstm(q, k, v, i, f, eps=-1.0, config=CHUNK_T1)
    with pytest.raises(ValueError, match="dtype"):
        xk.mlstm(q, k, v.double(), i, f, config=CHUNK_T1)
    with pytest.raises(ValueError, match="n_initial"):
        xk.mlstm(q, k, v, i, f, torch.zeros(2, 4, 16, 32), None, torch.zeros(2, 4, 1), config=CHUNK_T1)
    with pytest.raises(ValueError, match="config"):
        xk.mlstm(q, k, v, i, f, config=["chunkwise"])
    assert len(counted_validation) == before + 4


def test_a_changed_profile_or_cleared_cache_is_not_bypassed(monkeypatch):
    """config=None entries are used only while the runtime still picks their config; a cleared
    compile cache drops every entry."""
    x = make_inputs(**ONE_CALL)
    xk.mlstm(*x, config=CHUNK_T1)  # the kernel learns its direct call
    args = x + (None, None, None)
    fastpath.remember(args, 1e-6, None, CHUNK_T1)
    monkeypatch.setattr(fastpath, "config_for", lambda q, v, mode: CHUNK_T1)
    assert fastpath.run(args, 1e-6, None) is not None
    monkeypatch.setattr(fastpath, "config_for", lambda q, v, mode: xk.DEFAULT_CONFIG)
    assert fastpath.run(args, 1e-6, None) is None
    assert fastpath.run(args, 1e-6, CHUNK_T1) is not None
    monkeypatch.setattr(CACHE, "generation", CACHE.generation + 1)
    assert fastpath.run(args, 1e-6, CHUNK_T1) is None


def _kernel_calls(config: xk.KernelConfig, x) -> int:
    from xlstm_kernels.kernels.drivers import kernel_key, plan

    B, NH, S, DHQK = x[0].shape
    key = kernel_key(config, plan(config, NH, S), B, DHQK, x[2].shape[-1], torch.float32, torch.device("cpu"), 1e-6)
    return CACHE.get(key).calls


def test_a_republished_profile_takes_effect_on_the_fast_path(home, counted_validation):
    """A real profile: config=None repeats go fast; after a new profile is published and reloaded, the
    same call runs the new entry's kernel (not the remembered one)."""
    x = make_inputs(**ONE_CALL)
    workload = "2,4,8,16,32,float32,prefill"
    xk.publish_profile(make_profile([entry(workload, CHUNK_T1)]))
    xk.reload_profile()
    first = xk.mlstm(*x)
    xk.mlstm(*x)
    assert len(counted_validation) == 1, "the repeat took the fast path"
    assert _same(first, xk.mlstm(*x, config=CHUNK_T1))
    xk.publish_profile(make_profile([entry(workload, REC_T1)]))
    xk.reload_profile()
    before = _kernel_calls(REC_T1, x)
    after_reload = xk.mlstm(*x)
    assert _kernel_calls(REC_T1, x) > before, "the reloaded profile's config must run"
    assert _same(after_reload, xk.mlstm(*x, config=REC_T1))
    assert not torch.equal(after_reload[0], first[0])  # another family: other rounding


def test_repeat_step_skips_validation_with_the_same_results(monkeypatch):
    """A decode step with a remembered signature goes straight to its graph; anything else is validated."""
    seen = []
    check = api.check_step_inputs
    monkeypatch.setattr(api, "check_step_inputs", lambda *a: seen.append(a) or check(*a))
    q, k, v, i, f = make_inputs(**ONE_CALL)
    B, NH, S, DHQK = q.shape
    c, n, m = torch.zeros(B, NH, DHQK, v.shape[-1]), torch.zeros(B, NH, DHQK), torch.zeros(B, NH, 1)
    hs = []
    for t in range(S):  # step 0: contiguous C; step 1: C as the step returns it; later steps repeat step 1
        h, (c, n, m) = xk.mlstm_step(q[:, :, t], k[:, :, t], v[:, :, t], i[:, :, t, None], f[:, :, t, None], c, n, m)
        hs.append(h)
    assert len(seen) == 2
    h_ref, st_ref = xk.mlstm_reference(q, k, v, i, f)
    assert rel_err(torch.stack(hs, 2), h_ref) < REF_RTOL[torch.float32]
    assert all(rel_err(a, b) < REF_RTOL[torch.float32] for a, b in zip((c, n, m), st_ref))
    step = (q[:, :, 0], k[:, :, 0], v[:, :, 0], i[:, :, :1], f[:, :, :1])
    with pytest.raises(ValueError, match="m has shape"):
        xk.mlstm_step(*step, c, n, m[:, :2])
    with pytest.raises(ValueError, match="eps"):
        xk.mlstm_step(*step, c, n, m, eps=-1.0)
    assert len(seen) == 4


def test_direct_calls_off_turns_the_fast_path_off(monkeypatch, counted_validation):
    """With DIRECT_CALLS off every call takes the full path, even on a kernel that learned direct calls."""
    from conftest import settings_env

    x = make_inputs(**ONE_CALL)
    xk.mlstm(*x, config=CHUNK_T1)
    with settings_env(monkeypatch, {"DIRECT_CALLS": "false"}):
        before = len(counted_validation)
        first = xk.mlstm(*x, config=CHUNK_T1)
        assert _same(xk.mlstm(*x, config=CHUNK_T1), first)
        assert len(counted_validation) == before + 2
