"""``generate`` side by side: the eager model (native kernels) vs the runner, default and tuned.

    res = generate_side_by_side("tiny", prompt_len=64, new_tokens=16, device="cpu")
    for row in res.rows: row.name, row.ttft_ms, row.decode_tokens_per_s, row.tokens_match

Rows (one process, same seeded weights and prompt, interleaved rounds so drifting load hits all alike):

* ``native``  — the model itself, eagerly, with NX-AI's native PyTorch kernels (``model(tokens)`` then
  ``model(token, state)`` per step), the way a user runs it without this project;
* ``default`` — ``xk.compile_model(model, config=ModelRunConfig())``;
* ``tuned``   — ``xk.compile_model(model, config=None)``: this machine's profile entry for the model
  (``xk.explain_model_config`` says which, or that it fell back to the default).

One request: prefill of the prompt and the argmax of its last logits (time to first token,
synchronised), then ``new_tokens - 1`` greedy decode steps (one synchronised burst). The first request
per row compiles and is reported as ``first_s`` (never in the medians). Greedy tokens of every row are
compared with the native row's (when it runs; else with the default row's).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from xlstm_kernels.device import default_device, synchronize
from xlstm_kernels.models.presets import build_model
from xlstm_kernels.profiles.model_profile import explain_model_config
from xlstm_kernels.runner import ModelRunConfig, compile_model

from ._model_study import model_workload_for

Request = Callable[[], tuple[float, float, torch.Tensor]]


@dataclass(frozen=True)
class GenerateRow:
    """One way of running the model: its first (compiling) request and steady-state medians."""

    name: str
    config: str
    first_s: float | None
    ttft_ms: float | None
    prefill_tokens_per_s: float | None
    decode_ms: float | None
    decode_tokens_per_s: float | None
    tokens_match: bool | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class GenerateResult:
    """The side-by-side comparison of one model workload."""

    workload: str
    device: str
    new_tokens: int
    rounds: int
    tuned_source: str
    tuned_reason: str
    rows: list[GenerateRow]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {**{k: v for k, v in self.__dict__.items() if k != "rows"}, "rows": [r.to_dict() for r in self.rows]}


def _native_request(model: torch.nn.Module, tokens: torch.Tensor, steps: int, dev: torch.device) -> Request:
    def run() -> tuple[float, float, torch.Tensor]:
        with torch.no_grad():
            synchronize(dev)
            t0 = time.perf_counter()
            logits, state = model(tokens)
            tok = logits[:, -1].argmax(-1)
            synchronize(dev)
            t1 = time.perf_counter()
            out = [tok]
            for _ in range(steps):
                logits, state = model(tok[:, None], state)
                tok = logits[:, -1].argmax(-1)
                out.append(tok)
            synchronize(dev)
            t2 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3 / max(steps, 1), torch.stack(out, 1)
    return run


def _runner_request(runner: Any, tokens: torch.Tensor, steps: int, dev: torch.device) -> Request:
    def run() -> tuple[float, float, torch.Tensor]:
        with torch.no_grad():
            synchronize(dev)
            t0 = time.perf_counter()
            logits, state = runner.prefill(tokens, last_only=True)
            tok = logits.argmax(-1)
            synchronize(dev)
            t1 = time.perf_counter()
            out = [tok]
            for _ in range(steps):
                logits, state = runner.decode(tok, state)
                tok = logits.argmax(-1)
                out.append(tok)
            synchronize(dev)
            t2 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3 / max(steps, 1), torch.stack(out, 1)
    return run


def generate_side_by_side(model: str | Path | dict[str, Any], *, batch_size: int = 1, prompt_len: int = 256,
                          new_tokens: int = 32, dtype: str = "float32", device: str | torch.device | None = None,
                          rounds: int = 5, seed: int = 0) -> GenerateResult:
    """Time native eager vs the runner (default and tuned config) on one model, side by side."""
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 1:
        raise ValueError(f"new_tokens must be a positive integer, got {new_tokens!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    fields, wl = model_workload_for(model, batch_size, prompt_len, dtype)
    dev = torch.device(device) if device is not None else default_device()
    net = build_model(fields, dtype=dtype, device=dev, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, fields["vocab_size"], (batch_size, prompt_len), generator=g).to(dev)
    steps = new_tokens - 1
    max_len = prompt_len + new_tokens
    choice = explain_model_config(net, batch_size=batch_size, prompt_len=max_len)
    plans: list[tuple[str, str, Callable[[], Request]]] = [
        ("native", "eager, native kernels", lambda: _native_request(net, tokens, steps, dev)),
        ("default", ModelRunConfig().short(), lambda: _runner_request(
            compile_model(net, config=ModelRunConfig(), max_batch_size=batch_size, max_seq_len=max_len),
            tokens, steps, dev)),
        ("tuned", choice.config.short(), lambda: _runner_request(
            compile_model(net, config=None, max_batch_size=batch_size, max_seq_len=max_len), tokens, steps, dev)),
    ]
    live: list[tuple[str, str, Request, float, torch.Tensor]] = []
    failed: dict[str, tuple[str, str]] = {}
    for name, cfg, make in plans:  # first request: compiles, not timed
        try:
            t0 = time.perf_counter()
            req = make()
            _, _, toks = req()
            live.append((name, cfg, req, time.perf_counter() - t0, toks))
        except Exception as exc:  # noqa: BLE001 - a row that cannot run is reported, the others go on
            failed[name] = (cfg, f"{type(exc).__name__}: {str(exc)[:300]}")
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in live}
    for r in range(rounds):
        for j in range(len(live)):
            name, _, req, _, _ = live[(j + r) % len(live)]
            ttft, dec, _ = req()
            samples[name].append((ttft, dec))
    base = next((t for n, _, _, _, t in live if n == "native"), None)
    if base is None:
        base = next((t for n, _, _, _, t in live if n == "default"), None)
    rows = []
    for name, cfg, _ in plans:
        if name in failed:
            rows.append(GenerateRow(name, failed[name][0], None, None, None, None, None, None, failed[name][1]))
            continue
        _, _, _, first, toks = next(x for x in live if x[0] == name)
        ttft = statistics.median(s[0] for s in samples[name])
        dec = statistics.median(s[1] for s in samples[name]) if steps else None
        rows.append(GenerateRow(
            name, cfg, first, ttft, wl.tokens() / (ttft / 1e3), dec,
            batch_size / (dec / 1e3) if dec else None,
            None if base is None else bool(torch.equal(toks, base))))
    return GenerateResult(str(wl), str(dev), new_tokens, rounds, choice.source, choice.reason, rows)

