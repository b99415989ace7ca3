"""Bad input raises a ValueError naming the argument, before anything is compiled."""

from __future__ import annotations

import pytest
import torch

import xlstm_kernels as xk
from conftest import SHAPE, make_inputs

B, NH, S, DHQK, DHV = (SHAPE[k] for k in ("B", "NH", "S", "DHQK", "DHV"))


@pytest.fixture()
def seq():
    return list(make_inputs(**SHAPE))


def _call(args, **kw):
    before = len(xk.compile_cache)
    with pytest.raises(ValueError) as err:
        xk.mlstm(*args, **kw)
    assert len(xk.compile_cache) == before, "nothing may be compiled for bad input"
    return str(err.value)


@pytest.mark.parametrize(
    "index, bad, word",
    [
        (0, torch.randn(B, NH, S), "q"),
        (1, torch.randn(B, NH, S, DHQK + 1), "k"),
        (2, torch.randn(B, NH, S + 1, DHV), "v"),
        (3, torch.randn(B, NH, S, 1), "i"),
        (4, torch.randn(B, NH + 1, S), "f"),
        (1, torch.randn(B, NH, S, DHQK, dtype=torch.float64), "k"),
        (0, torch.randint(0, 3, (B, NH, S, DHQK)), "q"),
        (2, "not a tensor", "v"),
    ],
)
def test_wrong_shapes_dtypes(seq, index, bad, word):
    seq[index] = bad
    assert _call(seq).startswith(word)


def test_empty_dimension(seq):
    seq = [x[:, :, :0] for x in seq]
    assert "empty" in _call(seq)


def test_states_must_come_together_and_fit(seq):
    c = torch.zeros(B, NH, DHQK, DHV)
    assert "together" in _call(seq + [c])
    n, m = torch.zeros(B, NH, DHQK), torch.zeros(B, NH, 1)
    assert "c_initial" in _call(seq + [torch.zeros(B, NH, DHV, DHQK), n, m])
    assert "m_initial" in _call(seq + [c, n, torch.zeros(B, NH)])


def test_meta_device_mismatch(seq):
    seq[2] = seq[2].to("meta")
    assert "v is on meta" in _call(seq)


def test_heads_per_band_must_divide(seq):
    msg = _call(seq, config=xk.KernelConfig(heads_per_band=3))
    assert "heads_per_band" in msg and "divide" in msg


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(family="quadratic"), "family"),
        (dict(driver="threads"), "driver"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(t_inner=-1), "t_inner"),
        (dict(heads_per_band=0), "heads_per_band"),
        (dict(family="recurrent", chunk_size=6, t_inner=4), "multiple"),
        (dict(compile_mode="turbo"), "compile_mode"),
    ],
)
def test_kernel_config_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        xk.KernelConfig(**kwargs)


def test_config_dict_and_eps(seq):
    assert "unknown KernelConfig fields" in _call(seq, config={"family": "chunkwise", "chunk": 3})
    assert "eps" in _call(seq, eps=-1.0)


def test_step_bad_inputs():
    q, k, v, i, f = (x[:, :, 0] for x in make_inputs(**SHAPE))
    c, n, m = torch.zeros(B, NH, DHQK, DHV), torch.zeros(B, NH, DHQK), torch.zeros(B, NH, 1)
    with pytest.raises(ValueError, match="^i has shape"):
        xk.mlstm_step(q, k, v, i, f[..., None], c, n, m)
    with pytest.raises(ValueError, match="^n has shape"):
        xk.mlstm_step(q, k, v, i[..., None], f[..., None], c, n[..., :1], m)
    with pytest.raises(ValueError, match="rank 3"):
        xk.mlstm_step(q[:, :, None], k, v, i[..., None], f[..., None], c, n, m)


@pytest.mark.parametrize(
    "text, word",
    [("1,4,512,64", "6 or 7"), ("1,4,x,64,128,float32", "integers"), ("1,4,512,64,128,float64", "dtype"),
     ("1,4,512,64,128,float32,train", "mode"), ("0,4,512,64,128,float32", "B"),
     ("1,4,512,64,128,float32,decode", "decode")],
)
def test_workload_parse_errors(text, word):
    with pytest.raises(ValueError, match=word):
        xk.Workload.parse(text)


def test_workload_roundtrip():
    w = xk.Workload.parse("1, 4, 512, 64, 128, bf16")
    assert str(w) == "1,4,512,64,128,bfloat16,prefill"
    assert xk.Workload.parse(str(w)) == w


def test_cuda_only_modes_rejected_off_cuda(seq):
    for mode in ("reduce-overhead", "graph-capture"):
        assert "needs a CUDA device" in _call(seq, config=xk.KernelConfig(compile_mode=mode))
