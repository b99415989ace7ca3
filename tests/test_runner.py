"""The model runner (xk.compile_model) against the eager models: NX-AI xlstm's xLSTMLarge, transformers'
xLSTMForCausalLM with the xlstm package (its blocks are xlstm's mLSTMBlock) and without it (its own
xLSTMBackend, forced by loading transformers' xLSTM module with its availability check answering no).

All three tiny models share one shape (D 128, NH 2, DHQK 32, DHV 64, 2 blocks, V 64), so their graphs
are the same Inductor graphs (compiled once, then from the FX cache); each runner compiles at most a
prefill piece set and one decode step (module-scoped fixture).
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from torch import nn

import xlstm_kernels as xk

xlstm_large = pytest.importorskip("xlstm.xlstm_large.model")
transformers = pytest.importorskip("transformers")

FAMILIES = ("xlstm_large", "transformers", "transformers_no_xlstm")
D, NH, BLOCKS, VOCAB = 128, 2, 2, 64
PROMPT_LEN, STEPS, MAX_SEQ = 9, 4, 32
PREFILL_CFG = xk.KernelConfig("chunkwise", chunk_size=8, t_inner=2)
# Max |logit difference| runner vs eager, float32: measured 6e-7 .. 1.4e-6 over the three families
# (logits soft-capped at 30, so ~1e-7 relative); 1e-5 leaves 7x headroom. A wrong gate or state
# update moves logits by 1e-2 or more.
LOGIT_ATOL = 1e-5
STATE_RTOL = 1e-5  # max |C, n, m difference| / max |eager value|: measured below 1e-6


def _transformers_without_xlstm():
    """transformers' xLSTM modeling module loaded again with ``is_xlstm_available()`` answering False:
    the path a machine without the xlstm package takes (transformers' own blocks and backend)."""
    import transformers.utils as tu

    name = "transformers.models.xlstm.modeling_xlstm_without_xlstm"
    if name not in sys.modules:
        origin = importlib.util.find_spec("transformers.models.xlstm.modeling_xlstm").origin
        spec = importlib.util.spec_from_file_location(name, origin)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # inspect (transformers' docstring tooling) looks classes up there
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tu, "is_xlstm_available", lambda: False)
            spec.loader.exec_module(module)
    module = sys.modules[name]
    assert module.external_xlstm is False
    return module


def build(family: str, **overrides) -> nn.Module:
    """A tiny model of ``family`` with seeded random weights, in eval mode, float32 kernels."""
    torch.manual_seed(0)
    if family == "xlstm_large":
        cfg = dict(embedding_dim=D, num_heads=NH, num_blocks=BLOCKS, vocab_size=VOCAB, mode="inference",
                   chunkwise_kernel="chunkwise--native_autograd", sequence_kernel="native_sequence__native",
                   step_kernel="native", chunk_size=16, return_last_states=True, autocast_kernel_dtype="float32")
        cfg.update(overrides)
        return xlstm_large.xLSTMLarge(xlstm_large.xLSTMLargeConfig(**cfg)).eval()
    cfg = dict(hidden_size=D, num_heads=NH, num_hidden_layers=BLOCKS, vocab_size=VOCAB, chunk_size=16,
               autocast_kernel_dtype="float32")
    cfg.update(overrides)
    cls = transformers.xLSTMForCausalLM if family == "transformers" else _transformers_without_xlstm().xLSTMForCausalLM
    model = cls(transformers.xLSTMConfig(**cfg)).eval()
    if family == "transformers":
        assert isinstance(model.backbone.blocks[0], xlstm_large.mLSTMBlock)
    else:
        assert not isinstance(model.backbone.blocks[0], xlstm_large.mLSTMBlock)
    return model


def eager_steps(model: nn.Module, family: str, prompt: torch.Tensor, first: torch.Tensor | None = None,
                state=None):
    """Eager logits of the prefill and of STEPS greedy decode steps, the greedy tokens, the final state
    as [(C, n, m)] per block, and the native state object (to continue from)."""
    def call(tokens, st):
        if family == "xlstm_large":
            return model(tokens, st)
        out = model(tokens, cache=st, use_cache=True)
        return out.logits, out.cache

    with torch.no_grad():
        logits, st = call(prompt, state)
        out, toks = [logits], []
        for _ in range(STEPS):
            toks.append(logits[:, -1].argmax(-1))
            logits, st = call(toks[-1][:, None], st)
            out.append(logits)
        toks.append(logits[:, -1].argmax(-1))
    layers = st if family == "xlstm_large" else st.rnn_state
    return out, torch.stack(toks, 1), [layers[idx] for idx in range(BLOCKS)], st


