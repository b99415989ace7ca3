"""xlstm_kernels: the mLSTM as per-machine autotuned ``torch.compile`` pseudo-kernels.

Imports nothing from the tuner, the storage or the flows: production inference needs only this.
"""

from .api import mlstm, mlstm_step
from .compiler import CACHE as compile_cache
from .compiler import CompileKey, EagerFallbackWarning
from .config import DEFAULT_CONFIG, KernelConfig, Workload
from .families import step_layout
from .fingerprint import Fingerprint, fingerprint
from . import probe  # the module: xk.probe.probe(config, workload) runs a compile-probe
from .probe import FuseReport, ProbeError, ProbeResult, classify_error, fuse_report
from .profile import (
    Profile,
    ProfileDamagedError,
    ProfileEntry,
    ProfileError,
    ProfileMismatchError,
    ProfileNotFoundError,
    ProfileSchemaError,
    PublishResult,
    TuningRun,
    default_profile_path,
    list_profile_versions,
    load_profile,
    publish_profile,
    rollback_profile,
)
from .reference import mlstm_reference, rel_err
from .reference import validation_inputs
from .runtime import ConfigChoice, ProfileWarning, explain_config, loaded_profile, reload_profile
from .settings import Settings, get_settings, reset_settings
from .shrink import NonCanonicalWarning, run_with_shrink, tuning

__all__ = [
    "CompileKey",
    "ConfigChoice",
    "DEFAULT_CONFIG",
    "EagerFallbackWarning",
    "Fingerprint",
    "FuseReport",
    "KernelConfig",
    "NonCanonicalWarning",
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
    "PublishResult",
    "Settings",
    "TuningRun",
    "Workload",
    "classify_error",
    "compile_cache",
    "default_profile_path",
    "explain_config",
    "fingerprint",
    "fuse_report",
    "get_settings",
    "list_profile_versions",
    "load_profile",
    "loaded_profile",
    "mlstm",
    "mlstm_reference",
    "rel_err",
    "mlstm_step",
    "probe",
    "publish_profile",
    "reload_profile",
    "reset_settings",
    "rollback_profile",
    "run_with_shrink",
    "step_layout",
    "tuning",
    "validation_inputs",
]
__version__ = "0.1.0"
