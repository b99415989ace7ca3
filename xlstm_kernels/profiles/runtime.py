"""Which config a call uses when none is given: this machine's tuned profile, looked up per workload.

Lookup rule (for a call with shape B, NH, S, DHQK, DHV, dtype, mode on a device of the profile's type):

1. **exact** — the entry whose workload equals the call's (B, NH, S, DHQK, DHV, dtype, mode);
2. **nearest** — else, among entries with the same DHQK, DHV, dtype and mode, the one nearest in
   log2 space: smallest |log2 S/S_e| first, then smallest |log2 B/B_e| + |log2 NH/NH_e|, ties to
   the smaller entry (S_e, B_e, NH_e);
3. **default** — else :data:`DEFAULT_CONFIG`.

An entry is a candidate only if its config is valid for the call: its ``heads_per_band`` divides NH
and its driver can run here (``ray`` needs Ray installed). A profile for another machine, device
type or software stack, a damaged file or an unknown schema version is not used: one
:class:`ProfileWarning` per cause, defaults for every call, never an exception.

The chosen entry is then checked against the call (:func:`entry_problem`): a compile mode this device
cannot run (CUDA graphs off CUDA), a chunk far longer than the sequence, an unroll past
:data:`MAX_T_INNER`, or a memory estimate over the limit (and over the default config's) sends the call
to :data:`DEFAULT_CONFIG` with one ``ProfileWarning`` per entry (source ``rejected-entry``).
A profile without a ``publication`` block is *unsigned* (no checksum to verify): used with one warning,
or refused when ``require_signed_profile`` is set.

Cost: the profile is loaded once (and again after ``reset_settings()`` or :func:`reload_profile`);
lookups are memoised by (B, NH, S, DHQK, DHV, dtype, device, mode), so a repeated call costs a few
dict operations.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..kernels.config import CUDA_ONLY_MODES, DEFAULT_CONFIG, KernelConfig, Workload, dtype_name
from .profile import Profile, ProfileEntry, ProfileError, ProfileNotFoundError, check_profile_matches
from ..settings import Settings, get_settings

_MEMO_LIMIT = 4096  # distinct call shapes remembered; the memo is cleared when it grows past this
MAX_T_INNER = 64  # an entry unrolling more units than this is refused: its compile would run for minutes
CHUNK_SLACK = 256  # an entry's chunk may exceed the call's S (rounded up to a power of two) up to this


class ProfileWarning(UserWarning):
    """The tuned profile is missing, stale, foreign or damaged: default configs are used instead."""


@dataclass(frozen=True)
class ConfigChoice:
    """Which config a call uses and why (what :func:`explain_config` returns)."""

    config: KernelConfig
    source: str  # "exact" | "nearest" | "default" | "profile-disabled" | "no-profile" | "rejected-profile" | "rejected-entry"
    workload: Workload
    entry: ProfileEntry | None
    profile_path: Path | None
    reason: str

    def __str__(self) -> str:
        lines = [
            f"workload   {self.workload}",
            f"config     {self.config.short(self.workload.mode)}",
            f"source     {self.source}",
            f"why        {self.reason}",
        ]
        if self.entry is not None:
            e = self.entry
            lines.append(
                f"entry      {e.workload}: median {e.median_s * 1e3:.3f} ms, {e.tokens_per_s:,.0f} tok/s, "
                f"{e.speedup_vs_default:.2f}x default, err {e.equivalence_error:.1e}"
            )
        if self.profile_path is not None:
            lines.append(f"profile    {self.profile_path}")
        return "\n".join(lines)


class _State:
    """The loaded profile for one Settings object, plus the lookup memo."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.profile: Profile | None = None
        self.path: Path | None = None
        self.unusable: str | None = None  # why the profile is not used (None: used)
        self.source_when_unusable = "no-profile"
        self.memo: dict[tuple, ConfigChoice] = {}
        self.lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        from .fingerprint import fingerprint
        from .profile import default_profile_path

        if not self.settings.use_profile:
            self.unusable = "profiles disabled (XLSTM_AUTOTUNE_USE_PROFILE=false): default config"
            self.source_when_unusable = "profile-disabled"
            return
        try:
            fp = fingerprint(self.settings.device)
            self.path = default_profile_path(fp.machine_id)
            profile = _read(self.path)
            check_profile_matches(profile, fp)
        except ProfileNotFoundError as exc:
            self._reject("missing", f"{exc}; using the default config (run `xlstm-autotune tune`)")
            return
        except ProfileError as exc:
            self.source_when_unusable = "rejected-profile"
            self._reject(type(exc).__name__, f"{exc}; using the default config")
            return
        except Exception as exc:  # noqa: BLE001 - loading a profile must never break inference
            self.source_when_unusable = "rejected-profile"
            self._reject("unexpected", f"profile {self.path} could not be loaded ({exc!r}); using the default config")
            return
        if profile.publication is None:
            if self.settings.require_signed_profile:
                self.source_when_unusable = "rejected-profile"
                self._reject("unsigned", f"profile {self.path} is unsigned (no publication block, so no checksum "
                             "to verify) and require_signed_profile is set; using the default config")
                return
            _warn_once(("unsigned", str(self.path)),
                       f"profile {self.path} is unsigned (no publication block: its checksum cannot be verified); "
                       "using it. Publish it with `xlstm-autotune profile publish`, or set "
                       "XLSTM_AUTOTUNE_REQUIRE_SIGNED_PROFILE=true to refuse unsigned profiles")
        self.profile = profile

    def _reject(self, cause: str, message: str) -> None:
        self.unusable = message
        _warn_once((cause, str(self.path)), message)