def _prompt(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, PROMPT_LEN), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=FAMILIES)
def run(request):
    """Per family: the model, its runner, the eager results and the runner's first calls."""
    family = request.param
    model = build(family)
    prompt = _prompt()
    eager = eager_steps(model, family, prompt)
    runner = xk.compile_model(model, config=xk.ModelRunConfig(prefill=PREFILL_CFG), max_seq_len=MAX_SEQ)
    logits, state = runner.prefill(prompt)
    ours = [logits]
    for tok in eager[1][0, :STEPS]:
        logits, state = runner.decode(tok[None], state)
        ours.append(logits[:, None])
    return dict(family=family, model=model, runner=runner, prompt=prompt, eager=eager, ours=ours, state=state)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def test_prefill_and_decode_logits_match_eager(run):
    for step, (a, b) in enumerate(zip(run["ours"], run["eager"][0])):
        err = _max_err(a, b)
        assert err < LOGIT_ATOL, f"{run['family']} step {step}: max |logit diff| {err}"


def _assert_states_match(ours, eager, label: str) -> None:
    """Per block, (C, n, m) of the runner within STATE_RTOL (relative to the max) of the eager model's."""
    for idx, (mine, theirs) in enumerate(zip(ours, eager)):
        for name, a, b in zip("Cnm", mine, theirs):
            err = _max_err(a.float(), b.float()) / b.abs().max().clamp_min(1e-30).item()
            assert err < STATE_RTOL, f"{label} block {idx} {name}: rel err {err}"


def test_state_matches_eager(run):
    """The runner's state after prefill + STEPS decode steps is the eager model's, block by block."""
    _assert_states_match(run["state"].layers(), run["eager"][2], run["family"])


def test_greedy_tokens_equal_eager(run):
    runner, prompt = run["runner"], run["prompt"]
    out = runner.generate(prompt, STEPS + 1)
    assert out.shape == (1, PROMPT_LEN + STEPS + 1)
    assert torch.equal(out[:, :PROMPT_LEN], prompt)
    assert torch.equal(out[:, PROMPT_LEN:], run["eager"][1])


def test_no_recompiles_after_first_call_of_a_shape(run):
    from torch._dynamo.utils import counters

    runner, prompt = run["runner"], run["prompt"]
    runner.generate(prompt, 3)  # the last-position head: its first call may compile, once
    graphs, unique = runner.compiled_graphs(), counters["stats"]["unique_graphs"]
    assert graphs["decode"] == 1 and graphs["prefill_pre"] == 1 and graphs["prefill_post"] == 1
    logits, state = runner.prefill(prompt)
    tok = logits[:, -1].argmax(-1)[:, None]  # (B, 1): the other accepted token shape
    for _ in range(3):
        logits, state = runner.decode(tok, state)
        tok = logits.argmax(-1)[:, None]
    runner.generate(prompt, 3)
    assert runner.compiled_graphs() == graphs
    assert counters["stats"]["unique_graphs"] == unique, "a call of a seen shape compiled a new graph"


def test_prefill_continues_from_a_state(run):
    """A second prompt after the first (prefill with a state) gives the eager model's continuation."""
    family, model, runner = run["family"], run["model"], run["runner"]
    first, second = _prompt(), _prompt(seed=2)
    _, _, _, eager_state = eager_steps(model, family, first)  # eager: prompt, then STEPS decode steps
    eager = eager_steps(model, family, second, state=eager_state)
    state = runner.prefill(first)[1]
    for tok in eager_steps(model, family, first)[1][0, :STEPS]:
        state = runner.decode(tok[None], state)[1]
    logits, state = runner.prefill(second, state)
    assert _max_err(logits, eager[0][0]) < LOGIT_ATOL
    assert state.position == 2 * PROMPT_LEN + STEPS


