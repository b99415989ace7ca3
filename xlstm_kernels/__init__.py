"""xlstm_kernels: the mLSTM as per-machine autotuned ``torch.compile`` pseudo-kernels.

Imports nothing from the tuner, the storage or the flows: production inference needs only this.
"""

from .api import mlstm, mlstm_step
from .kernels.compiler import CACHE as compile_cache
from .kernels.compiler import CompileKey, EagerFallbackWarning
from .kernels.config import DEFAULT_CONFIG, KernelConfig, Workload
from .kernels.families import step_layout
from .kernels.inputs import random_inputs
from .profiles.fingerprint import Fingerprint, fingerprint
from .profiles.fingerprint import machine_class
from . import probe  # the module: xk.probe.probe(config, workload) runs a compile-probe
from .probe import FuseReport, ProbeError, ProbeResult, classify_error, fuse_report
from .profiles.profile import (
    Profile,
    ProfileDamagedError,
    ProfileEntry,
    ProfileError,
    ProfileMismatchError,
    ProfileNotFoundError,
    ProfileSchemaError,
    ProfileWriteError,
    PublishResult,
    TuningRun,
    default_profile_path,
    list_profile_versions,
    load_profile,
    publish_profile,
    rollback_profile,
)
from .paths import PathEscapeError
from .kernels.reference import max_rel_err, mlstm_reference, rel_err
from .models.presets import ModelSpecError, build_model
from .profiles.model_profile import ModelChoice, explain_model_config, model_config_for
from .models.workload import ModelWorkload
from .profiles.profile import ModelProfileEntry
from .runner import (
    BatchSizeError,
    MlstmKernelsPrefill,
    ModelGraphBreakError,
    ModelRunConfig,
    ModelRunner,
    PrefillKernelUnavailable,
    RunnerError,
    RunnerState,
    SequenceTooLongError,
    StaleStateError,
    StateMismatchError,
    UnsupportedModelError,
    compile_model,
    model_key,
)
from .kernels.reference import validation_inputs
from .profiles.runtime import ConfigChoice, ProfileWarning, explain_config, loaded_profile, reload_profile
from .settings import Settings, UnknownSetting, get_settings, reset_settings
from .kernels.shrink import NonCanonicalWarning, run_with_shrink, tuning
from .kernels.validation import WorkloadTooLarge
from .threads import use_threads

__all__ = [
    "BatchSizeError",
    "CompileKey",
    "ConfigChoice",
    "DEFAULT_CONFIG",
    "EagerFallbackWarning",
    "Fingerprint",
    "FuseReport",
    "KernelConfig",
    "MlstmKernelsPrefill",
    "ModelChoice",
    "ModelGraphBreakError",
    "ModelProfileEntry",
    "ModelRunConfig",
    "ModelRunner",
    "ModelSpecError",
    "ModelWorkload",
    "NonCanonicalWarning",
    "PathEscapeError",
    "PrefillKernelUnavailable",
    "ProbeError",
    "ProbeResult",
    "Profile",
    "ProfileDamagedError",
    "ProfileEntry",
    "ProfileError",
    "ProfileMismatchError",
    "ProfileNotFoundError",
    "ProfileSchemaError",
    "ProfileWarning",
    "ProfileWriteError",
    "PublishResult",
    "RunnerError",
    "RunnerState",
    "SequenceTooLongError",
    "Settings",
    "StaleStateError",
    "StateMismatchError",
    "TuningRun",
    "UnknownSetting",
    "UnsupportedModelError",
    "Workload",
    "WorkloadTooLarge",
    "build_model",
    "classify_error",
    "compile_cache",
    "compile_model",
    "default_profile_path",
    "explain_config",
    "explain_model_config",
    "fingerprint",
    "fuse_report",
    "get_settings",
    "list_profile_versions",
    "load_profile",
    "loaded_profile",
    "machine_class",
    "max_rel_err",
    "mlstm",
    "mlstm_reference",
    "model_config_for",
    "model_key",
    "rel_err",
    "mlstm_step",
    "probe",
    "publish_profile",
    "random_inputs",
    "reload_profile",
    "reset_settings",
    "rollback_profile",
    "run_with_shrink",
    "step_layout",
    "tuning",
    "use_threads",
    "validation_inputs",
]
__version__ = "0.1.0"
