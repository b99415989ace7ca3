"""Fleet mode: machines of one class cooperating on one Optuna study in a shared RDB storage.

Built on Optuna's own engine, no scheduler of ours:

* **claims** - a candidate is taken by popping its WAITING trial (Optuna's atomic ``WAITING ->
  RUNNING``). Two machines may enqueue the same grid candidate at once; of trials with the same
  candidate the lowest-numbered live one is the claim, a later one is a duplicate (reused when the
  claim finished, pruned while it runs). Two TPE draws of the same point within one instant can both
  run; ``constant_liar`` makes that rare.
* **abandoned trials** - the storage records a heartbeat per running trial
  (``RDBStorage(heartbeat_interval, grace_period)``); a trial whose machine died goes stale, is failed by
  ``optuna.storages.fail_stale_trials`` (at every trial start, and while a worker waits) and
  re-queued by ``RetryHeartbeatStaleTrialCallback``: never left RUNNING.
* **the fleet view** - ``fleet_best`` reads every fleet study of the storage: best config per workload
  per machine class, with the node that timed it.
"""

from __future__ import annotations

import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from xlstm_kernels.kernels.config import KernelConfig

from ._errors import TunerError
from .settings import TunerSettings, mask_url

FLEET_PREFIX = "fleet"  # fleet study names: fleet/<fleet name>/<class>/<workload>/<space>/<software>


class FleetMisconfigured(TunerError, ValueError):
    """Fleet mode without a shared Optuna storage."""


class FleetStorageUnavailable(TunerError):
    """The shared Optuna storage cannot be opened (server down, bad credentials, driver missing)."""


def node_name(settings: TunerSettings) -> str:
    """This machine's name on the trials it times (``fleet_node``, default the host name)."""
    return settings.fleet_node or socket.gethostname().split(".")[0]


def study_owner(machine_id: str, machine_class: str, settings: TunerSettings) -> str:
    """The first part of a study name: the machine id, or in fleet mode ``fleet/<fleet>/<class>``."""
    return f"{FLEET_PREFIX}/{settings.fleet_name}/{machine_class}" if settings.fleet else machine_id


def storage_url(default_url: str, settings: TunerSettings) -> str:
    """The Optuna storage URL; fleet mode requires ``optuna_storage`` (``FleetMisconfigured``)."""
    if settings.fleet and not settings.optuna_storage:
        raise FleetMisconfigured(
            "fleet mode (XLSTM_AUTOTUNE_FLEET=true) needs a shared Optuna storage: set "
            "XLSTM_AUTOTUNE_OPTUNA_STORAGE (e.g. postgresql+psycopg://USER:PASSWORD@HOST:5432/optuna) "
            "in the environment or .env; see docs/fleet.md")
    return settings.optuna_storage or default_url


def make_storage(url: str, settings: TunerSettings) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at ``url``; in fleet mode with heartbeats and retry of stale trials.

    ``FleetStorageUnavailable`` (URL masked) when it cannot be opened.
    """
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": settings.db_busy_timeout_s}}
    else:  # a server: drop connections it closed (restart, idle timeout) instead of failing a trial
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    if settings.fleet:
        kwargs.update(heartbeat_interval=settings.fleet_heartbeat_s, grace_period=settings.fleet_grace_s,
                      heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                          max_retry=settings.fleet_max_retry))
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeats and the retry callback are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except (IntegrityError, ProgrammingError) as exc:
            # two machines creating Optuna's tables in a fresh database at once: one wins, the other
            # sees "already exists" and opens again (seen here with two workers started together)
            error: Exception = exc
            time.sleep(0.5 + attempt)
        except Exception as exc:  # noqa: BLE001 - driver/connection errors of any backend
            error = exc
            break
    raise FleetStorageUnavailable(f"cannot open the Optuna storage {mask_url(url)}: "
                                  f"{type(error).__name__}: {mask_url(str(error))[:300]}") from None


def heartbeat_enabled(study: optuna.Study) -> bool:
    """True when the study's storage fails stale trials by heartbeat (fleet mode)."""
    return getattr(study._storage, "get_heartbeat_interval", lambda: None)() is not None


