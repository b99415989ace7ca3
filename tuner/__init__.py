"""Optuna studies that probe, validate and time candidate kernel configs.

Entry points (see their docstrings):

    from tuner import autotune
    outcome = autotune(["1,4,512,64,64,float32"], quick=True)  # a whole run: tune, publish, report
    outcome.outcomes[0].config, outcome.profile_path, outcome.report_path, outcome.failed

    from tuner import tune_workload, RichProgress
    with RichProgress() as progress:                           # one study, under a run of its own
        result = tune_workload("1,4,512,64,64,float32", quick=True, progress=progress)
    result.winner, result.speedup, result.rejected

    entry = profile_entry(result)                              # winner -> xk.ProfileEntry (NoWinner if none)
    publish_entries(fingerprint, [entry], run_id=result.run_id)  # atomic, versioned, recorded in the DB
    bench("1,4,512,64,64,float32")                             # profile's pick vs the default, side by side
"""

from ._errors import CandidateFailed, TunerError, UnbandableWorkload, UnknownWorkload
from ._evaluate import (
    CompileProbe,
    Evaluation,
    Evaluator,
    KernelRunner,
    ProbeResult,
    Timing,
    compile_once,
    ratchet_probe,
    rel_error,
    run_kernel,
    time_callable,
)
from ._bench import BenchResult, BenchSide, bench, profile_choice
from ._progress import Progress, ProgressEvent, RichProgress
from ._publish import (
    NoWinner,
    ProfileRecordError,
    build_profile,
    check_recordable,
    profile_entry,
    publish_entries,
    publish_profile_file,
    record_published,
)
from ._fleet import FleetBest, FleetMisconfigured, FleetStorageUnavailable, fleet_best, node_name, open_fleet_storage
from ._lock import LockHolder, LockUnwritable, TuneLocked, lock_path, machine_lock, read_holder
from ._outcome import AutotuneResult, WorkloadOutcome, config_short, run_summary_markdown, winners_table
from ._preflight import check_workloads
from ._report import render_report, write_report, write_run_report, write_study_report
from ._report_data import (
    NoStorage,
    ReportError,
    ReportFile,
    RunReport,
    collect_run_report,
    existing_storage_url,
    load_report_study,
    report_path,
    study_report,
    summary_markdown,
)
from ._revalidate import Revalidation, published_entries, remeasure, revalidate
from ._run import PublishFn, StepRunner, TuneFn, autotune, call_step
from ._schedule import Decision, PublishedEntry, Remeasurement, decide, needs_remeasure, software_diff
from ._space import SearchSpace, effective_key, effective_t_inner, parse_workload, probe_key
from ._space import thread_choices
from ._model_bench import GenerateResult, GenerateRow, generate_side_by_side
from ._model_evaluate import ModelEvaluation, ModelEvaluator, ModelTiming, logits_error
from ._model_space import ModelSpace, run_config_key
from ._model_run import ModelAutotuneResult, ModelTuneFn, autotune_model
from ._model_study import (
    ModelCandidate,
    ModelRejected,
    ModelWorkloadResult,
    NoModelWinner,
    UnknownModel,
    mlstm_kernels_candidates,
    model_profile_entry,
    model_workload_for,
    prefill_candidates,
    prefill_shape,
    tune_model,
)
from ._external_check import external_prefill_failure
from ._metal_plan import FamilyLanding, TargetPlan, WorkloadPlan, candidates_for, plan_target
from ._timing import (
    Interval,
    LoadMeter,
    MachineLoad,
    QuietWait,
    busy_now,
    instability,
    machine_load,
    median_interval,
    paired_ratios,
    wait_for_quiet,
)
from .settings import TunerSettings, get_tuner_settings, mask_url, reset_tuner_settings, resolve_tuner_settings
from ._study import (
    Candidate,
    Rejected,
    WorkloadResult,
    optuna_storage,
    optuna_storage_url,
    study_name_for,
    tune_workload,
    tuning_run,
)

__all__ = [
    "AutotuneResult",
    "BenchResult",
    "BenchSide",
    "Candidate",
    "CandidateFailed",
    "CompileProbe",
    "Decision",
    "Evaluation",
    "Evaluator",
    "FamilyLanding",
    "FleetBest",
    "FleetMisconfigured",
    "FleetStorageUnavailable",
    "GenerateResult",
    "GenerateRow",
    "Interval",
    "KernelRunner",
    "LoadMeter",
    "LockHolder",
    "LockUnwritable",
    "MachineLoad",
    "ModelAutotuneResult",
    "ModelCandidate",
    "ModelEvaluation",
    "ModelEvaluator",
    "ModelRejected",
    "ModelSpace",
    "ModelTiming",
    "ModelTuneFn",
    "ModelWorkloadResult",
    "NoModelWinner",
    "NoStorage",
    "NoWinner",
    "ProbeResult",
    "ProfileRecordError",
    "Progress",
    "ProgressEvent",
    "PublishFn",
    "PublishedEntry",
    "QuietWait",
    "Rejected",
    "Remeasurement",
    "ReportError",
    "ReportFile",
    "Revalidation",
    "RichProgress",
    "RunReport",
    "SearchSpace",
    "StepRunner",
    "TargetPlan",
    "Timing",
    "TuneFn",
    "TuneLocked",
    "TunerError",
    "TunerSettings",
    "UnbandableWorkload",
    "UnknownModel",
    "UnknownWorkload",
    "WorkloadOutcome",
    "WorkloadPlan",
    "WorkloadResult",
    "autotune",
    "autotune_model",
    "bench",
    "build_profile",
    "busy_now",
    "call_step",
    "candidates_for",
    "check_recordable",
    "check_workloads",
    "collect_run_report",
    "compile_once",
    "config_short",
    "decide",
    "effective_key",
    "effective_t_inner",
    "existing_storage_url",
    "external_prefill_failure",
    "fleet_best",
    "generate_side_by_side",
    "get_tuner_settings",
    "instability",
    "load_report_study",
    "lock_path",
    "logits_error",
    "machine_load",
    "machine_lock",
    "mask_url",
    "median_interval",
    "mlstm_kernels_candidates",
    "model_profile_entry",
    "model_workload_for",
    "needs_remeasure",
    "node_name",
    "open_fleet_storage",
    "optuna_storage",
    "optuna_storage_url",
    "paired_ratios",
    "parse_workload",
    "plan_target",
    "prefill_candidates",
    "prefill_shape",
    "probe_key",
    "profile_choice",
    "profile_entry",
    "publish_entries",
    "publish_profile_file",
    "published_entries",
    "ratchet_probe",
    "read_holder",
    "record_published",
    "rel_error",
    "remeasure",
    "render_report",
    "report_path",
    "reset_tuner_settings",
    "resolve_tuner_settings",
    "revalidate",
    "run_config_key",
    "run_kernel",
    "run_summary_markdown",
    "software_diff",
    "study_name_for",
    "study_report",
    "summary_markdown",
    "thread_choices",
    "time_callable",
    "tune_model",
    "tune_workload",
    "tuning_run",
    "wait_for_quiet",
    "winners_table",
    "write_report",
    "write_run_report",
    "write_study_report",
]