def _read(path: Path) -> Profile:
    from .profile import load_profile

    return load_profile(path)


_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()


def _caller_stacklevel() -> int:
    """stacklevel that points a warning at the first frame outside this package (the user's call)."""
    import sys

    root = Path(__file__).resolve().parents[1]
    # the package's own modules (its top level and these subpackages); the runner's frames count as callers
    package_dirs = {str(root)} | {str(root / sub) for sub in ("kernels", "models", "probe", "profiles")}
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve().parent) in package_dirs:
        frame, level = frame.f_back, level + 1
    return level


def _warn_once(key: tuple[str, str], message: str) -> None:
    with _WARNED_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    warnings.warn(message, ProfileWarning, stacklevel=_caller_stacklevel())


_STATE: _State | None = None
_STATE_LOCK = threading.Lock()


def _state() -> _State:
    global _STATE
    settings = get_settings()
    state = _STATE
    if state is None or state.settings is not settings:  # first call, or reset_settings() happened
        with _STATE_LOCK:
            state = _STATE
            if state is None or state.settings is not settings:
                state = _STATE = _State(settings)
    return state


def reload_profile() -> None:
    """Forget the loaded profile, memoised lookups and already-given warnings; the next call reloads."""
    global _STATE
    with _STATE_LOCK:
        _STATE = None
    with _WARNED_LOCK:
        _WARNED.clear()


def loaded_profile() -> Profile | None:
    """The profile the runtime uses now (None when it uses defaults)."""
    return _state().profile


def _runnable(cfg: KernelConfig, NH: int) -> bool:
    hpb = NH if cfg.heads_per_band is None else cfg.heads_per_band
    if NH % hpb != 0:
        return False
    if cfg.driver == "ray":
        import importlib.util

        return importlib.util.find_spec("ray") is not None
    return True


def _log2_gap(a: int, b: int) -> float:
    return abs(math.log2(a / b))


def choose(profile: Profile | None, workload: Workload) -> tuple[ProfileEntry | None, str]:
    """The profile entry for ``workload`` by the module's rule: (entry or None, "exact"|"nearest"|"default")."""
    if profile is None:
        return None, "default"
    best: tuple[tuple, ProfileEntry] | None = None
    for entry in profile.entries:
        w = entry.parsed_workload
        if (w.DHQK, w.DHV, w.dtype, w.mode) != (workload.DHQK, workload.DHV, workload.dtype, workload.mode):
            continue
        if not _runnable(entry.kernel_config, workload.NH):
            continue
        if w == workload:
            return entry, "exact"
        rank = (
            _log2_gap(workload.S, w.S),
            _log2_gap(workload.B, w.B) + _log2_gap(workload.NH, w.NH),
            w.S, w.B, w.NH,
        )
        if best is None or rank < best[0]:
            best = (rank, entry)
    if best is None:
        return None, "default"
    return best[1], "nearest"


def entry_problem(cfg: KernelConfig, workload: Workload, device: torch.device,
                  settings: Settings | None = None) -> str | None:
    """Why ``cfg`` (a profile entry's config) must not run this call, or None when it may."""
    from ..kernels.drivers import effective_t_inner
    from ..kernels.validation import call_bytes, memory_limit_bytes

    if cfg.compile_mode in CUDA_ONLY_MODES and device.type != "cuda":
        return f"compile_mode {cfg.compile_mode!r} needs CUDA graphs; the call is on {device.type}"
    if workload.mode == "decode":
        return None
    if cfg.family == "chunkwise":
        longest = max(CHUNK_SLACK, 1 << max(workload.S - 1, 0).bit_length())
        if cfg.chunk_size > longest:
            return f"chunk_size {cfg.chunk_size} is far longer than the sequence (S={workload.S}; at most {longest})"
    t_eff = effective_t_inner(cfg, workload)
    if t_eff > MAX_T_INNER:
        return f"t_inner {t_eff} unrolls more than {MAX_T_INNER} units (the compile would take minutes)"
    need = call_bytes(cfg, workload)
    if need > call_bytes(DEFAULT_CONFIG, workload):
        limit = memory_limit_bytes(device, settings)
        if need > limit:
            return f"needs about {need / 2**30:.2f} GiB, over the memory limit of {limit / 2**30:.2f} GiB"
    return None


