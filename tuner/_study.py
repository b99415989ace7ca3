"""Optuna studies per (machine, workload): ``tune_workload`` runs one (``tuner.autotune`` runs a whole tuning run).

A whole tuning run - studies, then the published profile and the report - is ``tuner.autotune``
(``tuner._run``), which calls ``tune_workload`` per workload.

Study storage: Optuna's RDB storage at ``settings.optuna_storage`` or, by default, an SQLite file
beside the tuning DB (``<db stem>.optuna.db``; Optuna's own ``trials`` table would clash with ours in
one file). The study name is ``<machine id>/<workload>/<space signature>``, so running again loads
the same study and continues it: finished trials are not repeated, a trial left RUNNING by a dead
process (kill, Ctrl-C) is marked FAIL and its candidate is tried again.

Sampler: a space with at most ``tune_grid_max`` distinct candidates is exhausted - every candidate
is enqueued once (default first); a larger space enqueues the default first, then the space's
seeds (the default with the sequence in one compiled block, see ``SearchSpace.seeds``), and then
samples with TPE. Rejected candidates (failed validation) complete with value +inf and a violated
``trial.set_constraint("equivalence", error - tolerance)``; failed ones (compile/run error) are
Optuna FAIL trials. Every trial also lands in the tuning DB with its status and reason.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import socket
import time
import warnings
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
import torch

import xlstm_kernels as xk
from storage import TuningDB, pid_alive, using_db
from xlstm_kernels.profiles.fingerprint import triton_version
from xlstm_kernels.kernels.config import KernelConfig, Workload
from xlstm_kernels.device import default_device
from xlstm_kernels.kernels.validation import check_workload_memory

from ._attrs import display_attrs
from ._errors import CandidateFailed
from ._evaluate import CompileProbe, Evaluation, Evaluator, KernelRunner, run_kernel
from ._evaluate import calls_per_sample, interleaved_samples, summarize
from ._fleet import claim_of, heartbeat_enabled, make_storage, node_name, storage_url, study_owner, wait_for_fleet
from ._timing import Interval, LoadMeter, instability, median_interval, paired_ratios
from ._progress import Progress, ProgressEvent
from ._space import SearchSpace, effective_key, effective_t_inner, parse_workload, probe_key
from .settings import TunerSettings, get_tuner_settings, resolve_tuner_settings

SamplerChoice = Literal["auto", "grid", "tpe"]


@dataclass(frozen=True)
class Candidate:
    """A validated candidate's numbers (from its trial, or from the side-by-side re-timing)."""

    config: KernelConfig
    t_inner_effective: int | None
    median_ms: float
    spread_ms: float
    tokens_per_s: float
    equivalence_error: float
    compile_s: float | None
    trial_id: int | None
    instability: str | None = None  # why its samples stayed unstable (it may not decide a winner)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        d = dict(self.__dict__)
        d["config"] = self.config.to_dict()
        return d


@dataclass(frozen=True)
class Rejected:
    """A candidate that was rejected (failed validation) or failed (compile/run error), with why."""

    config: KernelConfig
    status: str
    reason: str
    equivalence_error: float | None
    trial_id: int


