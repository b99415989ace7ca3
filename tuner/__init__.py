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
    profile_entry,
    profile_path_for,
    publish_entries,
    publish_profile_file,
    record_published,
)
from ._space import SearchSpace, effective_key, effective_t_inner, parse_workload, probe_key
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
from ._study import (
    Candidate,
    Rejected,
    RunResult,
    WorkloadResult,
    optuna_storage,
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
    "Interval",
    "KernelRunner",
    "LoadMeter",
    "MachineLoad",
    "NoWinner",
    "ProbeResult",
    "ProfileRecordError",
    "Progress",
    "ProgressEvent",
    "QuietWait",
    "Rejected",
    "RichProgress",
    "RunResult",
    "SearchSpace",
    "Timing",
    "TunerError",
    "UnbandableWorkload",
    "UnknownWorkload",
    "WorkloadResult",
    "bench",
    "build_profile",
    "busy_now",
    "compile_once",
    "instability",
    "machine_load",
    "median_interval",
    "paired_ratios",
    "probe_key",
    "ratchet_probe",
    "effective_key",
    "effective_t_inner",
    "optuna_storage",
    "parse_workload",
    "profile_choice",
    "profile_entry",
    "profile_path_for",
    "publish_entries",
    "publish_profile_file",
    "record_published",
    "rel_error",
    "run_kernel",
    "study_name_for",
    "study_summary",
    "time_callable",
    "tune_workload",
    "tuning_run",
    "wait_for_quiet",
]
