"""Settings of the tuner layer: run defaults, studies and their storage, timing, space, gates, fleet, trust.

``TunerSettings`` extends the kernel/runtime ``xlstm_kernels.Settings`` with the tuner's fields under the
same env prefix (``XLSTM_AUTOTUNE_``) and the same ``.env`` file, so one object carries everything a
tuning run reads. ``get_tuner_settings()`` caches one copy; ``reset_tuner_settings()`` forgets only that
copy (the kernel's settings, the runtime's loaded profile and its fast-path memo stay). A reset of the
kernel's settings (``xlstm_kernels.reset_settings()``) makes this copy be read afresh too.
"""

from __future__ import annotations

import re

from pydantic import Field, field_serializer, field_validator

from xlstm_kernels.settings import LayerCache, Settings, get_settings


class TunerSettings(Settings):
    """Kernel/runtime settings plus the tuner's; env prefix ``XLSTM_AUTOTUNE_``."""

    # -- run defaults (a tune or scheduled run; re-validation's re-tune rule) --------------------
    workloads: list[str] = Field(
        default=["1,4,512,64,128,float32,prefill", "1,4,1,64,128,float32,decode"],
        description="Workloads 'B,NH,S,DHQK,DHV,dtype[,mode]' a tune or scheduled run covers when none are given.",
    )
    retune_slowdown: float = Field(
        default=0.15,
        gt=0,
        description="A scheduled run re-tunes a workload whose winner re-times slower than the "
        "published median by more than this fraction.",
    )
    # -- tuner: studies, timing, search space, validation gate -----------------------------------
    optuna_storage: str | None = Field(
        default=None,
        description="Optuna storage URL for the studies (e.g. PostgreSQL for a fleet sharing one "
        "study); default: SQLite file beside the tuning DB (<db stem>.optuna.db).",
    )
    tune_n_trials: int = Field(default=40, ge=1, description="Trials per workload study (TPE spaces).")
    tune_quick_n_trials: int = Field(default=10, ge=1, description="Trials per workload with --quick.")
    tune_grid_max: int = Field(
        default=24, ge=1, description="A space with at most this many distinct candidates is searched "
        "exhaustively (grid); a larger one with TPE."
    )
    tune_warmup: int = Field(default=2, ge=1, description="Untimed calls before timing a candidate.")
    tune_repeats: int = Field(default=10, ge=3, description="Timed samples per candidate (median, spread).")
    tune_decode_burst: int = Field(
        default=8, ge=1,
        description="A decode sample times this many back-to-back steps between two synchronisations "
        "(per step), as a decode loop enqueues them; 1 times single synchronised steps.",
    )
    tune_trial_budget_s: float = Field(
        default=20.0, gt=0, description="Bound on one candidate's timed repeats (at least 3 are taken)."
    )
    tune_retime_top_k: int = Field(
        default=3, ge=1, description="Best candidates re-timed side by side (plus the default)."
    )
    tune_retime_rounds: int = Field(default=7, ge=1, description="Interleaved rounds of the re-timing.")
    tune_seed: int = Field(default=0, description="Seed of the samplers and the validation inputs.")
    validate_max_s: int = Field(
        default=256, ge=1, description="Validation runs on at most this many steps (at least one "
        "compiled span, so the same kernel is exercised); the float64 reference loop is slow."
    )
    tune_families: list[str] | None = Field(
        default=None, description="Narrow the search space: families to try (default: all)."
    )
    tune_chunk_sizes: list[int] | None = Field(
        default=None, description="Narrow the search space: chunk sizes (default: powers of two up to S)."
    )
    tune_heads_per_band: list[int] | None = Field(
        default=None, description="Narrow the search space: heads per band (default: every divisor of NH)."
    )
    tune_t_inners: list[int] | None = Field(
        default=None, description="Narrow the search space: T_inner values (default: the unroll ladder)."
    )
    tune_compile_modes: list[str] | None = Field(
        default=None, description="CUDA only: compile modes to try (default: all)."
    )
    tune_precisions: list[str] | None = Field(
        default=None, description="CUDA only: precisions to try (default: fp32, tf32, mixed)."
    )
    tol_fp32: float = Field(
        default=1e-4, gt=0, description="Max relative error vs. the float64 reference, float32 inputs."
    )
    tol_low_precision: float = Field(
        default=1e-2, gt=0, description="Max relative error vs. the float64 reference, bf16/fp16 inputs."
    )
    # -- model tuner (model workloads: tuner/_model_study.py, `xlstm-autotune tune --model`) -----
    tune_model_decode_steps: int = Field(
        default=32, ge=1, description="Decode steps of the request a model candidate is timed on (objective: "
        "prefill of the prompt + this many greedy steps, one burst between two synchronisations)."
    )
    tune_model_gate_steps: int = Field(
        default=8, ge=1, description="Decode steps whose logits (and greedy tokens) the model gate compares "
        "with the eager float32 model."
    )
    tune_model_repeats: int = Field(default=5, ge=3, description="Timed requests per model candidate (median).")
    tune_model_n_trials: int = Field(default=12, ge=1, description="Candidates per model study (TPE spaces).")
    tune_model_prefill_winners: int = Field(
        default=3, ge=0, description="Kernel winners (DB results and profile entries of this machine for "
        "the model's head shape) offered as prefill candidates, besides the runner's own choice."
    )
    tune_model_step_modes: list[str] | None = Field(
        default=None, description="Narrow the model space: step compile modes (default: default and "
        "max-autotune-no-cudagraphs; reduce-overhead, CUDA only, is default + CUDA graphs)."
    )
    tune_model_cuda_graphs: list[bool] | None = Field(
        default=None, description="Narrow the model space, CUDA only: CUDA graphs on/off (default: both)."
    )
    tune_model_prefill_graphs: list[bool] | None = Field(
        default=None, description="Narrow the model space, CUDA only: the runner's prefill_graphs (a fresh "
        "prefill replayed as one CUDA graph) off/on (default: both)."
    )
    tune_model_threads: list[int] | None = Field(
        default=None, description="Narrow the model space, CPU only: thread counts to try besides torch's "
        "own (default: half of torch's count)."
    )
    tune_model_state_dtypes: list[str] | None = Field(
        default=None, description="Narrow the model space: inference state dtypes (default: float32, bfloat16)."
    )
    tune_model_fuse_projections: list[bool] | None = Field(
        default=None, description="Narrow the model space: the runner's fuse_projections off/on (default: both)."
    )
    tune_model_mlstm_kernels: list[str] | None = Field(
        default=None, description="mlstm_kernels chunkwise kernels offered as prefill candidates, as "
        "'<kernel>@<chunk size>' (NX-AI's kernels inside the runner, beside ours; docs/runner.md). Default: "
        "on CUDA, chunkwise--triton_xl_chunk@128 and chunkwise--triton_limit_chunk@64 where mlstm_kernels' "
        "Triton kernels run; elsewhere none. [] offers none."
    )
    tune_model_mlstm_kernels_check_s: float = Field(
        default=300, ge=0, description="Seconds a child process may take to run an mlstm_kernels "
        "prefill once at the model's head shape (its compile included) before the model study offers it: "
        "a Triton compile can abort the interpreter, which then kills the child, not the study. 0 skips the check."
    )
    tol_model_fp32: float = Field(
        default=1e-4, gt=0, description="Max relative logits error (max|err|/max|ref| over prefill and the "
        "gate's decode steps) of a float32 model candidate vs. the eager float32 model, native kernels."
    )
    tol_model_low_precision: float = Field(
        default=1e-1, gt=0, description="Max relative logits error of a bf16/fp16 model candidate vs. the "
        "eager float32 model (its weights are the reference's, rounded)."
    )
    tol_model_eager_factor: float = Field(
        default=2.0, ge=1, description="A bf16/fp16 model candidate also passes within this multiple of "
        "the eager model's own error in that dtype (its native kernels vs. the eager float32 model): a deep "
        "model's rounding alone can exceed tol_model_low_precision."
    )
    # -- fleet mode (issue 18): shared Optuna studies per machine class --------------------------
    fleet: bool = Field(
        default=False,
        description="Fleet mode: studies are shared by the machines of one class in OPTUNA_STORAGE "
        "(required, e.g. postgresql+psycopg://...), named after the class, with Optuna heartbeats.",
    )
    fleet_name: str = Field(
        default="default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Namespace of one fleet's studies and work pools (several fleets may share servers).",
    )
    fleet_node: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="This machine's name in the fleet, recorded on every trial it times; default: host name.",
    )
    fleet_heartbeat_s: int = Field(
        default=30, ge=1, description="Optuna heartbeat interval of a running trial in the shared storage."
    )
    fleet_grace_s: int = Field(
        default=120, ge=2, description="A running trial without a heartbeat for this long is failed and retried."
    )
    fleet_max_retry: int = Field(
        default=3, ge=0, description="How often a trial abandoned by a dead machine is retried."
    )
    fleet_poll_s: float = Field(
        default=5.0, gt=0, description="While other machines' trials run, how often a worker checks them."
    )
    # -- trustworthy timing on a busy machine (issue 16; tuner/_timing.py, docs/timing.md) -------
    tune_unstable_spread: float = Field(
        default=0.25, gt=0, description="A candidate's samples are unstable when their interquartile "
        "spread exceeds this fraction of their median."
    )
    tune_unstable_tail: float = Field(
        default=1.5, gt=1, description="A candidate's samples are unstable when their median exceeds "
        "their minimum by more than this factor (a descheduled thread stalls some calls)."
    )
    tune_remeasure_max: int = Field(
        default=3, ge=0, description="Extra measurement rounds an unstable candidate gets (each after "
        "a back-off) before it is marked unstable; 0 marks at once."
    )
    tune_remeasure_backoff_s: float = Field(
        default=0.2, ge=0, description="Pause before the first re-measurement; doubled before each next one."
    )
    tune_speedup_rounds: int = Field(
        default=9, ge=3, description="Fresh paired rounds (winner and default back to back, order "
        "alternating) the published speedup and its interval come from."
    )
    tune_speedup_confidence: float = Field(
        default=0.9, gt=0, lt=1, description="Confidence level of the speedup's interval (order "
        "statistics of the per-round ratios: distribution-free, at least this coverage)."
    )
    tune_speedup_span_s: float = Field(
        default=2.0, ge=0, description="The paired rounds of the published speedup are paced to span at "
        "least this many seconds, so load that comes and goes hits some rounds rather than a whole batch."
    )
    tune_speedup_max_width: float = Field(
        default=0.5, gt=0, description="A speedup interval wider than this fraction of the speedup "
        "means 'machine busy: results not trustworthy': the run does not replace a published winner."
    )
    busy_load_per_core: float = Field(
        default=0.9, gt=0, description="The machine is busy when its 1-minute load average per core "
        "exceeds this (tune warns; scheduled runs wait)."
    )
    busy_steal_fraction: float = Field(
        default=0.1, ge=0, le=1, description="The machine is busy when this fraction of CPU time was "
        "stolen by the hypervisor while measuring (where /proc/stat reports steal)."
    )
    serve_quiet_wait_s: float = Field(
        default=1800.0, ge=0, description="How long a scheduled run waits for a quiet machine before "
        "timing (then it tunes anyway, and says so)."
    )
    serve_quiet_poll_s: float = Field(default=30.0, gt=0, description="How often that wait re-reads the load.")

    # -- CPU thread count as a tuning dimension (issue 16; tuner/_space.py, xlstm_kernels/threads.py) ---
    tune_threads: list[int] | None = Field(
        default=None, description="CPU only: torch thread counts the kernel space tries besides the "
        "process's own (default: 1 .. tune_max_threads; [] turns the dimension off)."
    )
    tune_max_threads: int | None = Field(
        default=None, ge=1, description="CPU only: the most threads the kernel space's default counts "
        "go up to (default: os.cpu_count())."
    )

    @field_validator("tune_model_mlstm_kernels")
    @classmethod
    def _valid_mlstm_kernels(cls, value: list[str] | None) -> list[str] | None:
        from xlstm_kernels.runner import MlstmKernelsPrefill

        for spec in value or ():
            MlstmKernelsPrefill.parse(spec)  # ValueError: pydantic names the setting
        return value

    @field_serializer("optuna_storage")
    def _mask_storage(self, url: str | None) -> str | None:
        return mask_url(url) if url else url


