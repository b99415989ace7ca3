"""One candidate, start to finish: probe/compile -> validate against the reference -> time.

The stages are separate so a stage can be swapped without touching the others:
* ``KernelRunner`` runs a config on inputs (``run_kernel`` calls ``xk.mlstm`` / ``xk.mlstm_step``);
  a different runner is how another execution path - or, in tests, a deliberately wrong kernel
  variant - is put under the tuner's validation gate.
* ``CompileProbe`` compiles a config and returns the config that actually compiled and its compile
  time. The default, ``ratchet_probe``, runs ``xlstm_kernels.probe`` where a buffer limit applies
  (MPS, or the ``max_buffers`` setting), so a candidate over Metal's limit is tuned at the largest
  T_inner that fits; elsewhere it is ``compile_once``: a compile error is a failed candidate.

Validation shape: prefill candidates are validated on the workload's B, NH, DHQK, DHV and dtype, with
S cut to ``validate_max_s`` steps but never below one compiled span (t_inner x unit), so the kernel
that is validated is the kernel that is timed (same compile key). Decode steps are validated from
random non-zero states. Prefill validation inputs are ``xk.validation_inputs``: carried-in states, an
input-gate spike and a forget gate shut hard, the cases where reduced precision went wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import xlstm_kernels as xk
from xlstm_kernels.kernels.config import KernelConfig, Workload
from xlstm_kernels.device import synchronize
from xlstm_kernels.kernels.drivers import effective_t_inner, plan
from xlstm_kernels.kernels.inputs import random_inputs
from xlstm_kernels.kernels.reference import max_rel_err as rel_error  # re-exported as tuner.rel_error


from ._errors import CandidateFailed
from ._timing import Timing, interleaved_samples, summarize, time_callable, time_one  # noqa: F401 - re-exported
from .settings import TunerSettings

Inputs = tuple[torch.Tensor, ...]
Output = tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
KernelRunner = Callable[[Workload, Inputs, KernelConfig], Output]
CompileProbe = Callable[[KernelRunner, Workload, Inputs, KernelConfig, torch.device], "ProbeResult"]


def run_kernel(workload: Workload, inputs: Inputs, config: KernelConfig) -> Output:
    """The production path: ``xk.mlstm`` for prefill inputs, ``xk.mlstm_step`` for decode inputs."""
    if workload.mode == "decode":
        return xk.mlstm_step(*inputs, config=config)
    return xk.mlstm(*inputs, config=config, return_last_states=True)  # type: ignore[return-value]


@dataclass(frozen=True)
class ProbeResult:
    """What compiled: the effective config (T_inner may be ratcheted down) and its compile time."""

    config: KernelConfig
    compile_s: float


def compile_once(runner: KernelRunner, workload: Workload, inputs: Inputs, config: KernelConfig,
                 device: torch.device) -> ProbeResult:
    """Compile by running once (device-synchronised); any error is a ``CandidateFailed``."""
    t0 = time.perf_counter()
    try:
        runner(workload, inputs, config)
        synchronize(device)
    except Exception as exc:  # noqa: BLE001 - any compile/run error makes a failed candidate
        raise CandidateFailed(f"compile/run failed: {type(exc).__name__}: {str(exc)[:500]}") from exc
    return ProbeResult(config, time.perf_counter() - t0)


def ratchet_probe(runner: KernelRunner, workload: Workload, inputs: Inputs, config: KernelConfig,
                  device: torch.device) -> ProbeResult:
    """Compile-probe with the T_inner ratchet where a buffer limit applies, else ``compile_once``."""
    from xlstm_kernels.probe import ProbeError, probe, resolve_max_buffers

    if workload.mode == "decode" or resolve_max_buffers("auto", device) is None:
        return compile_once(runner, workload, inputs, config, device)
    t0 = time.perf_counter()
    result = probe(config, workload, device=device)
    try:
        result.raise_for_failure()  # the failure's named ProbeError (its kind) becomes the cause
    except ProbeError as exc:
        raise CandidateFailed(f"probe failed ({exc.kind}): {result.message[:500]}") from exc
    assert result.effective is not None  # a probe that succeeded has an effective config
    compiled = compile_once(runner, workload, inputs, result.effective, device)
    return ProbeResult(result.effective, time.perf_counter() - t0)


def make_inputs(workload: Workload, S: int, device: torch.device, seed: int) -> Inputs:
    """Random inputs of the workload's shape with ``S`` steps (decode: step inputs and states)."""
    B, NH, DHQK, DHV = workload.B, workload.NH, workload.DHQK, workload.DHV
    dt = workload.torch_dtype
    if workload.mode == "prefill":
        return random_inputs(B, NH, S, DHQK, DHV, dtype=dt, device=device, seed=seed)
    g = torch.Generator().manual_seed(seed)
    q, k, v, i, f = random_inputs(B, NH, S, DHQK, DHV, generator=g)  # float32 on the CPU: sliced below
    c = torch.randn(B, NH, DHQK, DHV, generator=g) * 0.5
    n = torch.randn(B, NH, DHQK, generator=g) * 0.5
    m = torch.randn(B, NH, 1, generator=g)
    step = tuple(x[:, :, 0].to(device, dt) for x in (q, k, v)) + (i[:, :, :1].to(device), f[:, :, :1].to(device))
    # C as a decode loop feeds it back (the step's own output layout): the steady state is what is timed
    return step + (xk.step_layout(c.to(device)), n.to(device), m.to(device))


def validation_inputs(workload: Workload, S: int, device: torch.device, seed: int) -> Inputs:
    """What the gate validates on: prefill, ``xk.validation_inputs`` (carried-in states, an input-gate
    spike, a forget gate shut hard); decode, one step from random non-zero states (``make_inputs``)."""
    if workload.mode == "decode":
        return make_inputs(workload, 1, device, seed)
    return xk.validation_inputs(workload.B, workload.NH, S, workload.DHQK, workload.DHV,
                                workload.torch_dtype, device, seed)


