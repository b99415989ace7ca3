"""The model study: Optuna over ``ModelRunConfig``s of one model workload; the entry point ``tune_model``.

    result = tune_model("tiny", batch_size=1, prompt_len=64, device="cpu", quick=True)
    result.winner.config, result.speedup, result.rejected
    entry = model_profile_entry(result)          # -> xk.ModelProfileEntry (NoWinner if none)

Like the kernel study (``tuner._study``): one Optuna study per (machine, model workload, space,
software stack) in the tuner's Optuna storage, resumed when run again; a space of at most
``tune_grid_max`` candidates is exhausted (``ModelRunConfig()`` first), a larger one samples with TPE
after the default, up to ``tune_model_n_trials`` evaluated candidates. Every evaluated candidate,
rejected and failed ones with their reason, lands in the tuning DB (``model_trials``); the best
``tune_retime_top_k`` and the default are then re-timed side by side in interleaved rounds, and the
winner (``model_results``) is the one with the smallest median request time in those rounds.
Gate, timing and objective: ``tuner._model_evaluate``.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from storage import TuningDB, kernel_winners, record_model_result, record_model_trial, using_db
from xlstm_kernels.kernels.config import KernelConfig
from xlstm_kernels.device import default_device
from xlstm_kernels.models.presets import ModelSpecError, build_model, head_shape, resolve_model_config
from xlstm_kernels.models.workload import ModelWorkload, run_config_from_dict, run_config_short, run_config_to_dict
from xlstm_kernels.profiles.profile import ModelProfileEntry, ProfileError, load_profile
from xlstm_kernels.runner import MlstmKernelsPrefill, ModelRunConfig, model_key
from xlstm_kernels.runner.external import unavailable_reason

from ._errors import CandidateFailed, TunerError
from ._external_check import HeadShape, external_prefill_failure
from ._model_evaluate import ModelEvaluation, ModelEvaluator, RunnerFactory, default_runner_factory, timing_of
from ._model_space import ModelSpace, run_config_key
from ._progress import Progress, ProgressEvent
from ._study import _finished, optuna_storage, queue_one_unexplored, software_tag, tuning_run, unexplored_order
from .settings import TunerSettings, resolve_tuner_settings


class UnknownModel(TunerError, ValueError):
    """A model spec that is neither a preset nor an xLSTMLargeConfig JSON file, or bad B/S/dtype."""


@dataclass(frozen=True)
class ModelCandidate:
    """A validated model candidate's numbers (from its trial, or from the side-by-side re-timing)."""

    config: ModelRunConfig
    ttft_ms: float
    decode_ms: float
    objective_ms: float
    spread_ms: float
    decode_tokens_per_s: float
    logits_error: float
    greedy_match: bool
    compile_s: float | None
    trial_id: int | None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        d = dict(self.__dict__)
        d["config"] = run_config_to_dict(self.config)
        return d


@dataclass(frozen=True)
class ModelRejected:
    """A model candidate that was rejected (failed the gate) or failed (compile/run error), with why."""

    config: ModelRunConfig
    status: str
    reason: str
    logits_error: float | None
    trial_id: int


