"""xLSTMLarge with our kernels: prefill + step-by-step decoding give the native kernels' logits."""

from __future__ import annotations

import pytest
import torch

import xlstm_kernels as xk
from profile_fixtures import entry, home, make_profile  # noqa: F401 - fixture

xlstm_large = pytest.importorskip("xlstm.xlstm_large.model")
from xlstm_kernels.models.xlstm_adapter import (  # noqa: E402
    XLSTMAdapterError,
    XLSTMKernelsBackend,
    register_kernels,
    restore_native_kernels,
    use_xlstm_kernels,
)

# Tiny model: NH 2, DHQK 16, DHV 32 per head. Prefill S 9 (not a multiple of any chunk), 4 decode steps.
PROMPT_LEN, STEPS = 9, 4
PREFILL_CFG = xk.KernelConfig("chunkwise", chunk_size=8, t_inner=2)
LOGIT_ATOL = 1e-4  # logits are soft-capped at 30; float32 kernels agree to ~1e-6


def _model(**kw) -> torch.nn.Module:
    cfg = dict(embedding_dim=64, num_heads=2, num_blocks=2, vocab_size=64, mode="inference",
               chunkwise_kernel="chunkwise--native_autograd", sequence_kernel="native_sequence__native",
               step_kernel="native", chunk_size=16, return_last_states=True, autocast_kernel_dtype="float32")
    cfg.update(kw)
    torch.manual_seed(0)
    return xlstm_large.xLSTMLarge(xlstm_large.xLSTMLargeConfig(**cfg)).eval()


def _prefill_and_decode(model: torch.nn.Module, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Logits of the prefill, then of STEPS greedy single-token steps carrying the state."""
    with torch.no_grad():
        logits, state = model(tokens)
        out = [logits]
        for _ in range(STEPS):
            nxt = logits[:, -1:].argmax(-1)
            logits, state = model(nxt, state)
            out.append(logits)
    return out


@pytest.fixture(scope="module")
def prompt() -> torch.Tensor:
    return torch.randint(0, 64, (1, PROMPT_LEN), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def native_logits(prompt):
    return _prefill_and_decode(_model(), prompt)


def _profile_for_tiny_model() -> None:
    xk.publish_profile(make_profile([
        entry(f"1,2,{PROMPT_LEN},16,32,float32,prefill", PREFILL_CFG, requested=4),
        entry("1,2,1,16,32,float32,decode", xk.KernelConfig(t_inner=1)),
    ]))


def test_adapter_matches_native_logits_with_profile(home, prompt, native_logits):
    _profile_for_tiny_model()
    model = _model()
    assert use_xlstm_kernels(model) == 2
    assert all(isinstance(b.mlstm_layer.mlstm_backend, XLSTMKernelsBackend) for b in model.backbone.blocks)
    layer = model.backbone.blocks[0].mlstm_layer
    q = torch.zeros(1, 2, PROMPT_LEN, 16)
    assert xk.explain_config(q, q, torch.zeros(1, 2, PROMPT_LEN, 32)).config == PREFILL_CFG
    from xlstm_kernels.kernels.compiler import CACHE

    def prefill_calls() -> int:  # our chunkwise kernel for PREFILL_CFG (chunk 8), any band/T_inner key
        return sum(k.calls for k in CACHE.kernels() if k.key.family == "chunkwise" and k.key.chunk_size == 8)

    before = prefill_calls()
    ours = _prefill_and_decode(model, prompt)
    assert prefill_calls() >= before + 2, "our prefill kernel must have run in both blocks (no silent fallback)"
    assert all(b.mlstm_layer.mlstm_backend._steps for b in model.backbone.blocks), "decode fast path unused"
    assert len(ours) == len(native_logits)
    for step, (a, b) in enumerate(zip(ours, native_logits)):
        assert a.shape == b.shape
        err = (a - b).abs().max().item()
        assert err < LOGIT_ATOL, f"step {step}: max |logit diff| {err}"
    assert torch.equal(ours[-1].argmax(-1), native_logits[-1].argmax(-1))
    assert restore_native_kernels(model) == 2
    assert type(layer.mlstm_backend).__name__ == "mLSTMBackend"


def test_kernels_reachable_by_name(home, prompt, native_logits):
    _profile_for_tiny_model()
    chunk_name, step_name = register_kernels()
    model = _model(chunkwise_kernel=chunk_name, step_kernel=step_name)
    ours = _prefill_and_decode(model, prompt)
    for a, b in zip(ours, native_logits):
        assert (a - b).abs().max().item() < LOGIT_ATOL


def test_gradients_go_through_native_kernels(home, prompt):
    native, ours = _model(), _model()
    use_xlstm_kernels(ours, config=PREFILL_CFG)
    grads = []
    for model in (native, ours):
        logits, _ = model(prompt)  # grad enabled: our backend hands the call to the native one
        logits.sum().backward()
        grads.append(model.backbone.blocks[0].mlstm_layer.q.weight.grad)
    assert grads[1] is not None and torch.allclose(grads[0], grads[1])


def test_adapter_errors():
    with pytest.raises(XLSTMAdapterError, match="no mLSTM backend"):
        use_xlstm_kernels(torch.nn.Linear(2, 2))
