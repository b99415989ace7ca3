"""The ``model-autotune`` Prefect flow: tune one model workload and publish its winner in the profile.

fingerprint the machine -> open ONE tuning run in the DB (``tuner.tuning_run``, as the kernel flow) ->
a task calling ``tuner.tune_model`` (trials and the winner land in the DB's model tables) -> a task
calling ``tuner.publish_entries`` with the winner as a model entry (atomic, versioned, recorded; the
profile's other entries are kept) -> a markdown artifact. ``run_model_autotune`` is what
``xlstm-autotune tune --model`` calls: the same API selection and machine lock as ``run_autotune``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed, State

from .flows import AutotuneCrashed, artifact_key
from .tasks import as_task

__all__ = ["ModelAutotuneResult", "model_autotune", "run_model_autotune"]


@dataclass(frozen=True)
class ModelAutotuneResult:
    """What one model-autotune run produced: the tuner's result (as JSON), the profile, or why not."""

    machine_id: str
    run_id: int | None
    result: dict[str, Any] | None
    failed: dict[str, str] = field(default_factory=dict)
    profile_path: str | None = None
    profile_version: int | None = None
    profile_checksum: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dict(self.__dict__)


@task(name="tune-model", cache_policy=NO_CACHE)
def tune_model_task(model: str, *, db: Any, run_id: int, device: str, batch_size: int, prompt_len: int,
                    dtype: str, trials: int | None, time_budget_s: float | None, quick: bool,
                    show_progress: bool) -> Any:
    """Tune the model workload with ``tuner.tune_model`` under run ``run_id``."""
    from tuner import tune_model

    from .progress import terminal_progress

    with terminal_progress(show_progress) as progress:
        result = tune_model(model, batch_size=batch_size, prompt_len=prompt_len, dtype=dtype, db=db,
                            device=device, n_trials=trials, time_budget_s=time_budget_s, progress=progress,
                            quick=quick, run_id=run_id)
    get_run_logger().info("%s: winner %s, %s", result.workload,
                          result.winner.config.short() if result.winner else None,
                          f"{result.speedup:.2f}x over default" if result.speedup else "no paired default")
    return result


@task(name="publish-model-profile", cache_policy=NO_CACHE)
def publish_model_task(fingerprint: dict[str, Any], result: Any, *, run_id: int, db: Any) -> Any:
    """Publish the winner as a model entry of this machine's profile (``tuner.publish_entries``)."""
    from tuner import model_profile_entry, publish_entries

    published = publish_entries(fingerprint, [], model_entries=[model_profile_entry(result)], run_id=run_id, db=db)
    get_run_logger().info("profile version %s published to %s", published.version, published.path)
    return published


def _summary(res: ModelAutotuneResult) -> str:
    lines = [f"# Model autotune run on machine `{res.machine_id}`", ""]
    r = res.result or {}
    if r.get("winner"):
        w = r["winner"]
        lines += [f"Workload `{r['workload']}`: winner `{w['config']}`, TTFT {w['ttft_ms']:.2f} ms, decode "
                  f"{w['decode_tokens_per_s']:.1f} tok/s, request {w['objective_ms']:.2f} ms"
                  + (f", {r['speedup']:.2f}x over ModelRunConfig()." if r.get("speedup") else "."), ""]
    if res.profile_version is not None:
        lines.append(f"Profile: `{res.profile_path}` (version {res.profile_version}, {res.profile_checksum}).")
    for what, msg in res.failed.items():
        lines.append(f"- failed `{what}`: {msg}")
    if r.get("rejected"):
        lines += ["", "| config | status | reason |", "|---|---|---|"]
        lines += [f"| `{x['config']}` | {x['status']} | {str(x['reason']).replace('|', '/')} |" for x in r["rejected"]]
    return "\n".join(lines) + "\n"


def _message(state: State) -> str:
    try:
        state.result(raise_on_failure=True)
    except Exception as exc:  # noqa: BLE001 - reported by type and message
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.type.value


