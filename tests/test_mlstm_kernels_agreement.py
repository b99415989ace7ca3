"""Agreement with the native PyTorch kernels of NX-AI's mlstm_kernels (a test-only dependency)."""

from __future__ import annotations

import pytest
import torch

from conftest import CANON_RTOL, REF_RTOL, rel_err

mk_seq = pytest.importorskip("mlstm_kernels.torch.recurrent.native_sequence")
mk_chunk = pytest.importorskip("mlstm_kernels.torch.chunkwise.native.fw")


def test_recurrent_native_sequence(inputs, results):
    q, k, v, i, f = inputs
    h_mk, (c_mk, n_mk, m_mk) = mk_seq.mlstm_recurrent_sequence__native_fw(q, k, v, i, f, return_last_states=True)
    h, (c, n, m) = results["rec_t4"]
    assert rel_err(h, h_mk) < REF_RTOL[torch.float32]
    for a, b in zip((c, n, m), (c_mk, n_mk, m_mk)):
        assert rel_err(a, b) < REF_RTOL[torch.float32]


def test_chunkwise_native(inputs, results):
    """Their chunkwise kernel needs S % chunk == 0: compare on the first 32 steps."""
    q, k, v, i, f = (x[:, :, :32] for x in inputs)
    h_mk, _, _, (c_mk, n_mk, m_mk), _ = mk_chunk.mlstm_chunkwise_fw(
        q, k, v, i, f, return_last_states=True, chunk_size=8
    )
    h, _ = results["chunk_t1"]
    assert rel_err(h[:, :, :32], h_mk) < CANON_RTOL * 10
    import xlstm_kernels as xk

    _, (c, n, m) = xk.mlstm(q, k, v, i, f, config=xk.KernelConfig("chunkwise", chunk_size=8, t_inner=1))
    for a, b in zip((c, n, m), (c_mk, n_mk, m_mk)):
        assert rel_err(a, b) < REF_RTOL[torch.float32]


def _hard_inputs():
    """Odd length (SHAPE's S=37), saturated gates (|i|, |f| up to ~25) and carried-in states that
    mlstm_kernels itself computed over an earlier segment."""
    from conftest import SHAPE, make_inputs

    q, k, v, i, f = make_inputs(**SHAPE, seed=3, gate_scale=8.0)
    warm = make_inputs(**{**SHAPE, "S": 19}, seed=4, gate_scale=8.0)
    _, states = mk_seq.mlstm_recurrent_sequence__native_fw(*warm, return_last_states=True)
    return (q, k, v, i, f), states


@pytest.mark.parametrize("name", ["rec_t1", "rec_t4", "chunk_t1", "chunk_t4"])
def test_every_family_agrees_with_native_sequence_on_hard_inputs(name):
    """Each suite config against mlstm_kernels' native recurrent sequence (any length, carried states)."""
    from conftest import CONFIGS
    import xlstm_kernels as xk

    x, (c0, n0, m0) = _hard_inputs()
    h_mk, states_mk = mk_seq.mlstm_recurrent_sequence__native_fw(*x, c0, n0, m0, return_last_states=True)
    h, states = xk.mlstm(*x, c0, n0, m0, config=CONFIGS[name])
    assert rel_err(h, h_mk) < REF_RTOL[torch.float32]
    for a, b in zip(states, states_mk):
        assert rel_err(a, b) < REF_RTOL[torch.float32]


def test_chunkwise_native_with_carried_states_and_saturated_gates():
    """Their chunkwise kernel (S % chunk == 0: the first 32 steps) with the same hard inputs."""
    import xlstm_kernels as xk

    (q, k, v, i, f), (c0, n0, m0) = _hard_inputs()
    q, k, v, i, f = (t[:, :, :32] for t in (q, k, v, i, f))
    h_mk, _, _, states_mk, _ = mk_chunk.mlstm_chunkwise_fw(q, k, v, i, f, c0, n0, m0, return_last_states=True,
                                                           chunk_size=8)
    h, states = xk.mlstm(q, k, v, i, f, c0, n0, m0, config=xk.KernelConfig("chunkwise", chunk_size=8, t_inner=1))
    assert rel_err(h, h_mk) < CANON_RTOL * 10
    for a, b in zip(states, states_mk):
        assert rel_err(a, b) < REF_RTOL[torch.float32]
