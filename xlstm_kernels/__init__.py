"""xlstm_kernels: the mLSTM as per-machine autotuned ``torch.compile`` pseudo-kernels.

Imports nothing from the tuner, the storage or the flows: production inference needs only this.
"""

from .api import mlstm, mlstm_step
from .compiler import CACHE as compile_cache
from .compiler import CompileKey, EagerFallbackWarning
from .config import DEFAULT_CONFIG, KernelConfig, Workload
from .fingerprint import Fingerprint, fingerprint
from . import probe  # the module: xk.probe.probe(config, workload) runs a compile-probe
from .probe import FuseReport, ProbeError, ProbeResult, classify_error, fuse_report
from .reference import mlstm_reference
from .settings import Settings, get_settings, reset_settings
from .shrink import NonCanonicalWarning, run_with_shrink, tuning

__all__ = [
    "DEFAULT_CONFIG",
    "CompileKey",
    "EagerFallbackWarning",
    "Fingerprint",
    "FuseReport",
    "KernelConfig",
    "NonCanonicalWarning",
    "ProbeError",
    "ProbeResult",
    "Settings",
    "Workload",
    "classify_error",
    "compile_cache",
    "fingerprint",
    "fuse_report",
    "get_settings",
    "mlstm",
    "mlstm_reference",
    "mlstm_step",
    "probe",
    "reset_settings",
    "run_with_shrink",
    "tuning",
]
__version__ = "0.1.0"
