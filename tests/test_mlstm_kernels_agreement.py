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
