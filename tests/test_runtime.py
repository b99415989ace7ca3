"""The runtime: config=None takes the profile entry by the documented rule; bad profiles warn once and
fall back to the default config, never crash, never change results."""

from __future__ import annotations

import warnings

import pytest
import torch

import xlstm_kernels as xk
from conftest import CONFIGS, REF_RTOL, SHAPE, make_inputs, rel_err
from profile_fixtures import entry, home, make_profile  # noqa: F401 - fixture
from xlstm_kernels.kernels.compiler import CACHE
from xlstm_kernels.kernels.drivers import kernel_key, plan
from xlstm_kernels.profiles.runtime import choose

W_SHAPE = "2,4,37,16,32,float32,prefill"  # conftest's SHAPE as a workload
REC_T4 = CONFIGS["rec_t4"]


def _tensors(B, NH, S, DHQK, DHV, dtype=torch.float32, decode=False):
    if decode:
        return torch.zeros(B, NH, DHQK, dtype=dtype), torch.zeros(B, NH, DHV, dtype=dtype)
    return torch.zeros(B, NH, S, DHQK, dtype=dtype), torch.zeros(B, NH, S, DHV, dtype=dtype)


def _explain(*shape, **kw):
    q, v = _tensors(*shape, **kw)
    return xk.explain_config(q, q, v)


def _no_profile_warnings(record):
    return [w for w in record if issubclass(w.category, xk.ProfileWarning)]


