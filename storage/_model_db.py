"""Model-workload rows of the tuning database: ``model_trials`` and ``model_results`` (schema v3).

Functions over an open :class:`~storage.TuningDB` (its ``write()`` transactions, its concurrency
contract), kept apart from the kernel trials' methods::

    tid = record_model_trial(db, run_id=..., workload=wl, ..., status="rejected", reason="...")
    best = best_model(db, wl, machine_id)        # NoTunedConfig if none
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from xlstm_kernels.models.workload import ModelWorkload

from ._db import TRIAL_STATUSES, TuningDB, now
from ._errors import NoTunedConfig


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True)


def record_model_trial(db: TuningDB, *, run_id: int, workload: ModelWorkload, machine_id: str,
                       model: dict[str, Any], config: dict[str, Any], status: str,
                       reason: str | None = None, is_default: bool = False, study_name: str | None = None,
                       trial_number: int | None = None, compile_s: float | None = None,
                       validate_s: float | None = None, logits_error: float | None = None,
                       tolerance: float | None = None, greedy_match: bool | None = None,
                       ttft_ms: float | None = None, ttft_spread_ms: float | None = None,
                       decode_ms: float | None = None, decode_spread_ms: float | None = None,
                       decode_tokens_per_s: float | None = None, decode_steps: int | None = None,
                       objective_ms: float | None = None, repeats: int | None = None) -> int:
    """Store one evaluated model candidate (``model``: its xLSTMLargeConfig fields; ``config``: the
    ModelRunConfig as JSON); a non-``ok`` trial must carry a reason and no timing. Returns the row id."""
    if status not in TRIAL_STATUSES:
        raise ValueError(f"trial status must be one of {list(TRIAL_STATUSES)}, got {status!r}")
    if status != "ok" and not reason:
        raise ValueError(f"a {status} trial needs a reason")
    if status != "ok" and objective_ms is not None:
        raise ValueError("only an ok (validated) trial has a timing")
    with db.write() as d:
        return int(d["model_trials"].insert(dict(
            run_id=run_id, machine_id=machine_id, workload=str(workload), model_key=workload.model_key,
            B=workload.B, S=workload.S, dtype=workload.dtype, model_json=_json(model),
            study_name=study_name, trial_number=trial_number, config_json=_json(config),
            is_default=int(is_default), status=status, reason=reason, compile_s=compile_s,
            validate_s=validate_s, logits_error=logits_error, tolerance=tolerance,
            greedy_match=None if greedy_match is None else int(greedy_match), ttft_ms=ttft_ms,
            ttft_spread_ms=ttft_spread_ms, decode_ms=decode_ms, decode_spread_ms=decode_spread_ms,
            decode_tokens_per_s=decode_tokens_per_s, decode_steps=decode_steps,
            objective_ms=objective_ms, repeats=repeats, created_at=now(),
        )).last_pk)


def model_trials(db: TuningDB, *, run_id: int | None = None, workload: ModelWorkload | str | None = None,
                 status: str | None = None) -> list[dict[str, Any]]:
    """Model trial rows matching all given filters, in insertion order."""
    where, args = [], []
    for column, value in (("run_id", run_id), ("workload", None if workload is None else str(workload)),
                          ("status", status)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    sql = "SELECT * FROM model_trials" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
    return list(db.db.query(sql, args))


def record_model_result(db: TuningDB, *, run_id: int, workload: ModelWorkload, machine_id: str,
                        config: dict[str, Any], trial_id: int | None, ttft_ms: float,
                        decode_tokens_per_s: float, objective_ms: float,
                        default_objective_ms: float | None, speedup: float | None, logits_error: float,
                        n_trials: int, n_rejected: int, n_failed: int,
                        retime: list[dict[str, Any]]) -> int:
    """Store the winner of a (run, model workload) after re-timing; replaces an earlier one of that run."""
    with db.write() as d:
        return int(d["model_results"].insert(dict(
            run_id=run_id, machine_id=machine_id, workload=str(workload), trial_id=trial_id,
            config_json=_json(config), ttft_ms=ttft_ms, decode_tokens_per_s=decode_tokens_per_s,
            objective_ms=objective_ms, default_objective_ms=default_objective_ms, speedup=speedup,
            logits_error=logits_error, n_trials=n_trials, n_rejected=n_rejected, n_failed=n_failed,
            retime_json=json.dumps(retime, sort_keys=True), created_at=now(),
        ), replace=True).last_pk)


@dataclass(frozen=True)
class BestModelConfig:
    """The newest re-timed winner for a model workload on a machine."""

    workload: str
    machine_id: str
    config: dict[str, Any]
    ttft_ms: float
    decode_tokens_per_s: float
    objective_ms: float
    speedup: float | None
    logits_error: float
    run_id: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dict(self.__dict__)


def best_model(db: TuningDB, workload: ModelWorkload | str, machine_id: str) -> BestModelConfig:
    """The newest run's winner for ``workload`` on ``machine_id``; raises ``NoTunedConfig``."""
    spec = str(workload)
    rows = list(db.db.query("SELECT * FROM model_results WHERE workload = ? AND machine_id = ? "
                            "ORDER BY run_id DESC LIMIT 1", [spec, machine_id]))
    if not rows:
        raise NoTunedConfig(f"no tuned run config for model workload {spec} on machine {machine_id} in "
                            f"{db.path}; run `xlstm-autotune tune --model ...` on that machine first")
    r = rows[0]
    return BestModelConfig(spec, machine_id, json.loads(r["config_json"]), r["ttft_ms"],
                           r["decode_tokens_per_s"], r["objective_ms"], r["speedup"], r["logits_error"],
                           r["run_id"])


def kernel_winners(db: TuningDB, machine_id: str, *, NH: int, DHQK: int, DHV: int,
                   dtype: str) -> list[dict[str, Any]]:
    """Distinct winning prefill kernel configs (``config_json`` dicts) of this machine's runs for the
    head shape (DHQK, DHV, dtype) whose ``heads_per_band`` divides NH, newest first."""
    rows = db.db.query(
        """SELECT r.config_json FROM results r JOIN workloads w ON w.id = r.workload_id
           WHERE r.machine_id = ? AND w.DHQK = ? AND w.DHV = ? AND w.dtype = ? AND w.mode = 'prefill'
           ORDER BY r.run_id DESC, r.id DESC""", [machine_id, DHQK, DHV, dtype])
    out: list[dict[str, Any]] = []
    for r in rows:
        cfg = json.loads(r["config_json"])
        hpb = cfg.get("heads_per_band")
        if (hpb is None or NH % hpb == 0) and cfg not in out:
            out.append(cfg)
    return out