def test_runner_never_modifies_the_model(run):
    fresh = build(run["family"])
    model = run["model"]
    assert [(n, type(m)) for n, m in model.named_modules()] == [(n, type(m)) for n, m in fresh.named_modules()]
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_fused_projections_match_eager(run):
    """fuse_projections: one matmul over a concatenated copy of each block's q/k/v/o/i/f weights, in
    the prefill and in the decode step."""
    if run["family"] != "xlstm_large":
        pytest.skip("one family is enough: the fused weights are built from the same modules in all three")
    runner = xk.compile_model(run["model"], config=xk.ModelRunConfig(prefill=PREFILL_CFG, fuse_projections=True),
                              max_seq_len=MAX_SEQ)
    logits, state = runner.prefill(run["prompt"])
    assert _max_err(logits, run["eager"][0][0]) < LOGIT_ATOL
    for tok, ref in zip(run["eager"][1][0, :STEPS], run["eager"][0][1:]):
        logits, state = runner.decode(tok[None], state)
        assert _max_err(logits[:, None], ref) < LOGIT_ATOL
    assert runner.compiled_graphs()["decode"] == 1


MLSTM_PREFILL = xk.MlstmKernelsPrefill("chunkwise--native_autograd", chunk_size=16)


def test_an_mlstm_kernels_prefill_matches_eager(run):
    """prefill=MlstmKernelsPrefill: the prefill's mLSTM through mlstm_kernels' own inference backend
    (here its native chunkwise kernel; NX-AI's Triton kernels on CUDA). A 20-token prompt is one
    16-token chunk plus a 4-token tail (the backend's sequence kernel); the runner carries its state."""
    if run["family"] != "xlstm_large":
        pytest.skip("one family is enough: the external kernel sits between the same compiled pieces")
    prompt = torch.randint(0, VOCAB, (1, 20), generator=torch.Generator().manual_seed(3))
    eager = eager_steps(run["model"], run["family"], prompt)
    runner = xk.compile_model(run["model"], config=xk.ModelRunConfig(prefill=MLSTM_PREFILL), max_seq_len=MAX_SEQ)
    assert "prefill=mlstm_kernels:native_autograd@L16" in runner.config.short()
    logits, state = runner.prefill(prompt)
    assert _max_err(logits, eager[0][0]) < LOGIT_ATOL
    for tok, ref in zip(eager[1][0, :STEPS], eager[0][1:]):
        logits, state = runner.decode(tok[None], state)
        assert _max_err(logits[:, None], ref) < LOGIT_ATOL
    _assert_states_match(state.layers(), eager[2], "after the mlstm_kernels prefill and decode")


def test_an_mlstm_kernels_prefill_that_cannot_run_here_is_refused():
    """A kernel mlstm_kernels lacks on this machine (its Triton kernels off CUDA) fails at compile_model,
    naming the kernel and what is available; malformed names and chunk sizes fail at construction."""
    if torch.cuda.is_available():
        pytest.skip("the Triton kernels run on this machine")
    model = build("xlstm_large")
    with pytest.raises(xk.PrefillKernelUnavailable, match=r"mlstm_kernels has no kernel 'chunkwise--triton_xl_chunk'"
                       r" on this machine \(available here: \['chunkwise--native_autograd'"):
        xk.compile_model(model, config=xk.ModelRunConfig(prefill=xk.MlstmKernelsPrefill()))
    for bad, match in ((dict(chunkwise_kernel="parallel--native_autograd"), "parallel kernels return no final state"),
                       (dict(chunk_size=24), "chunk_size must be a power of two >= 16, got 24"),
                       (dict(chunk_size=8), "power of two >= 16, got 8")):
        with pytest.raises(ValueError, match=match):
            xk.MlstmKernelsPrefill(**bad)
    with pytest.raises(ValueError, match=r"'<chunkwise kernel>@<chunk size>', got 'chunkwise--native_autograd'"):
        xk.MlstmKernelsPrefill.parse("chunkwise--native_autograd")
    assert xk.MlstmKernelsPrefill.parse("chunkwise--native_autograd@32") == xk.MlstmKernelsPrefill(
        "chunkwise--native_autograd", 32)