def mask_url(url: str) -> str:
    """``scheme://user:secret@host/db`` -> ``scheme://user:***@host/db`` (for messages, logs and the DB)."""
    return re.sub(r"(://[^:/@]*):.*@", r"\1:***@", url)  # to the last @: over-masking is safe


_LAYER = LayerCache(TunerSettings, get_settings)


def get_tuner_settings() -> TunerSettings:
    """The process-wide tuner settings, read once (again after either reset: this layer's or the kernel's)."""
    return _LAYER.get()


def resolve_tuner_settings(settings: Settings | None) -> TunerSettings:
    """The settings a tuner function runs with: ``None`` -> :func:`get_tuner_settings`; a kernel-layer
    ``xlstm_kernels.Settings`` -> its fields, with the tuner's from the environment and defaults."""
    if settings is None:
        return get_tuner_settings()
    if isinstance(settings, TunerSettings):
        return settings
    if isinstance(settings, Settings):
        return TunerSettings(**settings.model_dump())
    raise TypeError(f"settings must be a tuner.TunerSettings, an xlstm_kernels.Settings or None, "
                    f"got {type(settings).__name__}")


def reset_tuner_settings() -> None:
    """Forget the cached tuner settings only; the kernel's settings and the runtime's state stay."""
    _LAYER.reset()