@dataclass
class WorkloadResult:
    """What tuning one workload found: the winner (None if nothing validated) and every rejection."""

    workload: Workload
    run_id: int
    study_name: str
    winner: Candidate | None
    default: Candidate | None
    speedup: float | None  # median of per-round default/winner ratios, fresh paired rounds
    retimed: list[Candidate]
    rejected: list[Rejected]
    n_trials: int  # trials evaluated by this call (duplicates of earlier candidates excluded)
    n_candidates: int  # distinct candidates in the space
    sampler: str
    elapsed_s: float
    speedup_interval: Interval | None = None  # the speedup's order-statistic interval
    busy_reason: str | None = None  # set: "machine busy: results not trustworthy", and why
    skipped: list[str] = field(default_factory=list)  # candidates skipped for a known compile failure

    @property
    def trusted(self) -> bool:
        """False when the machine was too busy for the winner and speedup to be trusted."""
        return self.busy_reason is None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for Prefect artifacts and the CLI)."""
        return {
            "workload": str(self.workload), "run_id": self.run_id, "study_name": self.study_name,
            "winner": self.winner.to_dict() if self.winner else None,
            "default": self.default.to_dict() if self.default else None, "speedup": self.speedup,
            "retimed": [c.to_dict() for c in self.retimed],
            "rejected": [{"config": r.config.to_dict(), "status": r.status, "reason": r.reason,
                          "equivalence_error": r.equivalence_error, "trial_id": r.trial_id}
                         for r in self.rejected],
            "n_trials": self.n_trials, "n_candidates": self.n_candidates, "sampler": self.sampler,
            "elapsed_s": self.elapsed_s,
            "speedup_interval": None if self.speedup_interval is None else {
                "low": self.speedup_interval.low, "high": self.speedup_interval.high,
                "confidence": self.speedup_interval.confidence, "rounds": self.speedup_interval.n},
            "trusted": self.trusted, "busy_reason": self.busy_reason, "skipped": self.skipped,
        }


# -- plumbing ------------------------------------------------------------------------------------

_STORAGES: dict[str, optuna.storages.BaseStorage] = {}


def optuna_storage_url(db_path: Path, settings: TunerSettings) -> str:
    """Where the studies of the tuning DB at ``db_path`` live: settings.optuna_storage, else SQLite beside it
    (fleet mode requires the former: ``FleetMisconfigured``)."""
    db_path = Path(db_path)
    return storage_url(f"sqlite:///{db_path.with_name(db_path.stem + '.optuna.db')}", settings)


def optuna_storage(db: TuningDB, settings: TunerSettings) -> optuna.storages.BaseStorage:
    """Optuna storage for ``db`` (``optuna_storage_url``); cached.

    Fleet mode (``settings.fleet``) needs ``optuna_storage`` (``FleetMisconfigured``) and adds Optuna's
    heartbeat and the retry of stale trials (``tuner._fleet.make_storage``).
    """
    url = optuna_storage_url(db.path, settings)
    cache_key = json.dumps([url, settings.fleet, settings.fleet_heartbeat_s, settings.fleet_grace_s,
                            settings.fleet_max_retry])
    if cache_key not in _STORAGES:
        _STORAGES[cache_key] = make_storage(url, settings)
    return _STORAGES[cache_key]


@contextlib.contextmanager
def tuning_run(db: TuningDB, device: torch.device | str, quick: bool = False,
               settings: TunerSettings | None = None) -> Iterator[tuple[int, str]]:
    """A run row from start to its final status; yields ``(run_id, machine_id)``.

    Records the machine's fingerprint, marks runs of dead processes interrupted, opens the run;
    on exit closes it ``completed``, on Ctrl-C ``interrupted``, on an error ``failed`` (re-raised).
    For flows that call ``tune_workload(..., run_id=run_id)`` per workload themselves.
    """
    settings = resolve_tuner_settings(settings)
    device = torch.device(device)
    fp = xk.fingerprint(device)
    machine_id = db.record_machine(fp)
    db.recover_stale_runs()
    run_id = db.start_run(machine_id, device=str(device), torch_version=fp.torch, triton=fp.triton,
                          quick=quick, settings=settings.model_dump(mode="json"))
    try:
        yield run_id, machine_id
    except KeyboardInterrupt:
        db.finish_run(run_id, "interrupted", "KeyboardInterrupt")
        raise
    except BaseException as exc:
        db.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    db.finish_run(run_id, "completed")


def _fail_zombies(study: optuna.Study) -> None:
    """Trials left RUNNING by a dead process on this host become FAIL (their candidates run again)."""
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid, thost = t.user_attrs.get("pid"), t.user_attrs.get("host")
        if thost == host and pid is not None and pid != os.getpid() and not pid_alive(pid):
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)


def _finished(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    """Evaluated trials by their config_key attr (the effective key of a kernel study, the run-config key
    of a model study): COMPLETE ones and FAILs that carry a tuner status."""
    out: dict[str, optuna.trial.FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("duplicate_of") is not None or "config_key" not in t.user_attrs:
            continue
        if t.state == optuna.trial.TrialState.COMPLETE or (
                t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("status") == "failed"):
            out.setdefault(t.user_attrs["config_key"], t)
    return out


def _waiting_keys(study: optuna.Study, space: SearchSpace) -> set[str]:
    keys = set()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        with contextlib.suppress(Exception):
            keys.add(effective_key(space.config_from_params(t.params), space.workload))
    return keys


def _candidate(t: optuna.trial.FrozenTrial, wl: Workload) -> Candidate:
    cfg = KernelConfig.from_dict(t.user_attrs["config"])
    # a trial timed by another fleet node has its trial id in that node's DB, not ours
    local = t.user_attrs.get("node") in (None, node_name(get_tuner_settings()))
    return Candidate(cfg, effective_t_inner(cfg, wl), float(t.value), t.user_attrs["spread_ms"],
                     t.user_attrs["tokens_per_s"], t.user_attrs["equivalence_error"],
                     t.user_attrs.get("compile_s"), t.user_attrs.get("trial_id") if local else None)


# -- entry points --------------------------------------------------------------------------------

def study_name_for(machine_id: str, workload: Workload, space: SearchSpace) -> str:
    """The Optuna study of a (machine, workload, space, software stack): resumed while all four match.

    torch and triton versions are part of it, so a re-tune after a software change searches again
    instead of only re-timing the old study's best candidates. In fleet mode ``machine_id`` is the
    study owner ``fleet/<fleet name>/<machine class>`` (``tuner._fleet.study_owner``).
    """
    return f"{machine_id}/{workload}/{space.signature()}/{software_tag()}"


def software_tag() -> str:
    """The software part of a study name: torch and triton versions (``torch-X+triton-Y``)."""
    triton = triton_version()
    return f"torch-{torch.__version__}" + (f"+triton-{triton}" if triton else "")


def tune_workload(
    workload: Workload | str,
    *,
    db: TuningDB | str | Path | None = None,
    device: torch.device | str | None = None,
    n_trials: int | None = None,
    time_budget_s: float | None = None,
    progress: Progress | None = None,
    quick: bool = False,
    run_id: int | None = None,
    space: SearchSpace | None = None,
    sampler: SamplerChoice = "auto",
    runner: KernelRunner = run_kernel,
    probe: CompileProbe | None = None,
    settings: TunerSettings | None = None,
) -> WorkloadResult:
    """Tune one workload on this machine: Optuna study -> re-time the best side by side -> winner.

    workload: ``Workload`` or ``"B,NH,S,DHQK,DHV,dtype[,mode]"`` (``UnknownWorkload`` if it does not parse).
    db: a ``TuningDB``, a path, or None for the settings' DB. device: default best available.
    n_trials: candidates to evaluate in a TPE study, counting those of earlier runs of the same
        study (default settings.tune_n_trials, or tune_quick_n_trials with ``quick``); duplicates
        and out-of-space draws are not evaluated and do not count. A grid study runs every
        remaining candidate unless n_trials is given.
    time_budget_s: wall-clock bound on the study (Optuna ``timeout``); the re-timing comes after.
    progress: called with a ``ProgressEvent`` after every trial (``RichProgress()`` renders them).
    run_id: the run the trials belong to; None opens (and closes) a run of its own.
    space: the ``SearchSpace`` (default ``SearchSpace.from_settings(workload, device, settings)``).
    sampler: ``auto`` (grid if the space has <= settings.tune_grid_max candidates, else TPE),
        ``grid`` or ``tpe``.
    runner / probe: the seams that run a config and compile-probe it (see ``tuner._evaluate``).
    Returns a ``WorkloadResult``; Ctrl-C keeps the finished trials, marks an own run interrupted and
    re-raises; calling again resumes the study.
    """
    settings = resolve_tuner_settings(settings)
    wl = parse_workload(workload)
    dev = torch.device(device) if device is not None else default_device()
    space = space or SearchSpace.from_settings(wl, dev, settings)
    check_workload_memory(wl, dev, settings.validate_max_s, settings)  # before any input is allocated
    with using_db(db) as tdb:
        if run_id is None:
            with tuning_run(tdb, dev, quick, settings) as (rid, _mid):
                return _tune(wl, tdb, dev, rid, n_trials, time_budget_s, progress, quick, space,
                             sampler, runner, probe, settings)
        return _tune(wl, tdb, dev, run_id, n_trials, time_budget_s, progress, quick, space,
                     sampler, runner, probe, settings)


def _tune(wl: Workload, db: TuningDB, dev: torch.device, run_id: int, n_trials: int | None,
          time_budget_s: float | None, progress: Progress | None, quick: bool, space: SearchSpace,
          sampler: SamplerChoice, runner: KernelRunner, probe: CompileProbe,
          settings: TunerSettings) -> WorkloadResult:
    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    machine_id = db.run(run_id)["machine_id"]
    candidates = space.candidates()
    use_grid = sampler == "grid" or (sampler == "auto" and len(candidates) <= settings.tune_grid_max)
    klass, node, fleet = xk.machine_class(xk.fingerprint(dev)), node_name(settings), settings.fleet
    study_name = study_name_for(study_owner(machine_id, klass, settings), wl, space)
    with warnings.catch_warnings():  # ``group`` is marked experimental in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            study_name=study_name, storage=optuna_storage(db, settings), direction="minimize",
            # multivariate TPE: family, chunk size and unroll interact; random start-up scaled to the budget
            sampler=optuna.samplers.TPESampler(
                seed=settings.tune_seed, multivariate=True, group=True,
                n_startup_trials=max(2, min(10, (n_trials or settings.tune_n_trials) // 4)),
                constant_liar=fleet),  # fleet: running trials of other machines count as pending
            load_if_exists=True)
    if not heartbeat_enabled(study):  # with heartbeats the storage fails (and retries) dead trials
        _fail_zombies(study)
    done = _finished(study)
    default_key = effective_key(space.default, wl)
    waiting = _waiting_keys(study, space)
    to_enqueue = candidates if use_grid else [space.default, *space.seeds()]
    for cfg in to_enqueue:
        key = effective_key(cfg, wl)
        if key not in done and key not in waiting:
            study.enqueue_trial(space.params_of(cfg))
            waiting.add(key)
    if use_grid:
        total = len(waiting) if n_trials is None else min(n_trials, len(waiting))
    else:
        target = n_trials or (settings.tune_quick_n_trials if quick else settings.tune_n_trials)
        total = max(0, target - len(done))
    fleet_target = len(candidates) if use_grid else min(len(candidates), max(target, len(done)))
    in_space = {effective_key(c, wl) for c in candidates}
    order = unexplored_order([(effective_key(c, wl), space.params_of(c)) for c in candidates], settings.tune_seed)
    evaluator = Evaluator(wl, dev, settings, runner=runner, probe=probe, quick=quick)

    def queue_unexplored() -> None:
        queue_one_unexplored(study, order, done, waiting)
    state: dict[str, Any] = {"evaluated": 0, "skipped": []}

    def best_now() -> tuple[float | None, str | None]:
        ok = [t for t in done.values() if t.user_attrs.get("status") == "ok"]
        if not ok:
            return None, None
        b = min(ok, key=lambda t: t.value)
        return float(b.value), KernelConfig.from_dict(b.user_attrs["config"]).short(wl.mode)

    def report(status: str, cfg: KernelConfig, median: float | None) -> None:
        if progress is not None:  # n counts evaluated candidates (a reused duplicate adds none)
            bm, bc = best_now()
            progress(ProgressEvent(str(wl), "trial", state["evaluated"], total, status, cfg.short(wl.mode),
                                   median, bm, bc, time.perf_counter() - t0))

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        for k, v in (("node", node), ("machine_id", machine_id), ("machine_class", klass)):
            trial.set_user_attr(k, v)  # who times it (in a fleet: which machine of the class)
        cfg = space.suggest(trial)
        key = effective_key(cfg, wl)
        trial.set_user_attr("config_key", key)
        trial.set_user_attr("config", cfg.to_dict())
        if key not in in_space:  # TPE drew a default-only value in a non-default combination
            trial.set_user_attr("outside_space", True)
            queue_unexplored()
            raise optuna.TrialPruned("outside the search space")
        if fleet:  # another machine may have this candidate: the lowest live trial owns it
            claim = claim_of(study.get_trials(deepcopy=False), trial.number, key, key_of)
            if claim is not None and claim.state in (optuna.trial.TrialState.WAITING,
                                                     optuna.trial.TrialState.RUNNING):
                trial.set_user_attr("duplicate_of", claim.number)
                raise optuna.TrialPruned(f"candidate claimed by trial {claim.number} "
                                         f"on {claim.user_attrs.get('node', 'another machine')}")
            if claim is not None:
                done.setdefault(key, claim)
        prior = done.get(key)
        if prior is not None:  # TPE proposed an already evaluated kernel: reuse, do not re-run
            trial.set_user_attr("duplicate_of", prior.number)
            queue_unexplored()
            report("duplicate", cfg, None)
            if prior.state != optuna.trial.TrialState.COMPLETE:
                raise CandidateFailed(f"duplicate of failed trial {prior.number}")
            for name, value in prior.constraints.items():
                trial.set_constraint(name, value)
            return float(prior.value)
        pkey = probe_key(cfg, wl)
        known = db.probe_outcome(machine_id, torch.__version__, pkey)
        if known is not None and not known["ok"]:  # failed to compile here before: do not compile again
            ev = Evaluation(cfg, cfg, "failed", f"skipped: known compile failure on this machine with torch "
                            f"{torch.__version__} (probe {known['id']}, {known['created_at']}): {known['error']}",
                            effective_t_inner(cfg, wl))
            trial.set_user_attr("skipped", True)
            state["skipped"].append(cfg.short(wl.mode))
        else:
            ev = evaluator.evaluate(cfg)
        trial_id = _record(db, run_id, wl, machine_id, study_name, trial.number, ev,
                           is_default=key == default_key)
        if known is None or known["ok"]:  # what the compile stage found (a skipped one ran no compile)
            db.record_probe(machine_id=machine_id, torch_version=torch.__version__, compile_key=pkey,
                            config=cfg, t_inner_requested=cfg.t_inner,
                            t_inner_effective=ev.t_inner_effective if ev.compile_s is not None else None,
                            ok=ev.compile_s is not None, error=None if ev.compile_s is not None else ev.reason,
                            compile_s=ev.compile_s)
        state["evaluated"] += 1
        attrs = {"status": ev.status, "trial_id": trial_id, "reason": ev.reason,
                 "equivalence_error": ev.equivalence_error, "compile_s": ev.compile_s}
        if ev.timing is not None:
            attrs.update(spread_ms=ev.timing.spread_ms, tokens_per_s=ev.tokens_per_s, min_ms=ev.timing.min_ms,
                         instability=ev.timing.instability, remeasures=ev.timing.remeasures)
        attrs.update(display_attrs(ev, wl, key == default_key, study=trial.study))
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        db.heartbeat(run_id)
        if ev.status == "failed":
            raise CandidateFailed(ev.reason or "failed")
        assert ev.equivalence_error is not None and ev.tolerance is not None
        trial.set_constraint("equivalence", ev.equivalence_error - ev.tolerance)
        value = ev.timing.median_ms if ev.timing is not None else math.inf
        return value

    def key_of(t: optuna.trial.FrozenTrial) -> str | None:
        if "config_key" in t.user_attrs:
            return t.user_attrs["config_key"]
        try:  # an enqueued trial not yet started: its fixed params
            return effective_key(space.config_from_params(t.params or t.system_attrs.get("fixed_params", {})), wl)
        except Exception:  # noqa: BLE001 - params of another space cannot be this candidate
            return None

    def after(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        if frozen.user_attrs.get("duplicate_of") is None and "status" in frozen.user_attrs:
            done.setdefault(frozen.user_attrs["config_key"], frozen)
            report("skipped" if frozen.user_attrs.get("skipped") else frozen.user_attrs["status"],
                   KernelConfig.from_dict(frozen.user_attrs["config"]),
                   frozen.value if frozen.user_attrs["status"] == "ok" else None)
        if fleet:  # candidates other machines finished count too
            for k, t in _finished(study).items():
                done.setdefault(k, t)
            if len(done) >= fleet_target:
                study.stop()
        elif state["evaluated"] >= total or len(done) >= len(candidates):
            study.stop()  # budget of evaluated candidates reached, or the space is exhausted

    if total > 0 and len(done) < len(candidates):
        # TPE may draw duplicates (reused, not re-run) and out-of-space points (pruned): allow more
        # Optuna trials than evaluations; ``after`` stops the study once ``total`` are evaluated
        cap = total if use_grid else 5 * total + 20
        study.optimize(objective, n_trials=cap, timeout=time_budget_s, catch=(CandidateFailed,),
                       callbacks=[after], gc_after_trial=False)
    if fleet:  # the class's study is complete only when no machine still runs (or owes) a trial
        deadline = None if time_budget_s is None else time.monotonic() + time_budget_s

        def own_share() -> None:
            waiting = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
            study.optimize(objective, n_trials=waiting, catch=(CandidateFailed,), callbacks=[after],
                           gc_after_trial=False)

        wait_for_fleet(study, settings, deadline, own_share)
    result = _finish(wl, db, dev, run_id, machine_id, study_name, study, space, evaluator, settings,
                     progress, state["evaluated"], len(candidates), "grid" if use_grid else "tpe", t0)
    result.skipped = state["skipped"]
    return result


Unexplored = list[tuple[str, dict[str, Any]]]  # (candidate key, its Optuna params)


def unexplored_order(candidates: Unexplored, seed: int) -> Unexplored:
    """The candidates, one per key, in the seeded order a study fills its wasted draws with."""
    unique = list(dict(candidates).items())
    return random.Random(seed).sample(unique, len(unique))


def queue_one_unexplored(study: optuna.Study, order: Unexplored, done: Container[str], waiting: set[str],
                         key_attr: bool = False) -> None:
    """After a wasted TPE draw (a duplicate, or a point outside the space), enqueue the first candidate
    of ``order`` neither evaluated (``done``) nor queued (``waiting``, updated): late in a small space
    TPE keeps proposing what it has, and each such draw costs a whole trial of storage round trips.
    ``key_attr``: give the queued trial its ``config_key`` user attribute (the model study's)."""
    for key, params in order:
        if key not in done and key not in waiting:
            study.enqueue_trial(params, user_attrs={"config_key": key} if key_attr else None)
            waiting.add(key)
            return


def _record(db: TuningDB, run_id: int, wl: Workload, machine_id: str, study_name: str, number: int,
            ev: Evaluation, is_default: bool) -> int:
    tm = ev.timing
    return db.record_trial(
        run_id=run_id, workload=wl, machine_id=machine_id, config=ev.config, effective=ev.effective,
        status=ev.status, reason=ev.reason, t_inner_effective=ev.t_inner_effective,
        is_default=is_default, study_name=study_name, trial_number=number, compile_s=ev.compile_s,
        validate_s=ev.validate_s, equivalence_error=ev.equivalence_error, tolerance=ev.tolerance,
        validation_shape=ev.validation_shape, median_ms=tm.median_ms if tm else None,
        spread_ms=tm.spread_ms if tm else None, min_ms=tm.min_ms if tm else None,
        repeats=tm.repeats if tm else None, tokens_per_s=ev.tokens_per_s,
        instability=tm.instability if tm else None, remeasures=tm.remeasures if tm else None,
        load_avg=tm.load.load_avg if tm and tm.load else None,
        steal_fraction=tm.load.steal_fraction if tm and tm.load else None)


def _finish(wl: Workload, db: TuningDB, dev: torch.device, run_id: int, machine_id: str,
            study_name: str, study: optuna.Study, space: SearchSpace, evaluator: Evaluator,
            settings: TunerSettings, progress: Progress | None, evaluated: int, n_candidates: int,
            sampler: str, t0: float) -> WorkloadResult:
    """Re-time the top candidates interleaved, pick the winner among the stable ones, then time the
    speedup over the default in fresh paired rounds; store and return the result."""
    done = _finished(study)
    ok = sorted((t for t in done.values() if t.user_attrs.get("status") == "ok"), key=lambda t: t.value)
    rejected = [Rejected(KernelConfig.from_dict(t.user_attrs["config"]), t.user_attrs["status"],
                         t.user_attrs.get("reason") or "", t.user_attrs.get("equivalence_error"),
                         t.user_attrs["trial_id"])
                for t in done.values() if t.user_attrs.get("status") in ("rejected", "failed")]
    default_key = effective_key(space.default, wl)
    top = ok[: settings.tune_retime_top_k]
    # an unstable trial's median is inflated by the load, not by its kernel: the best by min get a re-time too
    by_min = sorted(ok, key=lambda t: t.user_attrs.get("min_ms", t.value))[: settings.tune_retime_top_k]
    top += [t for t in by_min if t not in top]
    if default_key in done and done[default_key] in ok and done[default_key] not in top:
        top.append(done[default_key])
    result = WorkloadResult(wl, run_id, study_name, None, None, None, [], rejected, evaluated,
                            n_candidates, sampler, 0.0)
    if not top:
        result.elapsed_s = time.perf_counter() - t0
        return result
    with xk.tuning():
        retimed = _retime([_candidate(t, wl) for t in top], evaluator, dev, settings)
        by_key = {effective_key(c.config, wl): c for c in retimed}
        stable = [c for c in retimed if c.instability is None]
        default = by_key.get(default_key)
        busy: list[str] = []
        if stable:
            winner = min(stable, key=lambda c: c.median_ms)
            unsure = [c for c in retimed if c.instability is not None]
            if unsure:  # never a winner, but not ruled out either: the pick among the best is incomplete
                busy.append("re-timed candidate(s) " + ", ".join(c.config.short(wl.mode) for c in unsure)
                            + " stayed unstable, so the winner was picked without them")
        else:  # no candidate may decide: keep the baseline when it validated
            winner = default or min(retimed, key=lambda c: c.median_ms)
            busy.append("every re-timed candidate stayed unstable")
        interval = None
        if default is not None and winner is not default:
            winner, default, interval, why = _paired_speedup(winner, default, evaluator, dev, settings)
            busy += why
        elif default is not None:
            interval = Interval(1.0, 1.0, 1.0, settings.tune_speedup_confidence, 0)
    speedup = interval.median if interval is not None else None
    busy_reason = ("machine busy: results not trustworthy (" + "; ".join(busy) + ")") if busy else None
    db.record_result(
        run_id=run_id, workload=wl, machine_id=machine_id, config=winner.config,
        trial_id=winner.trial_id, t_inner_effective=winner.t_inner_effective,
        median_ms=winner.median_ms, spread_ms=winner.spread_ms, tokens_per_s=winner.tokens_per_s,
        default_median_ms=default.median_ms if default else None, speedup=speedup,
        equivalence_error=winner.equivalence_error, compile_s=winner.compile_s,
        n_trials=len(done), n_rejected=sum(r.status == "rejected" for r in rejected),
        n_failed=sum(r.status == "failed" for r in rejected), retime=[c.to_dict() for c in retimed],
        speedup_low=interval.low if interval else None, speedup_high=interval.high if interval else None,
        speedup_confidence=interval.confidence if interval else None, busy_reason=busy_reason)
    result.winner, result.default, result.speedup, result.retimed = winner, default, speedup, retimed
    result.speedup_interval, result.busy_reason = interval, busy_reason
    result.elapsed_s = time.perf_counter() - t0
    if progress is not None:
        progress(ProgressEvent(str(wl), "retime", len(done), len(done), "done", winner.config.short(wl.mode),
                               winner.median_ms, winner.median_ms, winner.config.short(wl.mode),
                               result.elapsed_s))
    return result


def _retime(cands: list[Candidate], evaluator: Evaluator, dev: torch.device,
            settings: TunerSettings) -> list[Candidate]:
    """Interleaved rounds (rotating order) of one sample per candidate; median per candidate.

    While some candidate's samples are unstable, all are re-timed in new rounds after a back-off
    (up to ``tune_remeasure_max`` times, judged on the newest rounds); what stays unstable is marked.
    """
    wl, inputs, run = evaluator.workload, evaluator.timing_inputs(), evaluator.runner
    fns = [(lambda c=c: run(wl, inputs, c.config)) for c in cands]
    calls = calls_per_sample(wl, settings)
    # the warm-up also compiles candidates of an earlier process, outside the rounds
    samples = interleaved_samples(fns, dev, rounds=settings.tune_retime_rounds, calls=calls,
                                  warmup=settings.tune_warmup)
    timings = [summarize(s, settings) for s in samples]
    for extra in range(settings.tune_remeasure_max):
        if not any(tm.unstable for tm in timings):
            break
        time.sleep(settings.tune_remeasure_backoff_s * 2 ** extra)
        samples = interleaved_samples(fns, dev, rounds=settings.tune_retime_rounds, calls=calls, warmup=0)
        timings = [summarize(s, settings) for s in samples]
    return [Candidate(c.config, c.t_inner_effective, tm.median_ms, tm.spread_ms,
                      wl.tokens() / (tm.median_ms / 1e3), c.equivalence_error, c.compile_s, c.trial_id,
                      tm.instability)
            for c, tm in zip(cands, timings)]


def _paired_speedup(winner: Candidate, default: Candidate, evaluator: Evaluator, dev: torch.device,
                    settings: TunerSettings) -> tuple[Candidate, Candidate, Interval, list[str]]:
    """The winner's speedup over the default from FRESH paired rounds (not the samples that chose it).

    A batch of ``tune_speedup_rounds`` rounds times both back to back (order alternating); the speedup
    is the median of the per-round default/winner ratios with its order-statistic interval. A batch in
    which either side's samples are unstable, or whose interval is wider than ``tune_speedup_max_width``,
    is measured again after a back-off (up to ``tune_remeasure_max`` times; the newest batch counts,
    so a burst of load is waited out rather than averaged in). What stays so is returned as reasons the
    result is not trustworthy. Returns the two candidates with their fresh medians, the interval, reasons.
    """
    wl, inputs, run = evaluator.workload, evaluator.timing_inputs(), evaluator.runner
    calls = calls_per_sample(wl, settings)
    with LoadMeter() as meter:
        for extra in range(settings.tune_remeasure_max + 1):
            if extra:
                time.sleep(settings.tune_remeasure_backoff_s * 2 ** (extra - 1))
            ratios, def_s, win_s = paired_ratios(lambda: run(wl, inputs, default.config),
                                                 lambda: run(wl, inputs, winner.config), dev,
                                                 rounds=settings.tune_speedup_rounds, calls=calls,
                                                 warmup=1 if extra == 0 else 0, span_s=settings.tune_speedup_span_s)
            interval = median_interval(ratios, settings.tune_speedup_confidence)
            why = [f"{label} unstable in the paired rounds: {w}" for label, w in
                   (("winner", instability(win_s, settings)), ("default", instability(def_s, settings))) if w]
            if interval.relative_width > settings.tune_speedup_max_width:
                span = (f"[{interval.low:.3g}, {interval.high:.3g}]"
                        if interval.low is not None and interval.high is not None
                        else f"of {interval.n} rounds (too few for a {interval.confidence:.0%} interval)")
                why.append(f"speedup interval {span} is wider than {settings.tune_speedup_max_width:.0%} "
                           f"of {interval.median:.3g}")
            if not why:
                break
    if why:
        busy = meter.load.busy_reason(settings)
        if busy:
            why.append(busy)

    def fresh(c: Candidate, s: list[float]) -> Candidate:
        tm = summarize(s, settings)
        return Candidate(c.config, c.t_inner_effective, tm.median_ms, tm.spread_ms,
                         wl.tokens() / (tm.median_ms / 1e3), c.equivalence_error, c.compile_s, c.trial_id,
                         c.instability)

    return fresh(winner, win_s), fresh(default, def_s), interval, why