def test_lookup_rule_exact_nearest_default(home):
    hpb3 = xk.KernelConfig("recurrent", chunk_size=8, t_inner=2, heads_per_band=3)
    c16 = xk.KernelConfig("chunkwise", chunk_size=16, t_inner=2)
    c128 = xk.KernelConfig("chunkwise", chunk_size=32, t_inner=4, heads_per_band=1)
    xk.publish_profile(make_profile([
        entry(W_SHAPE, REC_T4),
        entry("1,4,16,16,32,float32,prefill", c16),
        entry("1,4,128,16,32,float32,prefill", c128),
        entry("2,4,64,16,32,float32,prefill", hpb3),  # hpb 3 does not divide NH 4: chosen only for NH 6 below
        entry("1,4,1,16,32,float32,decode", xk.KernelConfig(compile_mode="default", t_inner=1)),
    ]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", xk.ProfileWarning)
        exact = _explain(2, 4, 37, 16, 32)
        assert (exact.source, exact.config) == ("exact", REC_T4)
        near = _explain(1, 4, 40, 16, 32)  # |log2 40/37| is smallest: W_SHAPE
        assert (near.source, near.entry.workload, near.config) == ("nearest", W_SHAPE, REC_T4)
        tie = _explain(1, 4, 32, 16, 32)  # S gap: 16 -> 1, 37 -> 0.21 wins
        assert tie.entry.workload == W_SHAPE
        small = _explain(1, 4, 8, 16, 32)  # 16 is one octave away, 37 two
        assert (small.source, small.config) == ("nearest", c16)
        big = _explain(1, 4, 200, 16, 32)
        assert big.config == c128
        at64 = _explain(2, 4, 64, 16, 32)  # exact entry has hpb 3: skipped; |log2 64/37| 0.79 < |log2 128/64| 1
        assert (at64.source, at64.entry.workload) == ("nearest", W_SHAPE)
        odd_heads = _explain(2, 6, 64, 16, 32)  # NH 6: hpb 3 valid now, so the S=64 entry is nearest
        assert (odd_heads.source, odd_heads.config) == ("nearest", hpb3)
        assert _explain(2, 4, 37, 16, 64).source == "default"  # other DHV
        assert _explain(2, 4, 37, 16, 32, dtype=torch.bfloat16).source == "default"  # other dtype
        step = _explain(3, 4, 1, 16, 32, decode=True)
        assert (step.source, step.workload.mode) == ("nearest", "decode")
        assert "nearest bucket" in str(near) and "exact workload match" in str(exact)


def _pick(entries: dict[str, xk.KernelConfig], call: str) -> str | None:
    chosen, _ = choose(make_profile([entry(w, c) for w, c in entries.items()]), xk.Workload.parse(call))
    return None if chosen is None else chosen.workload


ANY = xk.KernelConfig("chunkwise", chunk_size=16, t_inner=1)


@pytest.mark.parametrize("entries, call, expected, what", [
    # log2, not linear: S=36 is 1.17 octaves from 16 and 0.83 from 64 (linear: 20 vs 28 picks 16)
    (["1,4,16,16,32,float32,prefill", "1,4,64,16,32,float32,prefill"], "1,4,36,16,32,float32,prefill",
     "1,4,64,16,32,float32,prefill", "log2 S gap"),
    # the B term counts: B=3 is 0.42 octaves from 4 and 1.58 from 1 (no B term: tie to the smaller B=1)
    (["1,4,64,16,32,float32,prefill", "4,4,64,16,32,float32,prefill"], "3,4,64,16,32,float32,prefill",
     "4,4,64,16,32,float32,prefill", "B term"),
    # the NH term counts the same way: NH=12 vs 4 (1.58) and 16 (0.42)
    (["1,4,64,16,32,float32,prefill", "1,16,64,16,32,float32,prefill"], "1,12,64,16,32,float32,prefill",
     "1,16,64,16,32,float32,prefill", "NH term"),
    # S first, lexicographically: a near-exact S with a far B beats an exact B with a farther S
    (["1,4,64,16,32,float32,prefill", "8,4,48,16,32,float32,prefill"], "8,4,64,16,32,float32,prefill",
     "1,4,64,16,32,float32,prefill", "S before B/NH"),
    # equal S and B/NH gaps: the smaller B wins (then NH)
    (["4,4,64,16,32,float32,prefill", "1,4,64,16,32,float32,prefill"], "2,4,64,16,32,float32,prefill",
     "1,4,64,16,32,float32,prefill", "tie to smaller B"),
    (["1,8,64,16,32,float32,prefill", "1,2,64,16,32,float32,prefill"], "1,4,64,16,32,float32,prefill",
     "1,2,64,16,32,float32,prefill", "tie to smaller NH"),
    # other head dims, dtype or mode never match
    (["1,4,64,16,64,float32,prefill", "1,4,64,16,32,bfloat16,prefill", "1,4,1,16,32,float32,decode"],
     "1,4,64,16,32,float32,prefill", None, "no bucket"),
])
def test_nearest_bucket_rule_decides_exact_entry(entries, call, expected, what):
    assert _pick(dict.fromkeys(entries, ANY), call) == expected, what


def test_tie_goes_to_smaller_entry():
    a = xk.KernelConfig("chunkwise", chunk_size=16, t_inner=1)
    b = xk.KernelConfig("chunkwise", chunk_size=32, t_inner=1)
    profile = make_profile([entry("1,4,16,16,32,float32,prefill", a), entry("1,4,64,16,32,float32,prefill", b)])
    chosen, how = choose(profile, xk.Workload(1, 4, 32, 16, 32))
    assert (how, chosen.kernel_config) == ("nearest", a)


def test_mlstm_uses_profile_entry(home, inputs, results):
    xk.publish_profile(make_profile([entry(W_SHAPE, REC_T4)]))
    B, NH, S, DHQK, DHV = (SHAPE[k] for k in ("B", "NH", "S", "DHQK", "DHV"))
    key = kernel_key(REC_T4, plan(REC_T4, NH, S), B, DHQK, DHV, torch.float32, torch.device("cpu"), 1e-6)
    kernel = CACHE.get(key)
    before = kernel.calls
    h, (c, n, m) = xk.mlstm(*inputs)
    assert kernel.calls > before, "config=None must run the profile's config"
    assert torch.equal(h, results["rec_t4"][0])
    assert xk.loaded_profile() is not None and len(xk.loaded_profile().entries) == 1


REJECTIONS = {
    "missing": (lambda path: path.unlink(), "no profile"),
    "foreign": (lambda path: path.write_text(make_profile([entry(W_SHAPE, REC_T4)], cpu="Other").to_json()),
                "another machine"),
    "other-torch": (lambda path: path.write_text(make_profile([entry(W_SHAPE, REC_T4)], torch="2.0.0").to_json()),
                    "stale"),
    "truncated": (lambda path: path.write_text(path.read_text()[:100]), "not valid JSON"),
    "bad-json": (lambda path: path.write_text("{{{"), "not valid JSON"),
    "wrong-schema": (lambda path: path.write_text(path.read_text().replace('"schema_version": 1', '"schema_version": 2')),
                     "schema_version 2"),
    "tampered": (lambda path: path.write_text(path.read_text().replace('"t_inner": 4', '"t_inner": 8', 1)),
                 "invalid profile|checksum"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_rejected_profile_warns_once_and_falls_back(home, case):
    damage, words = REJECTIONS[case]
    path = xk.publish_profile(make_profile([entry(W_SHAPE, REC_T4)])).path
    damage(path)
    q, v = _tensors(2, 4, 37, 16, 32)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            assert xk.explain_config(q, q, v).config == xk.DEFAULT_CONFIG
            assert xk.profiles.runtime.config_for(q, v) == xk.DEFAULT_CONFIG
        assert xk.profiles.runtime.config_for(q[:1], v[:1]) == xk.DEFAULT_CONFIG
    got = _no_profile_warnings(record)
    assert len(got) == 1, [str(w.message) for w in got]
    import re

    assert re.search(words, str(got[0].message)), str(got[0].message)
    assert "default config" in str(got[0].message)
    assert xk.loaded_profile() is None
    assert xk.explain_config(q, q, v).source == ("no-profile" if case == "missing" else "rejected-profile")


def test_damaged_profile_gives_correct_result(home, inputs, reference):
    path = xk.publish_profile(make_profile([entry(W_SHAPE, REC_T4)])).path
    path.write_text(path.read_text()[:-40])
    with pytest.warns(xk.ProfileWarning, match="not valid JSON"):
        h, (c, n, m) = xk.mlstm(*inputs)
    assert rel_err(h, reference[0]) < REF_RTOL[torch.float32]


def test_use_profile_false_and_reload_on_reset_settings(home, monkeypatch):
    xk.publish_profile(make_profile([entry(W_SHAPE, REC_T4)]))
    q, v = _tensors(2, 4, 37, 16, 32)
    assert xk.explain_config(q, q, v).config == REC_T4
    monkeypatch.setenv("XLSTM_AUTOTUNE_USE_PROFILE", "false")
    assert xk.explain_config(q, q, v).config == REC_T4  # settings are cached until reset
    xk.reset_settings()
    with warnings.catch_warnings():
        warnings.simplefilter("error", xk.ProfileWarning)
        off = xk.explain_config(q, q, v)
    assert (off.source, off.config) == ("profile-disabled", xk.DEFAULT_CONFIG)
    monkeypatch.setenv("XLSTM_AUTOTUNE_USE_PROFILE", "true")
    other = xk.KernelConfig("chunkwise", chunk_size=8, t_inner=1)
    xk.publish_profile(make_profile([entry(W_SHAPE, other)]))
    xk.reset_settings()
    assert xk.explain_config(q, q, v).config == other
    xk.publish_profile(make_profile([entry(W_SHAPE, REC_T4)]))
    assert xk.explain_config(q, q, v).config == other  # memoised until an explicit reload
    xk.reload_profile()
    assert xk.explain_config(q, q, v).config == REC_T4


def test_explain_config_rejects_bad_calls(home):
    q, v = _tensors(2, 4, 37, 16, 32)
    with pytest.raises(ValueError, match="needs v"):
        xk.explain_config(q)
    with pytest.raises(ValueError, match="mode"):
        xk.explain_config(q, q, v, mode="train")
    with pytest.raises(ValueError, match="4-d"):
        xk.explain_config(q[:, :, 0], q, v, mode="prefill")
