"""One model candidate, start to finish: compile the runner -> gate against the eager model -> time.

**Gate.** The reference is the *eager float32* model with the native kernels (``model_presets``
builds it: ``chunkwise--native_autograd`` prefill, ``native`` step), on the same seeded weights and
prompt. A candidate's runner (``xk.compile_model`` over the model in the workload's dtype, with the
candidate's ``ModelRunConfig``) must give

* prefill logits ``(B, S, V)`` and the logits of ``tune_model_gate_steps`` decode steps (fed the
  reference's greedy tokens, so both see the same inputs) within the dtype's tolerance, measured as
  max over those ``max|x - ref| / max|ref|`` (settings ``tol_model_fp32`` / ``tol_model_low_precision``;
  a bf16/fp16 model's tolerance is at least ``tol_model_eager_factor`` times the error of the eager
  model itself in that dtype, measured the same way: on a deep model the dtype's rounding alone can
  exceed the fixed tolerance, and a candidate is judged against what the dtype allows);
* for float32 models, the same greedy tokens as the reference when it generates on its own.

A candidate that fails is ``rejected`` with the reason; one that does not compile or run is ``failed``.

**Time.** One sample is one request, synchronised at both ends of each part: prefill of the prompt
(``last_only``: the head runs on the last position, as generation does) plus the argmax of its
logits (time to first token), then ``tune_model_decode_steps`` greedy
decode steps back to back (one burst, as a decode loop enqueues them). The objective is the request's
wall time (TTFT + the burst); TTFT and the per-step decode time are kept apart. The first request
compiles (``compile_s``, never timed); ``tune_warmup`` more run untimed; then ``tune_model_repeats``
timed requests, median and interquartile spread each.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from xlstm_kernels.device import empty_cache, synchronize
from xlstm_kernels.models.presets import build_model, head_shape
from xlstm_kernels.models.workload import ModelWorkload
from xlstm_kernels.runner import ModelRunConfig, compile_model

from ._evaluate import summarize
from .settings import TunerSettings

RunnerFactory = Callable[[torch.nn.Module, ModelRunConfig, int, int], Any]


def default_runner_factory(model: torch.nn.Module, config: ModelRunConfig, batch_size: int, max_seq_len: int) -> Any:
    """The production path: ``xk.compile_model(model, config=config, ...)``."""
    return compile_model(model, config=config, max_batch_size=batch_size, max_seq_len=max_seq_len)


def logits_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """max|x - ref| / max|ref| in float32 (inf for a non-finite output or another shape)."""
    if tuple(x.shape) != tuple(ref.shape) or not torch.isfinite(x).all():
        return math.inf
    ref32 = ref.float()
    return float((x.float() - ref32).abs().max() / ref32.abs().max().clamp_min(1e-30))


@contextlib.contextmanager
def _threads_kept() -> Iterator[None]:
    """Restore torch's thread count afterwards (a candidate may set its own)."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)


@dataclass(frozen=True)
class ModelTiming:
    """Steady-state timing of one model candidate (compile excluded), all medians over requests."""

    ttft_ms: float
    ttft_spread_ms: float
    decode_ms: float  # per decode step
    decode_spread_ms: float
    objective_ms: float  # one request: TTFT + decode_steps steps
    objective_spread_ms: float
    repeats: int
    decode_steps: int


@dataclass
class ModelEvaluation:
    """The outcome of one model candidate; ``status`` is ``ok``, ``rejected`` or ``failed``."""

    config: ModelRunConfig
    status: str
    reason: str | None = None
    compile_s: float | None = None
    validate_s: float | None = None
    logits_error: float | None = None
    tolerance: float | None = None
    greedy_match: bool | None = None
    timing: ModelTiming | None = None

    def decode_tokens_per_s(self, B: int) -> float | None:
        """Decode throughput (B tokens per step) of the timed candidate."""
        return None if self.timing is None else B / (self.timing.decode_ms / 1e3)