@dataclass
class ModelWorkloadResult:
    """What tuning one model workload found: the winner (None if nothing passed) and every rejection."""

    workload: ModelWorkload
    model: dict[str, Any]
    run_id: int
    study_name: str
    winner: ModelCandidate | None
    default: ModelCandidate | None
    speedup: float | None  # default's median request time / the winner's, from the paired re-timing
    retimed: list[ModelCandidate]
    rejected: list[ModelRejected]
    n_trials: int
    n_candidates: int
    sampler: str
    decode_steps: int
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for Prefect artifacts and the CLI)."""
        return {
            "workload": str(self.workload), "model": self.model, "run_id": self.run_id,
            "study_name": self.study_name, "winner": self.winner.to_dict() if self.winner else None,
            "default": self.default.to_dict() if self.default else None, "speedup": self.speedup,
            "retimed": [c.to_dict() for c in self.retimed],
            "rejected": [{"config": run_config_to_dict(r.config), "status": r.status, "reason": r.reason,
                          "logits_error": r.logits_error, "trial_id": r.trial_id} for r in self.rejected],
            "n_trials": self.n_trials, "n_candidates": self.n_candidates, "sampler": self.sampler,
            "decode_steps": self.decode_steps, "elapsed_s": self.elapsed_s,
        }


def model_workload_for(model: str | Path | dict[str, Any], batch_size: int, prompt_len: int,
                       dtype: str) -> tuple[dict[str, Any], ModelWorkload]:
    """(xLSTMLargeConfig fields, model workload) of a model spec at B, S, dtype; ``UnknownModel`` if bad.

    The model key is ``xk.model_key`` of the model built on the meta device (no weights allocated).
    """
    try:
        fields = resolve_model_config(model)
        head_shape(fields)
        meta = build_model(fields, dtype=dtype, device="meta")
        return fields, ModelWorkload(model_key(meta), batch_size, prompt_len, dtype)
    except (ModelSpecError, ValueError, TypeError) as exc:
        raise UnknownModel(f"model {model if isinstance(model, (str, Path)) else 'config'}: {exc}") from None


def prefill_candidates(db: TuningDB, machine_id: str, fields: dict[str, Any], dtype: str,
                       settings: TunerSettings) -> list[KernelConfig]:
    """This machine's kernel winners for the model's head shape: tuning-DB results, then profile
    entries (prefill, same DHQK/DHV/dtype, heads_per_band dividing NH), at most
    ``tune_model_prefill_winners``."""
    NH, DHQK, DHV = head_shape(fields)
    found = [KernelConfig.from_dict(c) for c in kernel_winners(db, machine_id, NH=NH, DHQK=DHQK, DHV=DHV, dtype=dtype)]
    profile = None
    with contextlib.suppress(ProfileError):
        from xlstm_kernels.profiles.profile import default_profile_path

        profile = load_profile(default_profile_path(machine_id))
    if profile is not None and profile.machine_id == machine_id:
        for e in profile.entries:
            w, cfg = e.parsed_workload, e.kernel_config
            hpb = cfg.heads_per_band
            if ((w.DHQK, w.DHV, w.dtype, w.mode) == (DHQK, DHV, dtype, "prefill")
                    and (hpb is None or NH % hpb == 0) and cfg not in found):
                found.append(cfg)
    return found[: settings.tune_model_prefill_winners]


DEFAULT_MLSTM_KERNELS = ("chunkwise--triton_xl_chunk@128", "chunkwise--triton_limit_chunk@64")


def mlstm_kernels_candidates(device: torch.device, settings: TunerSettings, shape: HeadShape | None = None,
                             dtype: str = "float32") -> list[MlstmKernelsPrefill]:
    """The ``mlstm_kernels`` prefill candidates: the ``tune_model_mlstm_kernels`` setting's (ValueError
    for one that cannot run here), else on CUDA those of ``DEFAULT_MLSTM_KERNELS`` that run here.

    With ``shape`` (B, NH, S, DHQK, DHV), each candidate is first run once in a child process
    (``external_prefill_failure``, ``tune_model_mlstm_kernels_check_s``): one that fails there is an
    error when the setting names it, and is left out with a warning when it is a default.
    """
    explicit = settings.tune_model_mlstm_kernels is not None
    if explicit:
        out = [MlstmKernelsPrefill.parse(spec) for spec in settings.tune_model_mlstm_kernels]
        for pre in out:
            if (why := unavailable_reason(pre)) is not None:
                raise ValueError(f"tune_model_mlstm_kernels: {why}")
    elif device.type != "cuda":
        return []
    else:
        found = (MlstmKernelsPrefill.parse(spec) for spec in DEFAULT_MLSTM_KERNELS)
        out = [pre for pre in found if unavailable_reason(pre) is None]
    if shape is None or not settings.tune_model_mlstm_kernels_check_s:
        return out
    kept = []
    for pre in out:
        why = external_prefill_failure(pre, shape, dtype, device, settings.tune_model_mlstm_kernels_check_s)
        if why is None:
            kept.append(pre)
        elif explicit:
            raise ValueError(f"tune_model_mlstm_kernels: {why}")
        else:
            warnings.warn(f"{why}; the model study leaves it out", stacklevel=2)
    return kept


def prefill_shape(fields: dict[str, Any], wl: ModelWorkload) -> HeadShape:
    """(B, NH, S, DHQK, DHV) of the workload's prefill mLSTM calls."""
    NH, DHQK, DHV = head_shape(fields)
    return wl.B, NH, wl.S, DHQK, DHV