# bfloat16 state: each carried value is rounded to bf16 once per call (relative rounding <= 2**-8).
# Measured on xlstm_large, 4 decode steps: state max |diff| / max |eager| 1.5e-3 .. 3.8e-3, logits
# max |diff| 9e-4 .. 1.5e-3 (|logits| <= 1.7). Bounds: two roundings for the state, 5e-3 for logits
# (a wrong gate or update moves logits by 1e-2 or more).
BF16_STATE_RTOL, BF16_LOGIT_ATOL = 2 * 2.0**-8, 5e-3


def test_bfloat16_state_decode_tracks_eager(run):
    """state_dtype="bfloat16": the carried C, n, m are bf16 and decode stays within bf16 rounding."""
    if run["family"] != "xlstm_large":
        pytest.skip("one family is enough: the state buffers are the runner's, not the model's")
    runner = xk.compile_model(run["model"], config=xk.ModelRunConfig(prefill=PREFILL_CFG, state_dtype="bfloat16"),
                              max_seq_len=MAX_SEQ)
    logits, state = runner.prefill(run["prompt"])
    assert _max_err(logits, run["eager"][0][0]) < LOGIT_ATOL  # the prefill starts from zeros: no rounding yet
    for tok, ref in zip(run["eager"][1][0, :STEPS], run["eager"][0][1:]):
        logits, state = runner.decode(tok[None], state)
        assert _max_err(logits[:, None], ref) < BF16_LOGIT_ATOL
    for idx, (ours, eager) in enumerate(zip(state.layers(), run["eager"][2])):
        for name, a, b in zip("Cnm", ours, eager):
            assert a.dtype == torch.bfloat16, f"block {idx} {name} carried as {a.dtype}"
            err = _max_err(a.float(), b.float()) / b.abs().max().clamp_min(1e-30).item()
            assert err < BF16_STATE_RTOL, f"block {idx} {name}: rel err {err}"


# -- bad input ------------------------------------------------------------------------------------------
def test_unsupported_models_are_refused():
    with pytest.raises(xk.UnsupportedModelError, match=r"supports xlstm's xLSTMLarge or transformers' "
                       r"xLSTMForCausalLM; got torch.nn.modules.linear.Linear"):
        xk.compile_model(nn.Linear(2, 2))
    backbone = build("transformers").backbone
    with pytest.raises(xk.UnsupportedModelError, match="xLSTMModel .pass the causal-LM model, not its backbone"):
        xk.compile_model(backbone)
    with pytest.raises(ValueError, match="config must be a ModelRunConfig or None, got dict"):
        xk.compile_model(build("xlstm_large"), config={"cuda_graphs": False})


def test_prompt_longer_than_max_seq_len(run):
    runner = run["runner"]
    with pytest.raises(xk.SequenceTooLongError, match=r"33 token\(s\) after position 0 would reach 33 positions, "
                       r"past the runner's max_seq_len=32"):
        runner.prefill(torch.zeros(1, MAX_SEQ + 1, dtype=torch.long))
    logits, state = runner.prefill(run["prompt"])
    tok = logits[:, -1].argmax(-1)
    for _ in range(MAX_SEQ - PROMPT_LEN):
        logits, state = runner.decode(tok, state)
    with pytest.raises(xk.SequenceTooLongError, match="decode: 1 token.* after position 32"):
        runner.decode(tok, state)
    with pytest.raises(xk.SequenceTooLongError, match="generate"):
        runner.generate(run["prompt"], MAX_SEQ)


def test_batch_size_errors(run):
    runner = run["runner"]
    with pytest.raises(xk.BatchSizeError, match=r"batch size 2 exceeds the runner's static buffers \(max_batch_size=1\)"):
        runner.prefill(torch.zeros(2, PROMPT_LEN, dtype=torch.long))
    _, state = runner.prefill(run["prompt"])
    with pytest.raises(xk.BatchSizeError, match="decode: 2 tokens given, the state holds 1 sequences"):
        runner.decode(torch.zeros(2, dtype=torch.long), state)