@flow(name="model-autotune", log_prints=True)
def model_autotune(model: str, batch_size: int = 1, prompt_len: int = 2048, dtype: str = "float32",
                   trials: int | None = None, time_budget_s: float | None = None, quick: bool = False,
                   device: str | None = None, show_progress: bool = False) -> ModelAutotuneResult | State:
    """Tune ``model`` (preset or config JSON) at B, S, dtype on this machine in one run; publish the winner."""
    from storage import open_db
    from tuner import tuning_run
    from tuner.settings import reset_tuner_settings
    from xlstm_kernels.device import default_device

    from .settings import get_flow_settings

    reset_tuner_settings()  # tuner and flow settings read afresh; the kernel's (and the runtime's state) stay
    settings = get_flow_settings()
    dev = str(device or settings.device or default_device())
    fp = as_task("fingerprint", "fingerprint", lambda: fingerprint(dev).to_dict())
    get_run_logger().info("machine %s: %s (%s), torch %s", fp["machine_id"], fp["device_name"], fp["device_type"],
                          fp["torch"])
    failed: dict[str, str] = {}
    result_json = published = run_id = None
    with open_db(settings.resolved_db_path()) as db, tuning_run(db, dev, quick, settings) as (run_id, _):
        state = tune_model_task(model, db=db, run_id=run_id, device=dev, batch_size=batch_size,
                                prompt_len=prompt_len, dtype=dtype, trials=trials, time_budget_s=time_budget_s,
                                quick=quick, show_progress=show_progress, return_state=True)
        if state.is_completed():
            result = state.result()
            result_json = result.to_dict()
            pstate = publish_model_task(fp, result, run_id=run_id, db=db, return_state=True)
            if pstate.is_completed():
                published = pstate.result()
            else:
                failed["publish"] = _message(pstate)
        else:
            failed["tune"] = _message(state)
    res = ModelAutotuneResult(fp["machine_id"], run_id, result_json, failed,
                              str(published.path) if published else None,
                              published.version if published else None, published.checksum if published else None)
    create_markdown_artifact(markdown=_summary(res), key=artifact_key("model-autotune-summary", fp["machine_id"]),
                             description="Model autotune run: winner, profile, rejected candidates and why.")
    if failed:
        return Failed(message=f"failed: {', '.join(failed)}", data=res)
    return Completed(message=f"tuned {result_json['workload'] if result_json else model}", data=res)


def run_model_autotune(model: str, *, home: Any, batch_size: int = 1, prompt_len: int = 2048,
                       dtype: str = "float32", trials: int | None = None, time_budget_s: float | None = None,
                       quick: bool = False, device: str | None = None, no_server: bool = False,
                       wait_s: float = 0.0, show_progress: bool = False,
                       startup_timeout_s: float = 180.0) -> tuple[Any, State, ModelAutotuneResult | None]:
    """One ``tune --model`` run now: check the model spec, pick the API, take the machine lock, run the flow.

    Raises ``tuner.UnknownModel`` (bad spec, B, S or dtype), ``storage.StorageError`` (a DB that cannot
    be used), ``ServerUnavailable`` or ``TuneLocked`` before any work starts, ``AutotuneCrashed`` when
    Prefect could not run the flow.
    """
    from pathlib import Path

    from storage import TuningDB
    from tuner import model_workload_for
    from .settings import FlowSettings

    from tuner import machine_lock
    from .server import select_api, use_api

    model_workload_for(model, batch_size, prompt_len, dtype)  # bad input fails here, before Prefect
    settings = FlowSettings()
    TuningDB(settings.resolved_db_path(), busy_timeout_s=settings.db_busy_timeout_s).close()  # usable DB first
    info = select_api(no_server=no_server)
    with machine_lock(home, "tune", wait_s=wait_s), use_api(info, startup_timeout_s, home=home,
                                                            log_dir=Path(home) / "logs"):
        try:
            state = model_autotune(model=str(model), batch_size=batch_size, prompt_len=prompt_len, dtype=dtype,
                                   trials=trials, time_budget_s=time_budget_s, quick=quick, device=device,
                                   show_progress=show_progress, return_state=True)
        except Exception as exc:  # noqa: BLE001 - errors inside the flow are in its state; these are Prefect's
            raise AutotuneCrashed(f"Prefect could not run the model-autotune flow: {type(exc).__name__}: {exc}") from exc
    result = state.result(raise_on_failure=False)
    return info, state, result if isinstance(result, ModelAutotuneResult) else None