def _reference(workload: Workload, inputs: Inputs) -> Output:
    if workload.mode == "decode":
        q, k, v, i, f, c, n, m = inputs
        h, st = xk.mlstm_reference(q[:, :, None], k[:, :, None], v[:, :, None], i, f, c, n, m)
        return h[:, :, 0], st
    return xk.mlstm_reference(*inputs)


def calls_per_sample(workload: Workload, settings: TunerSettings) -> int:
    """Decode steps are timed in bursts, as a decode loop enqueues them; a prefill call alone."""
    return settings.tune_decode_burst if workload.mode == "decode" else 1


@dataclass
class Evaluation:
    """The outcome of one candidate; ``status`` is ``ok``, ``rejected`` or ``failed``."""

    config: KernelConfig
    effective: KernelConfig
    status: str
    reason: str | None = None
    t_inner_effective: int | None = None
    compile_s: float | None = None
    validate_s: float | None = None
    equivalence_error: float | None = None
    tolerance: float | None = None
    validation_shape: str | None = None
    timing: Timing | None = None
    tokens_per_s: float | None = None


class Evaluator:
    """Evaluates candidates of one workload on one device; caches inputs and float64 references."""

    def __init__(self, workload: Workload, device: torch.device, settings: TunerSettings, *,
                 runner: KernelRunner = run_kernel, probe: CompileProbe | None = None,
                 quick: bool = False) -> None:
        self.workload, self.device, self.settings = workload, device, settings
        self.runner, self.probe = runner, probe or ratchet_probe
        self.repeats = max(3, settings.tune_repeats // 2) if quick else settings.tune_repeats
        self.tolerance = settings.tol_fp32 if workload.dtype == "float32" else settings.tol_low_precision
        self._timing_inputs: Inputs | None = None
        self._validation: dict[int, tuple[Inputs, Output]] = {}

    def timing_inputs(self) -> Inputs:
        """The full-shape inputs every candidate is timed on (one draw per workload)."""
        if self._timing_inputs is None:
            S = 1 if self.workload.mode == "decode" else self.workload.S
            self._timing_inputs = make_inputs(self.workload, S, self.device, self.settings.tune_seed)
        return self._timing_inputs

    def validation_len(self, config: KernelConfig) -> int:
        """Steps validated for ``config`` (see the module docstring)."""
        if self.workload.mode == "decode":
            return 1
        span = plan(config, self.workload.NH, self.workload.S).span
        return min(self.workload.S, max(self.settings.validate_max_s, span))

    def validation_case(self, config: KernelConfig) -> tuple[Inputs, Output]:
        """Validation inputs and their float64 reference for ``config``'s validation length."""
        S = self.validation_len(config)
        if S not in self._validation:
            inputs = validation_inputs(self.workload, S, self.device, self.settings.tune_seed + 1)
            self._validation[S] = (inputs, _reference(self.workload, inputs))
        return self._validation[S]

    def evaluate(self, config: KernelConfig) -> Evaluation:
        """Probe/compile, validate and (only if valid) time ``config``; never raises for a bad candidate.

        Runs inside ``xk.tuning()``: the opt-in chunk shrink never fires, so a device out-of-memory
        error fails the candidate instead of timing a shrunk chunk under ``config``'s name.
        """
        with xk.tuning():
            return self._evaluate(config)

    def _evaluate(self, config: KernelConfig) -> Evaluation:
        wl = self.workload
        inputs, ref = self.validation_case(config)
        shape = f"B={wl.B},NH={wl.NH},S={inputs[0].shape[2] if wl.mode == 'prefill' else 1}," \
                f"DHQK={wl.DHQK},DHV={wl.DHV},{wl.dtype}"
        try:
            probed = self.probe(self.runner, wl, inputs, config, self.device)  # the probe call site
        except CandidateFailed as exc:
            return Evaluation(config, config, "failed", str(exc), effective_t_inner(config, wl),
                              validation_shape=shape)
        eff = probed.config
        ev = Evaluation(config, eff, "ok", t_inner_effective=effective_t_inner(eff, wl),
                        compile_s=probed.compile_s, tolerance=self.tolerance, validation_shape=shape)
        t0 = time.perf_counter()
        try:
            out = self.runner(wl, inputs, eff)
            synchronize(self.device)
        except Exception as exc:  # noqa: BLE001
            ev.status, ev.reason = "failed", f"run failed: {type(exc).__name__}: {str(exc)[:500]}"
            return ev
        ev.equivalence_error = rel_error(out, ref)
        ev.validate_s = time.perf_counter() - t0
        if not ev.equivalence_error <= self.tolerance:
            ev.status = "rejected"
            ev.reason = (f"equivalence error {ev.equivalence_error:.3g} vs. the float64 reference "
                         f"exceeds the {wl.dtype} tolerance {self.tolerance:.3g}")
            return ev
        timing_in = self.timing_inputs()
        try:
            ev.timing = time_callable(lambda: self.runner(wl, timing_in, eff), self.device,
                                      warmup=self.settings.tune_warmup, repeats=self.repeats,
                                      budget_s=self.settings.tune_trial_budget_s,
                                      calls=calls_per_sample(wl, self.settings), settings=self.settings)
        except Exception as exc:  # noqa: BLE001
            ev.status, ev.reason = "failed", f"timing run failed: {type(exc).__name__}: {str(exc)[:500]}"
            return ev
        ev.tokens_per_s = wl.tokens() / (ev.timing.median_ms / 1e3)
        return ev
