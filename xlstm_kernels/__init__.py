"""xlstm_kernels: the mLSTM as per-machine autotuned ``torch.compile`` pseudo-kernels.

Imports nothing from the tuner, the storage or the flows: production inference needs only this.
"""

from .api import mlstm, mlstm_step
from .compiler import CACHE as compile_cache
from .compiler import CompileKey, EagerFallbackWarning
from .config import DEFAULT_CONFIG, KernelConfig, Workload
from .fingerprint import Fingerprint, fingerprint
from .reference import mlstm_reference
from .settings import Settings, get_settings, reset_settings

__all__ = [
    "DEFAULT_CONFIG",
    "CompileKey",
    "EagerFallbackWarning",
    "Fingerprint",
    "KernelConfig",
    "Settings",
    "Workload",
    "compile_cache",
    "fingerprint",
    "get_settings",
    "mlstm",
    "mlstm_reference",
    "mlstm_step",
    "reset_settings",
]
__version__ = "0.1.0"
