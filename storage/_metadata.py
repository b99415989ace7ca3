"""What each table and column of the tuning DB means, for Datasette's metadata (``xlstm-autotune db``).

Kept beside the schema: a column added by a migration gets its line here (a test checks that every
column of a fresh database has one).
"""

from __future__ import annotations

from typing import Any

_SHARED = {
    "id": "Row id.",
    "machine_id": "Machine fingerprint id (machines.id): one per hardware + OS + software stack.",
    "run_id": "Tuning run (runs.id).",
    "workload_id": "Workload (workloads.id).",
    "created_at": "When the row was written (UTC, ISO 8601).",
    "torch": "torch version.",
    "triton": "Triton version, if installed.",
    "config_json": "KernelConfig as JSON (family, chunk_size, heads_per_band, t_inner, driver, compile_mode, "
                   "precision; threads: the CPU thread count around each call, absent for the process's own).",
    "config_key": "Canonical JSON of the effective config: equal keys are the same compiled kernel.",
    "t_inner_effective": "T_inner that compiled and ran (the probe may ratchet the requested one down).",
    "compile_s": "Seconds of the first (compiling) call, kept apart from the steady-state timing.",
    "median_ms": "Median wall time of one call, milliseconds (device synchronised).",
    "spread_ms": "Spread of the timed samples, milliseconds (a large spread hints at a busy machine).",
    "tokens_per_s": "Throughput: B x S tokens per second at the median time.",
    "equivalence_error": "max|err| / max|ref| against the float64 reference (the canonical-equivalence gate).",
}

TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "machines": ("One row per machine fingerprint: timings only compare within one machine.", {
        "id": "Fingerprint id (hash of the fields that make timings comparable).",
        "cpu": "CPU model.", "device_type": "cpu, cuda or mps.", "device_name": "Accelerator (or CPU) name.",
        "os": "Operating system and version.", "machine": "Architecture (platform.machine()).",
        "python": "Python version.", "memory_gb": "Device (or system) memory, GB.",
        "device_count": "Accelerators of this type.", "fingerprint_json": "The full fingerprint, JSON.",
        "first_seen": "First tuning run on this machine (UTC).", "last_seen": "Latest tuning run (UTC).",
    }),
    "runs": ("One tuning run (xlstm-autotune tune, or a scheduled run) from start to its final status.", {
        "id": "Run id (the report is HOME/reports/run-<id>.html).",
        "status": "running, completed, interrupted (Ctrl-C, killed) or failed (with error).",
        "quick": "1 for a --quick run (small budgets).", "device": "Device tuned (cpu, cuda:0, mps).",
        "pid": "Process id of the run.", "host": "Host name of the run.", "started_at": "Start (UTC).",
        "heartbeat_at": "Last sign of life; a stale one marks a dead run interrupted.",
        "finished_at": "End (UTC).", "error": "Why the run failed, if it did.",
        "settings_json": "The XLSTM_AUTOTUNE_* settings of the run, JSON.",
    }),
    "workloads": ("One row per distinct workload shape the tuner optimised for.", {
        "spec": "B,NH,S,DHQK,DHV,dtype,mode (the form every command takes).", "B": "Batch size.",
        "NH": "Heads.", "S": "Sequence length (1 for decode).", "DHQK": "Query/key head dimension.",
        "DHV": "Value head dimension.", "dtype": "Input dtype.", "mode": "prefill (a sequence) or decode (one step).",
    }),
    "trials": ("Every evaluated candidate: compiled, validated against the reference, then timed.", {
        "study_name": "Optuna study (machine/workload/space signature/software) in HOME/tuning.optuna.db.",
        "trial_number": "Optuna trial number within the study.",
        "effective_json": "The config that actually ran (after the T_inner ratchet), JSON.",
        "is_default": "1 for the default config (the speedup baseline).",
        "status": "ok (timed), rejected (failed the equivalence gate) or failed (compile/run error).",
        "reason": "Why a candidate was rejected or failed.", "validate_s": "Seconds spent validating.",
        "tolerance": "Gate tolerance for this dtype.", "validation_shape": "Shape the gate ran on.",
        "min_ms": "Fastest timed sample, milliseconds.", "repeats": "Timed samples taken.",
        "unstable": "1 when the samples stayed unstable after re-measuring (never decides a winner).",
        "instability": "Why the samples are not trusted (spread vs median, median vs min).",
        "remeasures": "Extra sample batches taken because the first ones were unstable.",
        "load_avg": "1-minute load average while timing.",
        "steal_fraction": "Share of CPU time stolen by the hypervisor while timing (where the OS reports it).",
    }),
    "results": ("The winner per (run, workload) after the side-by-side re-timing of the best candidates.", {
        "trial_id": "The winner's trial (trials.id).",
        "default_median_ms": "The default config's median in the same interleaved rounds.",
        "speedup": "default_median_ms / median_ms (paired re-timing).", "n_trials": "Candidates evaluated.",
        "n_rejected": "Candidates rejected by the gate.", "n_failed": "Candidates that failed to compile or run.",
        "retime_json": "Every re-timed candidate with its numbers, JSON.",
        "speedup_low": "Lower end of the speedup's interval (order statistics of the per-round ratios).",
        "speedup_high": "Upper end of the speedup's interval.",
        "speedup_confidence": "Confidence of that interval (e.g. 0.95).",
        "trusted": "0 when the run was too busy for its results to be trusted.",
        "busy_reason": "Why the run is not trusted (machine busy), else empty.",
    }),
    "probes": ("Compile-probe outcomes, so known failures are not compiled again.", {
        "compile_key": "Key of the compiled unit probed.", "t_inner_requested": "T_inner asked for.",
        "ok": "1 when it compiled.", "error": "The compile error (e.g. Metal's 31-buffer limit).",
        "max_buffers": "Most buffer arguments of one generated kernel (Metal allows 31).",
        "target": "Device the probe checked for: 'mps' for Metal (generated source, checked off-Mac), "
                  "else the machine's own device.",
        "detail_json": "The probe's full result (ratchet steps, kernels, buffer counts) as JSON.",
    }),
    "profiles": ("Published profile versions of each machine (the runtime loads the newest).", {
        "version": "Profile version (increments per publish).", "path": "Profile file.",
        "checksum": "Checksum of the published file.",
    }),
    # model workloads (schema v3, docs/model-tuning.md)
    "model_trials": ("Every evaluated model candidate (a ModelRunConfig of one model workload): gated against "
                     "the eager float32 model, timed as TTFT + decode steps.", {
        "workload": "Model workload 'model:<model key>,B,S,dtype'.", "model_key": "xk.model_key of the model.",
        "B": "Batch size.", "S": "Prompt length (prefill tokens).", "dtype": "The weights' dtype.",
        "model_json": "The model's xLSTMLargeConfig fields, JSON.",
        "study_name": "Optuna study (machine/workload/space/software).", "trial_number": "Optuna trial number.",
        "config_json": "ModelRunConfig as JSON (step_compile_mode, cuda_graphs, prefill, threads, state_dtype).",
        "is_default": "1 for ModelRunConfig() (the baseline).",
        "status": "ok (timed), rejected (failed the logits/greedy-token gate), failed (did not compile or run).",
        "reason": "Why a candidate was rejected or failed.", "validate_s": "Seconds of the gate's runs.",
        "logits_error": "max|err| / max|ref| of prefill and decode logits vs the eager float32 model.",
        "tolerance": "The gate's tolerance for the dtype.",
        "greedy_match": "1 when greedy tokens equal the reference's (required for float32 models).",
        "ttft_ms": "Median time to first token: prefill + argmax, milliseconds.",
        "ttft_spread_ms": "Spread of the TTFT samples, milliseconds.",
        "decode_ms": "Median time of one decode step, milliseconds.",
        "decode_spread_ms": "Spread of the decode-step samples, milliseconds.",
        "decode_tokens_per_s": "B / decode_ms: decode throughput.", "decode_steps": "Decode steps per timed request.",
        "objective_ms": "Median request time, TTFT + decode_steps steps: what the study minimises.",
        "repeats": "Timed requests.",
    }),
    "model_results": ("The winner per (run, model workload) after the side-by-side re-timing.", {
        "workload": "Model workload 'model:<model key>,B,S,dtype'.", "trial_id": "The winner's model_trials row.",
        "config_json": "The winning ModelRunConfig as JSON.", "ttft_ms": "Median time to first token, ms.",
        "decode_tokens_per_s": "Decode throughput.", "objective_ms": "Median request time (TTFT + decode steps), ms.",
        "default_objective_ms": "ModelRunConfig()'s median request time in the same rounds.",
        "speedup": "default_objective_ms / objective_ms.", "logits_error": "The winner's gate error.",
        "n_trials": "Candidates evaluated.", "n_rejected": "Candidates rejected by the gate.",
        "n_failed": "Candidates that failed to compile or run.",
        "retime_json": "Every re-timed candidate with its numbers, JSON.",
    }),
}


def column_description(table: str, column: str) -> str | None:
    """The description of ``table.column`` (table-specific, else shared), or None."""
    own = TABLES.get(table, ("", {}))[1]
    return own.get(column) or _SHARED.get(column)


def datasette_metadata(database: str, columns: dict[str, list[str]]) -> dict[str, Any]:
    """Datasette metadata for the tuning DB named ``database`` with ``columns`` per table."""
    tables = {}
    for table, cols in columns.items():
        desc = TABLES.get(table, ("", {}))[0]
        described = {c: d for c in cols if (d := column_description(table, c))}
        tables[table] = {"description": desc, "columns": described}
    return {"title": "xlstm-autotune tuning database",
            "description": "Machines, tuning runs, every trial with its status and reason, winners, probes and "
                           "published profiles. Read-only view.",
            "databases": {database: {"tables": tables}}}