def study_name_for_model(machine_id: str, workload: ModelWorkload, space: ModelSpace) -> str:
    """The Optuna study of a (machine, model workload, space, software stack)."""
    return f"{machine_id}/{workload}/{space.signature()}/{software_tag()}"


def tune_model(
    model: str | Path | dict[str, Any],
    *,
    batch_size: int = 1,
    prompt_len: int = 2048,
    dtype: str = "float32",
    db: TuningDB | str | Path | None = None,
    device: torch.device | str | None = None,
    n_trials: int | None = None,
    time_budget_s: float | None = None,
    progress: Progress | None = None,
    quick: bool = False,
    run_id: int | None = None,
    space: ModelSpace | None = None,
    runner_factory: RunnerFactory = default_runner_factory,
    settings: TunerSettings | None = None,
) -> ModelWorkloadResult:
    """Tune a model on this machine: Optuna study -> re-time the best side by side -> winner.

    model: a preset name (``xlstm-7b-shape``, ``tiny``), a JSON file of xLSTMLargeConfig fields, or
        such a dict (``UnknownModel`` if none of those). The model is built with seeded random
        weights in ``dtype`` on ``device`` (default best available); the gate's reference in float32.
    n_trials: candidates to evaluate in a TPE space (default ``tune_model_n_trials``; with ``quick``
        a third of it, at least 2); a grid space runs every remaining candidate unless given.
    run_id: the run the trials belong to; None opens (and closes) a run of its own.
    space: the ``ModelSpace`` (default: from settings, prefill candidates from this machine's winners
        and ``mlstm_kernels_candidates``).
    runner_factory: builds the runner of a candidate (default ``xk.compile_model``); a seam for
        putting another runner - in tests a deliberately wrong one - under the gate.
    """
    settings = resolve_tuner_settings(settings)
    fields, wl = model_workload_for(model, batch_size, prompt_len, dtype)
    dev = torch.device(device) if device is not None else default_device()
    with using_db(db) as tdb:
        if run_id is None:
            with tuning_run(tdb, dev, quick, settings) as (rid, _mid):
                return _tune_model(fields, wl, tdb, dev, rid, n_trials, time_budget_s, progress, quick,
                                   space, runner_factory, settings)
        return _tune_model(fields, wl, tdb, dev, run_id, n_trials, time_budget_s, progress, quick, space,
                           runner_factory, settings)


