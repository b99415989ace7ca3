"""The model runner: a built xLSTM model's whole inference path through compiled graphs.

``compile_model(model)`` WRAPS the model: it calls the model's own embedding, norms, projections,
feed-forward and head modules (sharing their weights, never copying them) and replaces only the mLSTM
backend call, so the model itself is never modified and stays usable eagerly. (Changing the weights
in place later is seen by the runner; replacing modules is not.)

Notation: B batch, S prompt length, N new tokens, V vocabulary.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import api
from ..kernels.capture import CapturedCall
from ..kernels.config import CUDA_ONLY_MODES, KernelConfig
from ..profiles.runtime import config_for
from ..settings import get_settings
from ..threads import use_threads
from .arch import ModelParts, model_key, model_parts
from .config import ModelRunConfig
from .errors import BatchSizeError, SequenceTooLongError, StaleStateError, StateMismatchError
from .external import mlstm_kernels_backend
from .graphs import (
    cache_entries,
    call_graph,
    compile_fn,
    fresh_code,
    make_decode_step,
    make_prefill_pieces,
    prefill_options,
    step_options,
)
from .layers import fused_projection
from .state import RunnerState, StateBuffers

_ids = itertools.count(1)


@dataclass(frozen=True)
class _BatchSlot:
    """What one batch size owns: static state buffers, the token buffer, the decode step (and its code)."""

    buffers: StateBuffers
    tokens: torch.Tensor  # (B,) long: the step's input token, overwritten with its greedy next token
    fn: Any  # the decode step's own-code function (for its Dynamo cache entries)
    step: Any  # torch.compile(fn)


class ModelRunner:
    """Prefill, decode and greedy generation of one model through compiled graphs over static state.

    Build it with :func:`compile_model`. Graphs compile at their first call (per batch size for the
    decode step, which has its own static buffers; prefill pieces go dynamic over the prompt length
    after a second length).
    """

    def __init__(self, model: nn.Module, config: ModelRunConfig, max_batch_size: int, max_seq_len: int) -> None:
        for name, value in (("max_batch_size", max_batch_size), ("max_seq_len", max_seq_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.model = model
        self.config = config
        self.max_batch_size = max_batch_size
        self.max_seq_len = max_seq_len
        self.parts: ModelParts = model_parts(model)
        self.model_key = model_key(model)
        self.id = next(_ids)
        p = self.parts
        self.device = p.device
        self.cuda_graphs = config.uses_cuda_graphs(p.device)
        self._slots: dict[int, _BatchSlot] = {}  # batch size -> its buffers and decode step
        self._fused = None
        if config.fuse_projections:
            self._fused = [fused_projection(p, block) for block in p.blocks]
            for t in (x for wb in self._fused for x in wb):
                torch._dynamo.mark_static_address(t)
        external = config.external_prefill
        self._external = None if external is None else mlstm_kernels_backend(external, p.dtype, p.eps)
        self._fns = {fn.__name__: fresh_code(fn, f"r{self.id}") for fn in make_prefill_pieces(p)}
        opts = prefill_options(p.device)
        self._pre = compile_fn(self._fns["prefill_pre"], opts, dynamic=None)
        self._post = compile_fn(self._fns["prefill_post"], opts, dynamic=None)
        self._head = compile_fn(self._fns["prefill_head"], opts, dynamic=None)
        self._prefill_graphs: OrderedDict[tuple[int, int, bool], CapturedCall] = OrderedDict()
        self._generation = 0
        self._position = 0
        self._batch = 0

    def _slot(self, B: int) -> _BatchSlot:
        """The static buffers and compiled decode step of batch size B (allocated at its first use)."""
        slot = self._slots.get(B)
        if slot is None:
            p, cfg = self.parts, self.config
            buffers = StateBuffers(len(p.blocks), B, p.num_heads, p.dhqk, p.dhv, cfg.torch_state_dtype, p.device)
            tokens = torch.zeros(B, dtype=torch.long, device=p.device)
            torch._dynamo.mark_static_address(tokens)
            fn = fresh_code(make_decode_step(p, buffers, tokens, self._fused), f"r{self.id}b{B}")
            step = compile_fn(fn, step_options(cfg.step_compile_mode, cfg.cuda_graphs, p.device), dynamic=False)
            slot = self._slots[B] = _BatchSlot(buffers, tokens, fn, step)
        return slot

    # -- state bookkeeping --------------------------------------------------------------------------
    def _live(self) -> RunnerState:
        return RunnerState(self.id, self.model_key, self._generation, self._position, self._batch,
                           self._slots[self._batch].buffers)

    def _check_state(self, state: Any) -> RunnerState:
        if not isinstance(state, RunnerState):
            got = "a dict (a model's own state?)" if isinstance(state, dict) else type(state).__name__
            raise StateMismatchError(f"expected the RunnerState this runner's prefill/decode returned; got {got}")
        if state.runner_id != self.id:
            raise StateMismatchError(
                f"the state belongs to runner #{state.runner_id} (model {state.model_key}); this is runner "
                f"#{self.id} (model {self.model_key}): a state cannot move between runners")
        if (state.generation, state.position) != (self._generation, self._position):
            raise StaleStateError(
                f"the state is stale: it holds position {state.position} of sequence #{state.generation}, but "
                f"the runner's buffers hold position {self._position} of sequence #{self._generation} (one live "
                "state per runner: continue from the latest state, or prefill again)")
        return state

    def _check_tokens(self, tokens: Any, what: str, ndim: tuple[int, ...]) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.long, torch.int32) \
                or tokens.dim() not in ndim:
            shape = "(B, S)" if what == "prefill" else "(B,) or (B, 1)"
            got = f"{type(tokens).__name__}" if not isinstance(tokens, torch.Tensor) \
                else f"{tuple(tokens.shape)} {tokens.dtype}"
            raise ValueError(f"{what} needs integer token ids of shape {shape}; got {got}")
        if tokens.device != self.device:
            raise ValueError(f"{what}: the tokens are on {tokens.device}, the model on {self.device}")
        return tokens.long()

    def _check_batch(self, B: int, what: str) -> None:
        if B > self.max_batch_size:
            raise BatchSizeError(f"{what}: batch size {B} exceeds the runner's static buffers "
                                 f"(max_batch_size={self.max_batch_size}); compile_model(..., max_batch_size={B})")

    def _check_length(self, start: int, new: int, what: str) -> None:
        if start + new > self.max_seq_len:
            raise SequenceTooLongError(
                f"{what}: {new} token(s) after position {start} would reach {start + new} positions, past the "
                f"runner's max_seq_len={self.max_seq_len}; compile_model(..., max_seq_len={start + new})")

    # -- the public calls ---------------------------------------------------------------------------
    def prefill(self, tokens: torch.Tensor, state: RunnerState | None = None, *,
                last_only: bool = False) -> tuple[torch.Tensor, RunnerState]:
        """Run the prompt tokens (B, S) from ``state`` (None: zeros); logits (B, S, V), or (B, V) of the
        last position with ``last_only``, and the new state."""
        tokens = self._check_tokens(tokens, "prefill", (2,))
        B, S = tokens.shape
        self._check_batch(B, "prefill")
        start = 0
        if state is not None:
            self._check_state(state)
            if B != state.batch_size:
                raise BatchSizeError(f"prefill: {B} sequences given, the state holds {state.batch_size}")
            start = state.position
        if S < 1:
            raise ValueError("prefill needs at least one token per sequence (S >= 1)")
        self._check_length(start, S, "prefill")
        buffers = self._slot(B).buffers
        with torch.no_grad(), use_threads(self.config.threads):
            if state is None and self.config.uses_prefill_graphs(self.device):
                logits = self._captured_prefill(tokens, buffers, last_only)
            else:
                logits = self._prefill(tokens, buffers, state is not None, last_only)
        self._generation += state is None
        self._position, self._batch = start + S, B
        return (logits[:, 0] if last_only else logits), self._live()

    def _prefill(self, tokens: torch.Tensor, buffers: StateBuffers, from_state: bool, last_only: bool,
                 in_graph: bool = False) -> torch.Tensor:
        """The prefill's launches: every block's compiled pieces around the mLSTM kernel; the final
        states go into ``buffers``; logits (B, S or 1, V)."""
        p, eps, B = self.parts, self.parts.eps, tokens.shape[0]
        x = p.embedding(tokens)  # (B, S, D)
        for idx, block in enumerate(p.blocks):
            fused = None if self._fused is None else self._fused[idx]
            q, k, v, o, i, f = call_graph(self._pre, self.model, "prefill", block, x, fused)
            init = buffers.layer(idx, B) if from_state else (None, None, None)
            if self._external is not None:  # mlstm_kernels' own inference path (ModelRunConfig.prefill)
                h, (c, n, m) = self._external(q, k, v, i, f, *init, return_last_states=True, mode="inference")
            else:
                kcfg = self._graph_kernel_config(q, v) if in_graph else self.config.prefill
                h, (c, n, m) = api.mlstm(q, k, v, i, f, *init, return_last_states=True, eps=eps, config=kcfg)
            buffers.write(idx, B, c, n, m)
            x = call_graph(self._post, self.model, "prefill", block, x, h, o)
        return call_graph(self._head, self.model, "prefill", x[:, -1:] if last_only else x)

    def _graph_kernel_config(self, q: torch.Tensor, v: torch.Tensor) -> KernelConfig:
        """The prefill kernel's config inside a captured prefill: the configured (or profile's) one,
        with ``compile_mode="default"`` where it would capture or replay CUDA graphs of its own."""
        cfg = self.config.prefill or config_for(q, v, mode="prefill")
        return cfg.replace(compile_mode="default") if cfg.compile_mode in CUDA_ONLY_MODES else cfg

    def _captured_prefill(self, tokens: torch.Tensor, buffers: StateBuffers, last_only: bool) -> torch.Tensor:
        """A fresh sequence's prefill replayed from the CUDA graph of its (B, S, last_only), captured at
        the shape's first call (the least recently used graph dropped past the settings' bound)."""
        key = (*tokens.shape, last_only)
        call = self._prefill_graphs.pop(key, None)
        if call is None:
            while len(self._prefill_graphs) >= get_settings().runner_prefill_graphs:
                self._prefill_graphs.popitem(last=False)
            call = CapturedCall(lambda t: self._prefill(t, buffers, False, last_only, in_graph=True), (tokens,))
        self._prefill_graphs[key] = call  # most recently used last
        return call(tokens)

    def _advance(self, slot: _BatchSlot) -> tuple[torch.Tensor, torch.Tensor]:
        """One compiled decode step of the live state on ``slot.tokens``: (logits (B, V), next (B,)),
        both owned by the graph (overwritten by the next step when CUDA graphs are on)."""
        self._check_length(self._position, 1, "decode")
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        out = call_graph(slot.step, self.model, "decode step")
        self._position += 1
        return out

    def decode(self, token: torch.Tensor, state: RunnerState) -> tuple[torch.Tensor, RunnerState]:
        """One token per sequence, token (B,) or (B, 1), from ``state``: logits (B, V) and the new state."""
        token = self._check_tokens(token, "decode", (1, 2))
        if token.dim() == 2 and token.shape[1] != 1:
            raise ValueError(f"decode takes one token per sequence, (B,) or (B, 1); got {tuple(token.shape)}")
        self._check_state(state)
        B = token.shape[0]
        if B != state.batch_size:
            raise BatchSizeError(f"decode: {B} tokens given, the state holds {state.batch_size} sequences "
                                 "(the batch is fixed from prefill on)")
        with torch.no_grad(), use_threads(self.config.threads):
            slot = self._slots[B]
            slot.tokens.copy_(token.reshape(B))
            logits, _ = self._advance(slot)
            if self.cuda_graphs:
                logits = logits.clone()  # the next replay overwrites the graph's output
        return logits, self._live()

    def generate(self, tokens: torch.Tensor, max_new_tokens: int, state: RunnerState | None = None) -> torch.Tensor:
        """Greedy generation: the prompt tokens (B, S) followed by ``max_new_tokens`` new ones, (B, S + N)."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
        tokens = self._check_tokens(tokens, "prefill", (2,))
        B, S = tokens.shape
        start = 0 if state is None else state.position
        self._check_length(start, S + max(max_new_tokens - 1, 0), "generate")
        logits, _ = self.prefill(tokens, state, last_only=True)
        out = torch.empty(B, S + max_new_tokens, dtype=torch.long, device=self.device)
        out[:, :S] = tokens
        if max_new_tokens == 0:
            return out
        with torch.no_grad(), use_threads(self.config.threads):
            nxt = logits.argmax(-1)
            out[:, S] = nxt
            slot = self._slots[B]
            slot.tokens.copy_(nxt)
            for j in range(1, max_new_tokens):
                _, nxt = self._advance(slot)  # reads slot.tokens, writes the next token there
                out[:, S + j] = nxt
        return out

    # -- introspection ------------------------------------------------------------------------------
    def compiled_graphs(self) -> dict[str, int]:
        """Graphs Dynamo holds per compiled function of this runner (a recompile adds one); ``decode``
        sums the decode steps of all batch sizes seen (one graph each when nothing recompiled)."""
        out = {"decode": sum(cache_entries(slot.fn) for slot in self._slots.values())}
        out.update({name: cache_entries(fn) for name, fn in self._fns.items()})
        return out

    def __repr__(self) -> str:
        return (f"ModelRunner({self.parts.family} {self.model_key}, {len(self.parts.blocks)} blocks, "
                f"{self.config.short()}, max_batch_size={self.max_batch_size}, max_seq_len={self.max_seq_len})")


