"""Settings of the flows layer: the `serve` schedule, the local Prefect server, lock waits, fleet deployments.

``FlowSettings`` extends ``tuner.settings.TunerSettings`` (hence the kernel's settings too) under the same
env prefix (``XLSTM_AUTOTUNE_``) and ``.env`` file. ``get_flow_settings()`` caches one copy;
``reset_flow_settings()`` forgets only that copy: the tuner's and kernel's cached settings, the runtime's
loaded profile and its fast-path memo stay. A reset of a lower layer makes this copy be read afresh too;
every flow run resets the tuner's (``tuner.reset_tuner_settings()``), so a long-lived deployment reads
the tuner's and the flows' settings afresh while the kernel's runtime state stays.
"""

from __future__ import annotations

from pydantic import Field

from tuner.settings import TunerSettings, get_tuner_settings
from xlstm_kernels.settings import LayerCache


class FlowSettings(TunerSettings):
    """Tuner and kernel/runtime settings plus the flows'; env prefix ``XLSTM_AUTOTUNE_``."""

    # -- server and schedule (`serve`, the local Prefect server) ---------------------------------
    serve_cron: str = Field(default="0 3 * * *", description="Cron schedule of `xlstm-autotune serve`.")
    prefect_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the local Prefect server `serve` starts; default: a free one."
    )
    server_startup_timeout_s: float = Field(
        default=180.0, gt=0, description="How long `serve` waits for a local Prefect server to answer."
    )
    # -- machine lock waits ----------------------------------------------------------------------
    serve_lock_wait_s: float = Field(
        default=6 * 3600.0, ge=0, description="How long a scheduled run waits for the machine lock held by a manual `tune`."
    )
    lock_wait_s: float = Field(
        default=0.0, ge=0, description="How long `tune` waits for another run's machine lock (0: refuse at once)."
    )
    # -- fleet deployments (`fleet deploy`: one scheduled deployment per machine class) ----------
    fleet_cron: str = Field(default="0 3 * * *", description="Schedule of each class's deployment.")
    fleet_class_size: int = Field(
        default=1, ge=1, le=1000,
        description="Machines per class: a new class deployment gets this many schedules of FLEET_CRON, "
        "so each tick queues one run per machine.",
    )


_LAYER = LayerCache(FlowSettings, get_tuner_settings)


def get_flow_settings() -> FlowSettings:
    """The process-wide flow settings, read once (again after this layer's reset or a lower layer's)."""
    return _LAYER.get()


def reset_flow_settings() -> None:
    """Forget the cached flow settings only; the tuner's and kernel's settings and the runtime's state stay."""
    _LAYER.reset()
