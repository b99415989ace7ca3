"""Settings of the kernel/runtime layer: home, profile, device, compile and probe bounds, limits.

Read from the environment (prefix ``XLSTM_AUTOTUNE_``), a ``.env`` file in the working directory,
or explicit keyword overrides. The layers above extend this class with their own fields under the same
prefix (``tuner.settings.TunerSettings``, ``flows.settings.FlowSettings``) and cache their own copy:
resetting one of them never drops this layer's settings, hence never the runtime's loaded profile or
fast-path memo. ``reset_settings()`` here makes every layer read its settings afresh.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class UnknownSetting(TypeError):
    """A keyword given to a settings class is not one of its fields (it may belong to a higher layer)."""


class Settings(BaseSettings):
    """Kernel/runtime settings (also read by ``storage``); env prefix ``XLSTM_AUTOTUNE_``."""

    model_config = SettingsConfigDict(
        env_prefix="XLSTM_AUTOTUNE_", env_file=".env", extra="ignore", validate_default=True
    )

    def __init__(self, **values: Any) -> None:
        """Read the settings; a keyword that is no field raises ``UnknownSetting`` instead of being dropped."""
        unknown = sorted(k for k in values if not k.startswith("_") and k not in type(self).model_fields)
        if unknown:
            raise UnknownSetting(
                f"{type(self).__name__} has no setting {', '.join(unknown)}: kernel/runtime settings are "
                "xlstm_kernels.Settings, tuner settings tuner.TunerSettings, server/schedule/lock settings "
                "flows.settings.FlowSettings (docs/settings.md)"
            )
        super().__init__(**values)

    home: Path = Field(
        default=Path("~/.xlstm-autotune"),
        description="Directory holding the tuning DB, profiles, logs and the compile cache.",
    )
    db_path: Path | None = Field(default=None, description="Tuning database; default HOME/tuning.db.")
    profile_path: Path | None = Field(
        default=None, description="Profile file to load; default HOME/profiles/<machine id>.json."
    )
    use_profile: bool = Field(default=True, description="Use the tuned profile when config is None.")
    device: str | None = Field(default=None, description="Device for tuning runs; default: best available.")
    metal_buffer_limit: int = Field(default=31, ge=1, description="Metal's per-kernel buffer argument limit.")
    max_buffers: int | None = Field(
        default=None,
        ge=1,
        description="Buffer-argument limit enforced by the probe's static check; default: "
        "metal_buffer_limit on MPS, off elsewhere. Set it to emulate Metal on other devices.",
    )
    cpp_wrapper: bool = Field(
        default=True,
        description="On CPU, compile pseudo-kernels with Inductor's C++ wrapper: less Python between "
        "the kernels of every call (benchmarks/cpu_call_overhead.py measures it).",
    )
    direct_calls: bool = Field(
        default=True,
        description="Once torch.compile has served a kernel call, send later calls whose inputs have the "
        "same dtypes, shapes and strides straight to the compiled graph that served it, skipping "
        "torch.compile's per-call frame evaluation. Off: every call goes through torch.compile's wrapper.",
    )
    cpu_keep_freed_memory: bool = Field(
        default=True,
        description="Linux/glibc: once CPU kernels run, make malloc keep freed memory for reuse so "
        "per-call buffers do not page-fault (process-wide mallopt). Off leaves malloc alone.",
    )
    compile_timeout_s: float = Field(default=600.0, gt=0, description="Bound on one probe compile.")
    probe_startup_timeout_s: float = Field(
        default=120.0, gt=0, description="Bound on an isolated probe's child process start-up (importing torch), "
        "before its compile bound starts counting."
    )
    shrink: bool = Field(
        default=False,
        description="Opt-in, non-canonical: on device out-of-memory retry with a smaller chunk.",
    )
    inductor_cache_dir: Path | None = Field(
        default=None,
        description="Inductor's on-disk cache; default HOME/inductor-cache unless "
        "TORCHINDUCTOR_CACHE_DIR is already set.",
    )
    # -- tuning database (read by storage.open_db, below the tuner) -------------------------------
    db_busy_timeout_s: float = Field(
        default=30.0, gt=0, description="How long a writer waits for another process's write lock."
    )
    # -- Metal target (probe/tune --target mps; xlstm_kernels.probe.metal_codegen) -----------------------
    metal_threadgroup_memory_limit: int = Field(
        default=32768, ge=1,
        description="Metal's threadgroup memory per kernel in bytes (32 KiB on Apple GPUs): the probe's "
        "static check fails a generated Metal kernel that declares more.",
    )

    runner_prefill_graphs: int = Field(
        default=4, ge=1,
        description="Prefill CUDA graphs a model runner keeps with prefill_graphs on (one per batch size x "
        "prompt length; the least recently used is dropped).",
    )

    # -- hardening (issue 15): profile reading, trust, memory refusal ----------------------------
    profile_max_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024,
        description="Largest profile file read (bytes); a larger one is refused as damaged, never read whole.",
    )
    require_signed_profile: bool = Field(
        default=False,
        description="Refuse (default config + warning) a profile without a publication block (no checksum "
        "to verify); False: use it with one warning.",
    )
    memory_limit_fraction: float = Field(
        default=0.8, gt=0, le=1,
        description="tune/bench/probe and profile entries are refused when their memory estimate exceeds "
        "this fraction of the device's available memory (RAM on CPU).",
    )
    memory_limit_bytes: int | None = Field(
        default=None, ge=1, description="Explicit memory limit in bytes (overrides memory_limit_fraction).",
    )

    def resolved_home(self) -> Path:
        """The home directory, expanded (not created)."""
        return self.home.expanduser()

    def resolved_db_path(self) -> Path:
        """Where the tuning database lives."""
        return (self.db_path or self.resolved_home() / "tuning.db").expanduser()

    def resolved_inductor_cache_dir(self) -> Path:
        """Inductor cache directory; an explicit TORCHINDUCTOR_CACHE_DIR wins."""
        if self.inductor_cache_dir is not None:
            return self.inductor_cache_dir.expanduser()
        env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        return Path(env) if env else self.resolved_home() / "inductor-cache"


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; call ``reset_settings()`` after changing the environment."""
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings of every layer (tests, or after changing ``XLSTM_AUTOTUNE_*`` variables).

    The runtime's loaded profile and the fast-path memo are keyed on this object, so they reload too; the
    tuner's and the flows' cached settings are rebuilt on their next read (they key on it as well).
    """
    get_settings.cache_clear()


S = TypeVar("S", bound=Settings)


class LayerCache(Generic[S]):
    """An upper layer's settings (``cls``, a subclass of the layer below's), read once and read again
    after this layer's ``reset()`` or after the layer below (``below``) was re-read."""

    def __init__(self, cls: type[S], below: Callable[[], Settings]) -> None:
        self._cls, self._below = cls, below
        self._cached: tuple[Settings, S] | None = None  # (the lower settings it was read with, the copy)
        self._lock = threading.Lock()

    def get(self) -> S:
        """The cached copy, re-read when the layer below has been re-read since."""
        base = self._below()
        with self._lock:
            if self._cached is None or self._cached[0] is not base:
                self._cached = (base, self._cls())
            return self._cached[1]

    def reset(self) -> None:
        """Forget this layer's copy only; the layers below (and the runtime's state) stay."""
        with self._lock:
            self._cached = None