def compile_model(model: nn.Module, *, config: ModelRunConfig | None = None, max_batch_size: int = 1,
                  max_seq_len: int = 4096) -> ModelRunner:
    """A :class:`ModelRunner` over a built ``xLSTMLarge`` or ``xLSTMForCausalLM``.

    Wraps, never mutates ``model`` (its modules are called, its weights shared). ``config=None``: this
    machine's profile entry for the model at (``max_batch_size``, prompt bucket nearest ``max_seq_len``;
    ``xk.explain_model_config`` says which), else the defaults of :class:`ModelRunConfig` with one
    ProfileWarning. ``max_batch_size`` bounds the batch (static state buffers are allocated per batch
    size, at its first prefill);
    ``max_seq_len`` bounds the positions (prompt + generated) of one sequence.
    """
    if config is not None and not isinstance(config, ModelRunConfig):
        raise ValueError(f"config must be a ModelRunConfig or None, got {type(config).__name__}")
    if config is None:  # this machine's profile entry for the model (nearest prompt bucket to max_seq_len)
        from ..profiles.model_profile import model_config_for

        model_parts(model)  # an unsupported model fails here with its own error, not in the lookup
        config = model_config_for(model, batch_size=max_batch_size, prompt_len=max_seq_len)
    return ModelRunner(model, config, max_batch_size, max_seq_len)