def test_state_errors(run):
    runner, prompt = run["runner"], run["prompt"]
    other = xk.compile_model(run["model"])  # another runner: a state does not move between them
    logits, state = runner.prefill(prompt)
    tok = logits[:, -1].argmax(-1)
    with pytest.raises(xk.StateMismatchError, match=rf"belongs to runner #{runner.id} .* this is runner #{other.id}"):
        other.decode(tok, state)
    with pytest.raises(xk.StateMismatchError, match=r"got a dict \(a model's own state\?\)"):
        runner.decode(tok, {0: None})
    _, newer = runner.decode(tok, state)
    with pytest.raises(xk.StaleStateError, match=f"position {PROMPT_LEN} of sequence .* hold position {PROMPT_LEN + 1}"):
        runner.decode(tok, state)
    with pytest.raises(ValueError, match=r"decode takes one token per sequence.*\(1, 2\)"):
        runner.decode(torch.zeros(1, 2, dtype=torch.long), newer)
    with pytest.raises(ValueError, match=r"prefill needs integer token ids of shape \(B, S\); got \(9,\) torch.int64"):
        runner.prefill(prompt[0])


class _BreakingFeedForward(nn.Module):
    """A feed-forward block that Dynamo cannot trace into one graph."""

    def __init__(self, ffn: nn.Module) -> None:
        super().__init__()
        self.ffn = ffn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._dynamo.graph_break()
        return self.ffn(x)


def test_graph_break_names_the_module():
    model = build("xlstm_large")
    model.backbone.blocks[1].ffn = _BreakingFeedForward(model.backbone.blocks[1].ffn)
    runner = xk.compile_model(model, config=xk.ModelRunConfig(prefill=PREFILL_CFG), max_seq_len=MAX_SEQ)
    with pytest.raises(xk.ModelGraphBreakError, match=r"the prefill does not compile into one graph: a graph break "
                       r"in module 'backbone.blocks.1.ffn' \(_BreakingFeedForward\)"):
        runner.prefill(_prompt())


# -- config and model key --------------------------------------------------------------------------------
def test_model_run_config_validates_and_round_trips():
    cfg = xk.ModelRunConfig(step_compile_mode="max-autotune-no-cudagraphs", cuda_graphs=False, prefill=PREFILL_CFG,
                            threads=2, state_dtype="bfloat16", fuse_projections=True, prefill_graphs=True)
    assert xk.ModelRunConfig.from_dict(cfg.to_dict()) == cfg
    assert "prefill-graphs" in cfg.short() and "prefill-graphs" not in xk.ModelRunConfig().short()
    assert cfg.uses_prefill_graphs(torch.device("cuda")) and not cfg.uses_prefill_graphs(torch.device("cpu"))
    assert xk.ModelRunConfig() == xk.ModelRunConfig.from_dict(xk.ModelRunConfig().to_dict())
    external = xk.ModelRunConfig(prefill=MLSTM_PREFILL)
    assert external.to_dict()["prefill"] == {"mlstm_kernels": "chunkwise--native_autograd", "chunk_size": 16}
    assert xk.ModelRunConfig.from_dict(external.to_dict()) == external and external.external_prefill == MLSTM_PREFILL
    assert cfg.external_prefill is None
    for bad, match in ((dict(step_compile_mode="fast"), "step_compile_mode must be one of"),
                       (dict(state_dtype="float16"), "state_dtype must be one of"),
                       (dict(threads=0), "threads must be a positive integer"),
                       (dict(prefill_graphs=1), "prefill_graphs must be a bool"),
                       (dict(prefill={"chunk_size": 8}), "prefill must be a KernelConfig")):
        with pytest.raises(ValueError, match=match):
            xk.ModelRunConfig(**bad)
    with pytest.raises(ValueError, match="unknown ModelRunConfig fields"):
        xk.ModelRunConfig.from_dict({"graphs": True})


def test_model_key_is_the_architecture():
    key = xk.model_key(build("xlstm_large"))
    assert key == xk.model_key(build("xlstm_large"))
    assert len(key) == 16 and int(key, 16) >= 0
    assert key == xk.model_key(build("xlstm_large").to(torch.bfloat16)), "dtype is the workload's, not the model key's"
    assert key != xk.model_key(build("xlstm_large", num_heads=4))
    assert key != xk.model_key(build("xlstm_large", gate_soft_cap=10.0))
    assert key != xk.model_key(build("transformers"))
    assert xk.model_key(build("transformers")) == xk.model_key(build("transformers_no_xlstm"))


