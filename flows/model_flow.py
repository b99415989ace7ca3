"""The ``model-autotune`` Prefect flow: Prefect over ``tuner.autotune_model`` (one model workload, its
winner published in the profile), each step a task run of its own, plus a markdown artifact.
``run_model_autotune`` is what ``xlstm-autotune tune --model`` calls: the same API selection and
machine lock as ``run_autotune``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed, State

import tuner
from tuner import ModelAutotuneResult

from .flows import AutotuneCrashed, artifact_key
from .tasks import as_task

__all__ = ["model_autotune", "run_model_autotune"]


@flow(name="model-autotune", log_prints=True)
def model_autotune(model: str, batch_size: int = 1, prompt_len: int = 2048, dtype: str = "float32",
                   trials: int | None = None, time_budget_s: float | None = None, quick: bool = False,
                   device: str | None = None, show_progress: bool = False,
                   tune_fn: tuner.ModelTuneFn | None = None) -> ModelAutotuneResult | State:
    """Tune ``model`` (preset or config JSON) at B, S, dtype on this machine in one run; publish the winner.

    ``tune_fn``: a ``tuner.ModelTuneFn`` for in-process callers (tests); None is ``tuner.tune_model``.
    """
    from tuner.settings import reset_tuner_settings

    from .progress import terminal_progress

    reset_tuner_settings()  # tuner and flow settings read afresh; the kernel's (and the runtime's state) stay
    with terminal_progress(show_progress) as progress:
        res = tuner.autotune_model(model, batch_size=batch_size, prompt_len=prompt_len, dtype=dtype, device=device,
                                   trials=trials, time_budget_s=time_budget_s, quick=quick, progress=progress,
                                   tune_fn=tune_fn or tuner.tune_model, step=as_task, log=get_run_logger())
    create_markdown_artifact(markdown=res.summary_markdown(), key=artifact_key("model-autotune-summary", res.machine_id),
                             description="Model autotune run: winner, profile, rejected candidates and why.")
    if res.failed:
        return Failed(message=f"failed: {', '.join(res.failed)}", data=res)
    return Completed(message=f"tuned {res.result['workload'] if res.result else model}", data=res)


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
