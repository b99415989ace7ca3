"""One model tuning run end to end, without Prefect: the library function behind ``tune --model``.

    outcome = autotune_model("tiny", batch_size=1, prompt_len=256, quick=True)   # -> ModelAutotuneResult

fingerprint -> open ONE run row (``tuning_run``) -> ``tune_fn`` (default ``tune_model``: trials and the
winner land in the DB's model tables) -> ``publish_fn`` with the winner as a model entry (atomic,
versioned, recorded; the profile's other entries are kept). A failed study or publish is recorded in
``failed`` (by type and message). Each step runs through ``step``, as in ``tuner.autotune``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage import TuningDB, using_db
from xlstm_kernels.device import default_device
from xlstm_kernels.profiles.fingerprint import Fingerprint
from xlstm_kernels.profiles.profile import PublishResult
from xlstm_kernels.runner import ModelRunConfig

from ._model_study import ModelWorkloadResult, model_profile_entry, tune_model
from ._progress import Progress
from ._publish import publish_entries
from ._run import PublishFn, StepRunner, call_step, failure, fingerprint_step
from ._study import tuning_run
from .settings import TunerSettings, resolve_tuner_settings

ModelTuneFn = Callable[..., ModelWorkloadResult]
"""Tunes one model workload (``tuner.tune_model``): called as ``tune_fn(model, *, batch_size: int,
prompt_len: int, dtype: str, db: TuningDB, device: str, n_trials: int | None, time_budget_s: float |
None, progress: Progress | None, quick: bool, run_id: int)``."""


@dataclass(frozen=True)
class ModelAutotuneResult:
    """What one model tuning run produced: the study's result (as JSON), the profile, or why not."""

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

    def summary_markdown(self) -> str:
        """The run as markdown: the winner, the published profile, failures, rejected candidates and why."""
        lines = [f"# Model autotune run on machine `{self.machine_id}`", ""]
        r = self.result or {}
        if r.get("winner"):
            w = r["winner"]
            lines += [f"Workload `{r['workload']}`: winner `{_short(w['config'])}`, TTFT {w['ttft_ms']:.2f} ms, decode "
                      f"{w['decode_tokens_per_s']:.1f} tok/s, request {w['objective_ms']:.2f} ms"
                      + (f", {r['speedup']:.2f}x over ModelRunConfig()." if r.get("speedup") else "."), ""]
        if self.profile_version is not None:
            lines.append(f"Profile: `{self.profile_path}` (version {self.profile_version}, {self.profile_checksum}).")
        for what, msg in self.failed.items():
            lines.append(f"- failed `{what}`: {msg}")
        if r.get("rejected"):
            lines += ["", "| config | status | reason |", "|---|---|---|"]
            lines += [f"| `{_short(x['config'])}` | {x['status']} | {str(x['reason']).replace('|', '/')} |"
                      for x in r["rejected"]]
        return "\n".join(lines) + "\n"


def _short(config: dict[str, Any] | str) -> str:
    """A model run config's label (a config dict of the study's JSON)."""
    return ModelRunConfig.from_dict(config).short() if isinstance(config, dict) else str(config)


def autotune_model(
    model: str | Path | dict[str, Any],
    *,
    batch_size: int = 1,
    prompt_len: int = 2048,
    dtype: str = "float32",
    db: TuningDB | str | Path | None = None,
    device: str | None = None,
    trials: int | None = None,
    time_budget_s: float | None = None,
    quick: bool = False,
    progress: Progress | None = None,
    tune_fn: ModelTuneFn = tune_model,
    publish_fn: PublishFn = publish_entries,
    step: StepRunner = call_step,
    log: logging.Logger | logging.LoggerAdapter | None = None,
    settings: TunerSettings | None = None,
) -> ModelAutotuneResult:
    """Tune ``model`` (preset, config JSON file or dict) at B, S, dtype on this machine in one run; publish
    the winner as a model entry of this machine's profile. ``db``: an open ``TuningDB``, a path, or None
    for the settings' DB."""
    settings = resolve_tuner_settings(settings)
    log = log or logging.getLogger("tuner.run")
    dev = str(device or settings.device or default_device())
    fp = fingerprint_step(step, dev, log)
    failed: dict[str, str] = {}
    result_json: dict[str, Any] | None = None
    published: PublishResult | None = None
    with using_db(db if db is not None else settings.resolved_db_path()) as tdb, \
            tuning_run(tdb, dev, quick, settings) as (run_id, _):
        def tune_one() -> ModelWorkloadResult:
            result = tune_fn(model, batch_size=batch_size, prompt_len=prompt_len, dtype=dtype, db=tdb, device=dev,
                             n_trials=trials, time_budget_s=time_budget_s, progress=progress, quick=quick,
                             run_id=run_id)
            log.info("%s: winner %s, %s", result.workload, result.winner.config.short() if result.winner else None,
                     f"{result.speedup:.2f}x over default" if result.speedup else "no paired default")
            return result

        try:
            result = step("tune-model", f"tune {model}", tune_one)
        except Exception as exc:  # noqa: BLE001 - reported in the result, the run row says failed
            failed["tune"] = failure(exc)
        else:
            result_json = result.to_dict()
            try:
                published = step("publish-model-profile", "publish-model-profile",
                                 lambda: _publish(publish_fn, fp, result, run_id, tdb, log))
            except Exception as exc:  # noqa: BLE001 - the winner stays in the DB
                failed["publish"] = failure(exc)
    return ModelAutotuneResult(fp.machine_id, run_id, result_json, failed,
                               str(published.path) if published else None,
                               published.version if published else None,
                               published.checksum if published else None)


def _publish(publish_fn: PublishFn, fp: Fingerprint, result: ModelWorkloadResult, run_id: int, db: TuningDB,
             log: logging.Logger | logging.LoggerAdapter) -> PublishResult:
    published = publish_fn(fp, [], model_entries=[model_profile_entry(result)], run_id=run_id, db=db)
    log.info("profile version %s published to %s", published.version, published.path)
    return published
