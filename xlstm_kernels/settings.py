"""All settings of xlstm-autotune in one pydantic-settings class.

Read from the environment (prefix ``XLSTM_AUTOTUNE_``), a ``.env`` file in the working directory,
or explicit keyword overrides. Every package (kernels, storage, tuner, flows) reads its knobs here.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """xlstm-autotune settings; env prefix ``XLSTM_AUTOTUNE_``."""

    model_config = SettingsConfigDict(
        env_prefix="XLSTM_AUTOTUNE_", env_file=".env", extra="ignore", validate_default=True
    )

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
    compile_timeout_s: float = Field(default=600.0, gt=0, description="Bound on one probe compile.")
    shrink: bool = Field(
        default=False,
        description="Opt-in, non-canonical: on device out-of-memory retry with a smaller chunk.",
    )
    inductor_cache_dir: Path | None = Field(
        default=None,
        description="Inductor's on-disk cache; default HOME/inductor-cache unless "
        "TORCHINDUCTOR_CACHE_DIR is already set.",
    )
    recompile_limit: int = Field(
        default=64, ge=8, description="Dynamo recompile limit applied when kernels are compiled."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # --- flows: tuning runs, scheduled runs, the local Prefect server ---
    workloads: list[str] = Field(
        default=["1,4,512,64,128,float32,prefill", "1,4,1,64,128,float32,decode"],
        description="Workloads 'B,NH,S,DHQK,DHV,dtype[,mode]' a tune or scheduled run covers when none are given.",
    )
    serve_cron: str = Field(default="0 3 * * *", description="Cron schedule of `xlstm-autotune serve`.")
    retune_slowdown: float = Field(
        default=0.15,
        gt=0,
        description="A scheduled run re-tunes a workload whose winner re-times slower than the "
        "published median by more than this fraction.",
    )
    prefect_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the local Prefect server `serve` starts; default: a free one."
    )
    server_startup_timeout_s: float = Field(
        default=180.0, gt=0, description="How long `serve` waits for a local Prefect server to answer."
    )
    lock_wait_s: float = Field(
        default=0.0, ge=0, description="How long `tune` waits for another run's machine lock (0: refuse at once)."
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
    """Forget cached settings (tests, or after changing ``XLSTM_AUTOTUNE_*`` variables)."""
    get_settings.cache_clear()