# -- CUDA (the device machine) ---------------------------------------------------------------------------
CUDA_LOGIT_ATOL = 1e-5  # float32 on an H200, TF32 off: measured at most 4.5e-7 (2026-12-01, torch 2.11)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_decode_matches_eager():
    """On CUDA the decode step replays as a CUDA graph (none skipped, e.g. for mutated inputs), and
    prefill, decode and greedy tokens still match the eager model."""
    from torch._dynamo.utils import counters

    model = build("xlstm_large").cuda()
    prompt = _prompt().cuda()
    logits_eager, toks_eager, _, _ = eager_steps(model, "xlstm_large", prompt)
    runner = xk.compile_model(model, config=xk.ModelRunConfig(step_compile_mode="reduce-overhead", prefill=PREFILL_CFG),
                              max_seq_len=MAX_SEQ)
    assert runner.cuda_graphs
    skips = counters["inductor"]["cudagraph_skips"]
    logits, state = runner.prefill(prompt)
    errs = [_max_err(logits, logits_eager[0])]
    for tok, ref in zip(toks_eager[0, :STEPS], logits_eager[1:]):
        logits, state = runner.decode(tok[None], state)
        errs.append(_max_err(logits[:, None], ref))
    print("max |logit diff| per step:", errs)
    assert max(errs) < CUDA_LOGIT_ATOL, errs
    assert torch.equal(runner.generate(prompt, STEPS + 1)[:, PROMPT_LEN:], toks_eager)
    assert counters["inductor"]["cudagraph_skips"] == skips, "the decode step's CUDA graph was skipped"
    graphs = runner.compiled_graphs()
    runner.generate(prompt, STEPS + 1)
    assert runner.compiled_graphs() == graphs


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_prefill_graphs_match_eager(monkeypatch):
    """With ``prefill_graphs`` a fresh prefill replays one CUDA graph per (B, S, last_only): its logits,
    the decode steps after it and the state they leave match the eager model; a second call of a shape
    replays (no new capture, no recompile); a prefill from a state runs uncaptured and continues like
    the eager model; the settings' bound drops the least recently used graph."""
    monkeypatch.setenv("XLSTM_AUTOTUNE_RUNNER_PREFILL_GRAPHS", "1")
    xk.reset_settings()
    model = build("xlstm_large").cuda()
    prompt, second = _prompt().cuda(), _prompt(seed=2).cuda()
    logits_eager, toks_eager, states_eager, eager_state = eager_steps(model, "xlstm_large", prompt)
    states_eager = [tuple(x.clone() for x in st) for st in states_eager]  # the continuation updates them in place
    continued = eager_steps(model, "xlstm_large", second, state=eager_state)[0][0]
    # the kernel's own graph-capture mode, which the captured prefill must not nest
    cfg = xk.ModelRunConfig(prefill=PREFILL_CFG.replace(compile_mode="graph-capture"), prefill_graphs=True)
    runner = xk.compile_model(model, config=cfg, max_seq_len=MAX_SEQ)
    key = (1, PROMPT_LEN, False)
    try:
        runner.prefill(prompt)  # warm-up and capture
        graph, compiled = runner._prefill_graphs[key], runner.compiled_graphs()
        logits, state = runner.prefill(prompt)  # a replay
        assert runner._prefill_graphs[key] is graph and runner.compiled_graphs() == compiled
        errs = [_max_err(logits, logits_eager[0])]
        for tok, ref in zip(toks_eager[0, :STEPS], logits_eager[1:]):
            logits, state = runner.decode(tok[None], state)
            errs.append(_max_err(logits[:, None], ref))
        assert max(errs) < CUDA_LOGIT_ATOL, errs
        _assert_states_match(state.layers(), states_eager, "prefill graphs")
        logits, state = runner.prefill(second, state)  # from a state: uncaptured
        assert _max_err(logits, continued) < CUDA_LOGIT_ATOL
        assert list(runner._prefill_graphs) == [key]
        assert torch.equal(runner.generate(prompt, STEPS + 1)[:, PROMPT_LEN:], toks_eager)
        assert list(runner._prefill_graphs) == [(1, PROMPT_LEN, True)]  # bound 1: generate's graph replaced it
    finally:
        xk.reset_settings()