class ModelEvaluator:
    """Evaluates run configs of one model workload on one device; holds the models and the reference.

    ``fields``: the model's ``xLSTMLargeConfig`` fields (``model_presets.resolve_model_config``).
    Runners of candidates are kept (``keep`` of them, best first) so the side-by-side re-timing
    does not compile them again.
    """

    def __init__(self, fields: dict[str, Any], workload: ModelWorkload, device: torch.device,
                 settings: TunerSettings, *, quick: bool = False,
                 runner_factory: RunnerFactory = default_runner_factory) -> None:
        self.fields, self.workload, self.device, self.settings = fields, workload, device, settings
        self.runner_factory = runner_factory
        self.head = head_shape(fields)
        self.repeats = max(3, settings.tune_model_repeats // 2) if quick else settings.tune_model_repeats
        self.gate_steps = settings.tune_model_gate_steps
        self.decode_steps = settings.tune_model_decode_steps
        self.tolerance = settings.tol_model_fp32 if workload.dtype == "float32" else settings.tol_model_low_precision
        self.eager_error: float | None = None  # the eager model's own error in a low-precision dtype
        seed = settings.tune_seed
        g = torch.Generator().manual_seed(seed + 1)
        self.tokens = torch.randint(0, fields["vocab_size"], (workload.B, workload.S), generator=g).to(device)
        self._reference: tuple[torch.Tensor, list[torch.Tensor], torch.Tensor] | None = None
        self.runners: dict[str, Any] = {}
        # the reference first, so a low-precision workload never holds both models (7B: 28 + 14 GB)
        self.reference_model: torch.nn.Module | None = build_model(fields, dtype="float32", device=device, seed=seed)
        self.reference()
        if workload.dtype == "float32":
            self.model = self.reference_model
        else:
            self.reference_model = None
            empty_cache(device)
            self.model = build_model(fields, dtype=workload.dtype, device=device, seed=seed)
            try:
                self.eager_error = self._eager_error()
            except RuntimeError as exc:  # the eager model cannot run in this dtype: the fixed tolerance alone
                warnings.warn(f"the eager {workload.dtype} model did not run ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); the gate uses tol_model_low_precision alone", stacklevel=2)
            else:
                self.tolerance = max(self.tolerance, settings.tol_model_eager_factor * self.eager_error)

    @property
    def max_seq_len(self) -> int:
        """Tokens a candidate's runner must hold: the prompt plus the longest decode it is asked for."""
        return self.workload.S + max(self.gate_steps, self.decode_steps) + 1

    def reference(self) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(prefill logits (B, S, V), decode logits [(B, V)] x gate_steps, greedy tokens (B, gate_steps))
        of the eager float32 model with the native kernels; computed once, when the evaluator is built."""
        if self._reference is None:
            model = self.reference_model
            assert model is not None
            with torch.no_grad():
                logits, state = model(self.tokens)
                tok = logits[:, -1].argmax(-1)
                steps, toks = [], [tok]
                for _ in range(self.gate_steps):
                    out, state = model(tok[:, None], state)
                    steps.append(out[:, -1])
                    tok = out[:, -1].argmax(-1)
                    toks.append(tok)
            self._reference = (logits, steps, torch.stack(toks[: self.gate_steps], dim=1))
        return self._reference

    def _reference_error(self, prefill: Callable[[torch.Tensor], tuple[torch.Tensor, Any]],
                         step: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]) -> float:
        """The gate's error measure: max logits error of ``prefill(tokens)`` and of the decode steps
        ``step(token (B,), state) -> (logits (B, V), state)`` fed the reference's greedy tokens."""
        ref_prefill, ref_steps, ref_tokens = self.reference()
        with torch.no_grad():
            logits, state = prefill(self.tokens)
            err = logits_error(logits, ref_prefill)
            for t, ref in enumerate(ref_steps):
                out, state = step(ref_tokens[:, t], state)
                err = max(err, logits_error(out, ref))
        return err

    def _eager_error(self) -> float:
        """The gate's error measure for the eager model in the workload's dtype (its native kernels)."""
        def step(token: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
            out, state = self.model(token[:, None], state)
            return out[:, -1], state

        return self._reference_error(self.model, step)

    def runner_for(self, config: ModelRunConfig, key: str) -> Any:
        """The compiled runner of ``config`` (built now, or kept from its evaluation)."""
        if key not in self.runners:
            self.runners[key] = self.runner_factory(self.model, config, self.workload.B, self.max_seq_len)
        return self.runners[key]

    def forget(self, keep: set[str]) -> None:
        """Drop the runners not in ``keep`` (their compiled graphs and static buffers)."""
        for key in list(self.runners):
            if key not in keep:
                del self.runners[key]

    def request(self, runner: Any) -> tuple[float, float]:
        """One timed request: (TTFT ms, decode ms per step over ``decode_steps`` back-to-back steps)."""
        dev = self.device
        with torch.no_grad():
            synchronize(dev)
            t0 = time.perf_counter()
            logits, state = runner.prefill(self.tokens, last_only=True)  # (B, V): what generation needs
            tok = logits.argmax(-1)
            synchronize(dev)
            t1 = time.perf_counter()
            for _ in range(self.decode_steps):
                out, state = runner.decode(tok, state)
                tok = out.argmax(-1)
            synchronize(dev)
            t2 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3 / self.decode_steps

    def gate(self, runner: Any) -> tuple[float, bool]:
        """(logits error vs the reference, greedy tokens identical) of ``runner``."""
        ref_tokens = self.reference()[2]
        err = self._reference_error(runner.prefill, runner.decode)
        with torch.no_grad():
            generated = runner.generate(self.tokens, self.gate_steps)
        mine = generated[:, self.workload.S:]
        same = tuple(mine.shape) == tuple(ref_tokens.shape) and bool(torch.equal(mine.to(ref_tokens.device), ref_tokens))
        return err, same

    def evaluate(self, config: ModelRunConfig, key: str) -> ModelEvaluation:
        """Compile, gate and (only if it passes) time ``config``; never raises for a bad candidate."""
        ev = ModelEvaluation(config, "ok", tolerance=self.tolerance)
        with _threads_kept():
            t0 = time.perf_counter()
            try:
                runner = self.runner_for(config, key)
                self.request(runner)  # the first request compiles prefill and decode graphs
                synchronize(self.device)
            except Exception as exc:  # noqa: BLE001 - any compile/run error makes a failed candidate
                self.runners.pop(key, None)
                ev.status, ev.reason = "failed", f"compile/run failed: {type(exc).__name__}: {str(exc)[:500]}"
                return ev
            ev.compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            try:
                ev.logits_error, ev.greedy_match = self.gate(runner)
            except Exception as exc:  # noqa: BLE001
                self.runners.pop(key, None)
                ev.status, ev.reason = "failed", f"gate run failed: {type(exc).__name__}: {str(exc)[:500]}"
                return ev
            ev.validate_s = time.perf_counter() - t0
            wl = self.workload
            if not ev.logits_error <= self.tolerance:
                ev.status = "rejected"
                own = "" if self.eager_error is None else \
                    f"; the eager {wl.dtype} model's own error is {self.eager_error:.3g}"
                ev.reason = (f"logits error {ev.logits_error:.3g} vs. the eager float32 model exceeds the "
                             f"{wl.dtype} tolerance {self.tolerance:.3g}{own}")
            elif wl.dtype == "float32" and not ev.greedy_match:
                ev.status = "rejected"
                ev.reason = (f"greedy tokens differ from the eager float32 model's within {self.gate_steps} "
                             f"steps (logits error {ev.logits_error:.3g})")
            if ev.status == "rejected":
                self.runners.pop(key, None)
                return ev
            try:
                ev.timing = self.time(runner)
            except Exception as exc:  # noqa: BLE001
                self.runners.pop(key, None)
                ev.status, ev.reason = "failed", f"timing run failed: {type(exc).__name__}: {str(exc)[:500]}"
        return ev

    def time(self, runner: Any) -> ModelTiming:
        """Warm up (untimed), then ``repeats`` timed requests."""
        for _ in range(self.settings.tune_warmup):
            self.request(runner)
        samples = [self.request(runner) for _ in range(self.repeats)]
        return timing_of(samples, self.decode_steps)


def timing_of(samples: list[tuple[float, float]], decode_steps: int) -> ModelTiming:
    """Medians and spreads of (TTFT ms, decode ms per step) request samples."""
    ttft = summarize([s[0] for s in samples])
    dec = summarize([s[1] for s in samples])
    obj = summarize([s[0] + s[1] * decode_steps for s in samples])
    return ModelTiming(ttft.median_ms, ttft.spread_ms, dec.median_ms, dec.spread_ms, obj.median_ms,
                       obj.spread_ms, len(samples), decode_steps)