def fail_stale(study: optuna.Study) -> None:
    """Fail (and re-queue, through the storage's callback) trials whose machine stopped beating."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def claim_of(trials: list[FrozenTrial], number: int, key: str,
             key_of: Callable[[FrozenTrial], str | None]) -> FrozenTrial | None:
    """The live trial that owns candidate ``key`` before trial ``number``, if any.

    Live: WAITING or RUNNING, COMPLETE, or FAIL with the tuner's status (a real failure; a FAIL left
    by a dead machine carries none and is retried). ``key_of`` gives a trial's candidate key.
    """
    for t in sorted(trials, key=lambda t: t.number):
        if t.number >= number:
            break
        if t.user_attrs.get("duplicate_of") is not None or key_of(t) != key:
            continue
        if t.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE) or (
                t.state == TrialState.FAIL and t.user_attrs.get("status") == "failed"):
            return t
    return None


def wait_for_fleet(study: optuna.Study, settings: TunerSettings, deadline: float | None,
                   own: Callable[[], None]) -> None:
    """Until the study is idle (no WAITING or RUNNING trial): fail stale trials, run re-queued ones.

    ``own()`` runs this process's share of what is WAITING (``study.optimize``); between checks the
    worker sleeps ``fleet_poll_s``. ``deadline`` (``time.monotonic()``) bounds the wait.
    """
    while True:
        fail_stale(study)
        states = {t.state for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))}
        if TrialState.WAITING in states:
            own()
            continue
        if TrialState.RUNNING not in states or (deadline is not None and time.monotonic() > deadline):
            return
        time.sleep(settings.fleet_poll_s)


@dataclass(frozen=True)
class FleetBest:
    """The best validated config of one workload on one machine class, across the fleet."""

    fleet: str
    machine_class: str
    workload: str
    study_name: str
    config: dict[str, Any]
    config_short: str
    median_ms: float
    tokens_per_s: float | None
    equivalence_error: float | None
    node: str | None  # the machine that timed it
    n_evaluated: int
    nodes: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def fleet_best(storage: optuna.storages.BaseStorage, fleet_name: str | None = None) -> list[FleetBest]:
    """Best config per workload per machine class, from every fleet study in ``storage``.

    Only COMPLETE trials the tuner validated (status ``ok``) count; a later study of the same class and
    workload (another space or software) is listed separately under its own study name.
    """
    out: list[FleetBest] = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        parts = summary.study_name.split("/")
        if len(parts) < 4 or parts[0] != FLEET_PREFIX or (fleet_name and parts[1] != fleet_name):
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        ok = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("status") == "ok"
              and t.user_attrs.get("duplicate_of") is None]
        if not ok:
            continue
        best = min(ok, key=lambda t: t.value)
        workload = parts[3]
        mode = workload.rsplit(",", 1)[-1]
        cfg = best.user_attrs["config"]
        out.append(FleetBest(
            fleet=parts[1], machine_class=parts[2], workload=workload, study_name=summary.study_name,
            config=cfg, config_short=KernelConfig.from_dict(cfg).short(mode), median_ms=float(best.value),
            tokens_per_s=best.user_attrs.get("tokens_per_s"), equivalence_error=best.user_attrs.get("equivalence_error"),
            node=best.user_attrs.get("node"), n_evaluated=len(ok),
            nodes=sorted({str(t.user_attrs["node"]) for t in trials if t.user_attrs.get("node")})))
    return sorted(out, key=lambda b: (b.fleet, b.machine_class, b.workload, b.study_name))


def open_fleet_storage(settings: TunerSettings) -> optuna.storages.RDBStorage:
    """The shared storage named by the settings (``FleetMisconfigured`` when none is set)."""
    if not settings.optuna_storage:
        raise FleetMisconfigured("no shared Optuna storage: set XLSTM_AUTOTUNE_OPTUNA_STORAGE "
                                 "(environment or .env); see docs/fleet.md")
    return make_storage(settings.optuna_storage, settings.model_copy(update={"fleet": False}))