def _tune_model(fields: dict[str, Any], wl: ModelWorkload, db: TuningDB, dev: torch.device, run_id: int,
                n_trials: int | None, time_budget_s: float | None, progress: Progress | None, quick: bool,
                space: ModelSpace | None, runner_factory: RunnerFactory,
                settings: TunerSettings) -> ModelWorkloadResult:
    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    machine_id = db.run(run_id)["machine_id"]
    space = space or ModelSpace.from_settings(
        wl, dev, settings, [*prefill_candidates(db, machine_id, fields, wl.dtype, settings),
                            *mlstm_kernels_candidates(dev, settings, prefill_shape(fields, wl), wl.dtype)])
    candidates = space.candidates()
    by_key = {run_config_key(c): c for c in candidates}
    default_key = run_config_key(space.default)
    use_grid = len(candidates) <= settings.tune_grid_max
    study_name = study_name_for_model(machine_id, wl, space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            study_name=study_name, storage=optuna_storage(db, settings), direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=settings.tune_seed, multivariate=True, group=True,
                                               n_startup_trials=3),
            load_if_exists=True)
    done = _finished(study)
    waiting = {t.user_attrs.get("config_key") for t in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.WAITING,))}
    for cfg in (candidates if use_grid else [space.default]):
        key = run_config_key(cfg)
        if key not in done and key not in waiting:
            study.enqueue_trial(space.params_of(cfg), user_attrs={"config_key": key})
            waiting.add(key)
    if use_grid:
        total = len(candidates) - len(done) if n_trials is None else min(n_trials, len(candidates) - len(done))
    else:
        target = n_trials or (max(2, settings.tune_model_n_trials // 3) if quick else settings.tune_model_n_trials)
        total = max(0, target - len(done))
    evaluator = ModelEvaluator(fields, wl, dev, settings, quick=quick, runner_factory=runner_factory)
    state = {"evaluated": 0}
    order = unexplored_order([(k, space.params_of(c)) for k, c in by_key.items()], settings.tune_seed)

    def report(status: str, cfg: ModelRunConfig, median: float | None) -> None:
        if progress is not None:
            ok = [t for t in done.values() if t.user_attrs.get("status") == "ok"]
            best = min(ok, key=lambda t: t.value) if ok else None
            progress(ProgressEvent(
                str(wl), "trial", state["evaluated"], total, status, run_config_short(cfg), median,
                None if best is None else float(best.value),
                None if best is None else run_config_short(best.user_attrs["config"]), time.perf_counter() - t0))

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        cfg = space.suggest(trial)
        key = run_config_key(cfg)
        trial.set_user_attr("config_key", key)
        trial.set_user_attr("config", run_config_to_dict(cfg))
        if key not in by_key:
            queue_one_unexplored(study, order, done, waiting, key_attr=True)
            raise optuna.TrialPruned("outside the search space")
        prior = done.get(key)
        if prior is not None:  # TPE proposed an evaluated candidate: reuse its value
            trial.set_user_attr("duplicate_of", prior.number)
            queue_one_unexplored(study, order, done, waiting, key_attr=True)
            if prior.state != optuna.trial.TrialState.COMPLETE:
                raise CandidateFailed(f"duplicate of failed trial {prior.number}")
            return float(prior.value)
        ev = evaluator.evaluate(cfg, key)
        trial_id = _record(db, run_id, wl, machine_id, fields, study_name, trial.number, ev,
                           key == default_key, evaluator.decode_steps)
        state["evaluated"] += 1
        attrs = {"status": ev.status, "trial_id": trial_id, "reason": ev.reason,
                 "logits_error": ev.logits_error, "greedy_match": ev.greedy_match, "compile_s": ev.compile_s}
        if ev.timing is not None:
            tm = ev.timing
            attrs.update(ttft_ms=tm.ttft_ms, decode_ms=tm.decode_ms, spread_ms=tm.objective_spread_ms)
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        db.heartbeat(run_id)
        if ev.status == "failed":
            raise CandidateFailed(ev.reason or "failed")
        assert ev.logits_error is not None and ev.tolerance is not None
        trial.set_constraint("logits", (ev.logits_error if math.isfinite(ev.logits_error) else 1e30) - ev.tolerance)
        return ev.timing.objective_ms if ev.timing is not None else math.inf

    def after(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        if frozen.user_attrs.get("duplicate_of") is None and "status" in frozen.user_attrs:
            done.setdefault(frozen.user_attrs["config_key"], frozen)
            report(frozen.user_attrs["status"], run_config_from_dict(frozen.user_attrs["config"]),
                   frozen.value if frozen.user_attrs["status"] == "ok" else None)
            _keep_best_runners(evaluator, done, default_key, settings.tune_retime_top_k)
        if state["evaluated"] >= total or len(done) >= len(candidates):
            study.stop()

    if total > 0 and len(done) < len(candidates):
        cap = total if use_grid else 5 * total + 20
        study.optimize(objective, n_trials=cap, timeout=time_budget_s, catch=(CandidateFailed,),
                       callbacks=[after], gc_after_trial=False)
    return _finish(fields, wl, db, run_id, machine_id, study_name, evaluator, settings, progress,
                   state["evaluated"], len(candidates), "grid" if use_grid else "tpe", default_key, t0,
                   _finished(study))


def _keep_best_runners(evaluator: ModelEvaluator, done: dict[str, optuna.trial.FrozenTrial],
                       default_key: str, top_k: int) -> None:
    """Keep the compiled runners the re-timing will use (the best ``top_k`` and the default) only."""
    ok = sorted((k for k, t in done.items() if t.user_attrs.get("status") == "ok"), key=lambda k: done[k].value)
    evaluator.forget({*ok[:top_k], default_key})


def _record(db: TuningDB, run_id: int, wl: ModelWorkload, machine_id: str, fields: dict[str, Any],
            study_name: str, number: int, ev: ModelEvaluation, is_default: bool, decode_steps: int) -> int:
    tm = ev.timing
    return record_model_trial(
        db, run_id=run_id, workload=wl, machine_id=machine_id, model=fields,
        config=run_config_to_dict(ev.config), status=ev.status, reason=ev.reason, is_default=is_default,
        study_name=study_name, trial_number=number, compile_s=ev.compile_s, validate_s=ev.validate_s,
        logits_error=ev.logits_error if ev.logits_error is None or math.isfinite(ev.logits_error) else None,
        tolerance=ev.tolerance, greedy_match=ev.greedy_match,
        ttft_ms=tm.ttft_ms if tm else None, ttft_spread_ms=tm.ttft_spread_ms if tm else None,
        decode_ms=tm.decode_ms if tm else None, decode_spread_ms=tm.decode_spread_ms if tm else None,
        decode_tokens_per_s=ev.decode_tokens_per_s(wl.B), decode_steps=decode_steps if tm else None,
        objective_ms=tm.objective_ms if tm else None, repeats=tm.repeats if tm else None)


def _candidate(t: optuna.trial.FrozenTrial, B: int) -> ModelCandidate:
    a = t.user_attrs
    return ModelCandidate(run_config_from_dict(a["config"]), a["ttft_ms"], a["decode_ms"], float(t.value),
                          a["spread_ms"], B / (a["decode_ms"] / 1e3), a["logits_error"], bool(a["greedy_match"]),
                          a.get("compile_s"), a.get("trial_id"))


def _finish(fields: dict[str, Any], wl: ModelWorkload, db: TuningDB, run_id: int, machine_id: str,
            study_name: str, evaluator: ModelEvaluator, settings: TunerSettings, progress: Progress | None,
            evaluated: int, n_candidates: int, sampler: str, default_key: str, t0: float,
            done: dict[str, optuna.trial.FrozenTrial]) -> ModelWorkloadResult:
    """Re-time the top candidates and the default interleaved; store and return the winner."""
    ok = sorted((t for t in done.values() if t.user_attrs.get("status") == "ok"), key=lambda t: t.value)
    rejected = [ModelRejected(run_config_from_dict(t.user_attrs["config"]), t.user_attrs["status"],
                              t.user_attrs.get("reason") or "", t.user_attrs.get("logits_error"),
                              t.user_attrs["trial_id"])
                for t in done.values() if t.user_attrs.get("status") in ("rejected", "failed")]
    top = ok[: settings.tune_retime_top_k]
    if default_key in done and done[default_key] in ok and done[default_key] not in top:
        top.append(done[default_key])
    result = ModelWorkloadResult(wl, fields, run_id, study_name, None, None, None, [], rejected, evaluated,
                                 n_candidates, sampler, evaluator.decode_steps, 0.0)
    if not top:
        result.elapsed_s = time.perf_counter() - t0
        return result
    retimed = _retime([_candidate(t, wl.B) for t in top], evaluator, settings)
    winner = min(retimed, key=lambda c: c.objective_ms)
    default = next((c for c in retimed if run_config_key(c.config) == default_key), None)
    speedup = default.objective_ms / winner.objective_ms if default else None
    record_model_result(
        db, run_id=run_id, workload=wl, machine_id=machine_id, config=run_config_to_dict(winner.config),
        trial_id=winner.trial_id, ttft_ms=winner.ttft_ms, decode_tokens_per_s=winner.decode_tokens_per_s,
        objective_ms=winner.objective_ms, default_objective_ms=default.objective_ms if default else None,
        speedup=speedup, logits_error=winner.logits_error, n_trials=len(done),
        n_rejected=sum(r.status == "rejected" for r in rejected),
        n_failed=sum(r.status == "failed" for r in rejected), retime=[c.to_dict() for c in retimed])
    result.winner, result.default, result.speedup, result.retimed = winner, default, speedup, retimed
    result.elapsed_s = time.perf_counter() - t0
    evaluator.forget(set())
    if progress is not None:
        short = run_config_short(winner.config)
        progress(ProgressEvent(str(wl), "retime", len(done), len(done), "done", short, winner.objective_ms,
                               winner.objective_ms, short, result.elapsed_s))
    return result


def _retime(cands: list[ModelCandidate], evaluator: ModelEvaluator, settings: TunerSettings) -> list[ModelCandidate]:
    """Interleaved rounds (rotating order) of one request per candidate; medians per candidate."""
    runners = []
    for c in cands:  # a candidate of an earlier process compiles here, outside the rounds
        r = evaluator.runner_for(c.config, run_config_key(c.config))
        for _ in range(settings.tune_warmup):
            evaluator.request(r)
        runners.append(r)
    samples: list[list[tuple[float, float]]] = [[] for _ in cands]
    n = len(cands)
    for rnd in range(settings.tune_retime_rounds):
        for j in range(n):
            idx = (j + rnd) % n
            samples[idx].append(evaluator.request(runners[idx]))
    out = []
    for c, s in zip(cands, samples):
        tm = timing_of(s, evaluator.decode_steps)
        out.append(ModelCandidate(c.config, tm.ttft_ms, tm.decode_ms, tm.objective_ms, tm.objective_spread_ms,
                                  evaluator.workload.B / (tm.decode_ms / 1e3), c.logits_error, c.greedy_match,
                                  c.compile_s, c.trial_id))
    return out


class NoModelWinner(TunerError):
    """A model study ended without a single candidate that passed the gate: nothing to publish."""


def model_profile_entry(result: ModelWorkloadResult) -> ModelProfileEntry:
    """The profile entry of a tuned model workload's winner (``NoModelWinner`` if none passed)."""
    w = result.winner
    if w is None:
        reasons = "; ".join(f"{run_config_short(r.config)}: {r.reason}" for r in result.rejected[:3]) or "no candidate ran"
        raise NoModelWinner(f"{result.workload}: no candidate passed the gate ({len(result.rejected)} "
                            f"rejected/failed: {reasons})")
    return ModelProfileEntry(
        workload=str(result.workload), config=run_config_to_dict(w.config), ttft_s=w.ttft_ms / 1e3,
        decode_tokens_per_s=w.decode_tokens_per_s, objective_s=w.objective_ms / 1e3,
        decode_steps=result.decode_steps, speedup_vs_default=result.speedup or 1.0,
        logits_error=w.logits_error, greedy_match=w.greedy_match)