def _decide(state: _State, workload: Workload, device: torch.device) -> ConfigChoice:
    if state.profile is None:
        return ConfigChoice(DEFAULT_CONFIG, state.source_when_unusable, workload, None, state.path,
                            state.unusable or "no profile")
    if device.type != state.profile.device_type:
        return ConfigChoice(DEFAULT_CONFIG, "default", workload, None, state.path,
                            f"profile was tuned for {state.profile.device_type}, call is on {device.type}")
    entry, how = choose(state.profile, workload)
    if entry is None:
        return ConfigChoice(
            DEFAULT_CONFIG, "default", workload, None, state.path,
            f"no entry with DHQK={workload.DHQK}, DHV={workload.DHV}, {workload.dtype}, {workload.mode} "
            f"whose config is valid for NH={workload.NH}",
        )
    problem = entry_problem(entry.kernel_config, workload, device, state.settings)
    if problem is not None:
        message = (f"profile entry {entry.workload} ({entry.kernel_config.short(workload.mode)}) cannot run "
                   f"call {workload}: {problem}; using the default config")
        _warn_once(("entry", f"{state.path}|{entry.workload}"), message)
        return ConfigChoice(DEFAULT_CONFIG, "rejected-entry", workload, entry, state.path, message)
    if how == "exact":
        reason = "exact workload match"
    else:
        reason = f"nearest bucket: entry {entry.workload} (same head dims, dtype and mode)"
    return ConfigChoice(entry.kernel_config, how, workload, entry, state.path, reason)


def choice_for(q: torch.Tensor, v: torch.Tensor, mode: str = "prefill") -> ConfigChoice:
    """The memoised :class:`ConfigChoice` for a call with these inputs."""
    state = _state()
    shape = q.shape
    key = (shape, v.shape[-1], q.dtype, q.device, mode)
    hit = state.memo.get(key)
    if hit is not None:
        return hit
    if mode == "decode":
        B, NH, DHQK = shape[0], shape[1], shape[-1]
        S = 1
    else:
        B, NH, S, DHQK = shape
    workload = Workload(B, NH, S, DHQK, int(v.shape[-1]), dtype=dtype_name(q.dtype), mode=mode)  # type: ignore[arg-type]
    choice = _decide(state, workload, q.device)
    with state.lock:
        if len(state.memo) >= _MEMO_LIMIT:
            state.memo.clear()
        state.memo[key] = choice
    return choice


def config_for(q: torch.Tensor, v: torch.Tensor, mode: str = "prefill") -> KernelConfig:
    """The config for a call with these inputs: the profile's entry by the module's rule, else the default."""
    state = _STATE
    if state is not None and state.settings is get_settings():  # fast path: one dict lookup
        hit = state.memo.get((q.shape, v.shape[-1], q.dtype, q.device, mode))
        if hit is not None:
            return hit.config
    return choice_for(q, v, mode).config


def explain_config(
    q: torch.Tensor, k: torch.Tensor | None = None, v: torch.Tensor | None = None, *args: object,
    mode: str | None = None, **kwargs: object,
) -> ConfigChoice:
    """Which config ``xk.mlstm`` (4-d q) or ``xk.mlstm_step`` (3-d q) would use for these inputs, and why.

    Takes the same positional arguments as those calls (only q and v are read); print the result
    for a human-readable explanation.
    """
    if v is None:
        raise ValueError("explain_config needs v (for DHV): call it like xk.mlstm(q, k, v, ...)")
    if mode is None:
        mode = "decode" if q.dim() == 3 else "prefill"
    if mode not in ("prefill", "decode"):
        raise ValueError(f"mode must be 'prefill' or 'decode', got {mode!r}")
    expected = 3 if mode == "decode" else 4
    if q.dim() != expected or v.dim() != expected:
        raise ValueError(f"{mode} calls take {expected}-d q and v, got q {tuple(q.shape)}, v {tuple(v.shape)}")
    return choice_for(q, v, mode)
