"""Optuna studies that probe, validate and time candidate kernel configs.

Entry points (see their docstrings):

    from tuner import run_tuning, tune_workload, RichProgress
    with RichProgress() as progress:
        result = run_tuning(["1,4,512,64,64,float32"], quick=True, progress=progress)
    result.workloads[0].winner, result.workloads[0].speedup, result.workloads[0].rejected

    entry = profile_entry(result.workloads[0])                # winner -> xk.ProfileEntry (NoWinner if none)
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
    profile_path_for,
    publish_entries,
    publish_profile_file,
    record_published,
)
from ._fleet import FleetBest, FleetMisconfigured, FleetStorageUnavailable, fleet_best, node_name, open_fleet_storage
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
from ._space import SearchSpace, effective_key, effective_t_inner, parse_workload, probe_key
from ._model_bench import GenerateResult, GenerateRow, generate_side_by_side
from ._model_evaluate import ModelEvaluation, ModelEvaluator, ModelTiming, logits_error
from ._model_space import ModelSpace, run_config_key
from ._model_study import (
    ModelCandidate,
    ModelRejected,
    ModelWorkloadResult,
    NoModelWinner,
    UnknownModel,
    model_profile_entry,
    model_workload_for,
    prefill_candidates,
    tune_model,
)
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
from .settings import TunerSettings, get_tuner_settings, mask_url, reset_tuner_settings
from ._study import (
    Candidate,
    Rejected,
    RunResult,
    WorkloadResult,
    optuna_storage,
    optuna_storage_url,
    run_tuning,
    study_name_for,
    study_summary,
    tune_workload,
    tuning_run,
)

__all__ = [
    "BenchResult",
    "BenchSide",
    "Candidate",
    "CandidateFailed",
    "CompileProbe",
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
    "MachineLoad",
    "ModelCandidate",
    "ModelEvaluation",
    "ModelEvaluator",
    "ModelRejected",
    "ModelSpace",
    "ModelTiming",
    "ModelWorkloadResult",
    "NoModelWinner",
    "NoStorage",
    "NoWinner",
    "ProbeResult",
    "ProfileRecordError",
    "Progress",
    "ProgressEvent",
    "QuietWait",
    "Rejected",
    "ReportError",
    "ReportFile",
    "RichProgress",
    "RunReport",
    "RunResult",
    "SearchSpace",
    "TargetPlan",
    "Timing",
    "TunerError",
    "TunerSettings",
    "UnbandableWorkload",
    "UnknownModel",
    "UnknownWorkload",
    "WorkloadPlan",
    "WorkloadResult",
    "bench",
    "build_profile",
    "busy_now",
    "candidates_for",
    "check_recordable",
    "check_workloads",
    "collect_run_report",
    "compile_once",
    "effective_key",
    "effective_t_inner",
    "existing_storage_url",
    "fleet_best",
    "generate_side_by_side",
    "get_tuner_settings",
    "instability",
    "load_report_study",
    "logits_error",
    "machine_load",
    "mask_url",
    "median_interval",
    "model_profile_entry",
    "model_workload_for",
    "node_name",
    "open_fleet_storage",
    "optuna_storage",
    "optuna_storage_url",
    "paired_ratios",
    "parse_workload",
    "plan_target",
    "prefill_candidates",
    "probe_key",
    "profile_choice",
    "profile_entry",
    "profile_path_for",
    "publish_entries",
    "publish_profile_file",
    "ratchet_probe",
    "record_published",
    "rel_error",
    "render_report",
    "report_path",
    "reset_tuner_settings",
    "run_config_key",
    "run_kernel",
    "study_name_for",
    "study_report",
    "study_summary",
    "summary_markdown",
    "time_callable",
    "tune_model",
    "tune_workload",
    "tuning_run",
    "wait_for_quiet",
    "write_report",
    "write_run_report",
    "write_study_report",
]
