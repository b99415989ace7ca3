"""Which ``ModelRunConfig`` a model runner uses when none is given: this machine's tuned model entry.

``xk.compile_model(model, config=None)`` calls :func:`model_config_for`. Lookup rule for a model with
key K (``xk.model_key(model)``), batch size B, prompt length S and weight dtype D on a device of the
profile's type:

1. **exact** — the model entry whose workload is ``model:K,B,S,D``;
2. **nearest** — else, among model entries with the same K, B and D, the one nearest in prompt length
   (smallest |log2 S/S_e|, ties to the shorter prompt);
3. **default** — else ``ModelRunConfig()``, with ONE :class:`~xlstm_kernels.profiles.runtime.ProfileWarning`
   per (model key, B, dtype) saying how to tune it. An entry whose ``mlstm_kernels`` prefill kernel
   cannot run here (package or kernel missing) also gives ``ModelRunConfig()``, with one warning.

The profile is the one the kernel lookup loads (``xlstm_kernels.profiles.runtime``): a missing, foreign, stale
or damaged profile gives its one warning there and defaults here, never an exception. Lookups are
memoised per (K, B, S, D, device type) until ``reload_profile()`` / ``reset_settings()``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import runtime
from ..kernels.config import dtype_name
from ..models.workload import ModelWorkload, run_config_short
from .profile import ModelProfileEntry, Profile

if TYPE_CHECKING:
    from ..runner import ModelRunConfig


@dataclass(frozen=True)
class ModelChoice:
    """Which run config a model uses and why (what :func:`explain_model_config` returns)."""

    config: ModelRunConfig
    source: str  # "exact" | "nearest" | "default" | "profile-disabled" | "no-profile" | "rejected-profile"
    #              | "unusable-entry" (its mlstm_kernels prefill kernel cannot run here)
    workload: ModelWorkload
    entry: ModelProfileEntry | None
    profile_path: Path | None
    reason: str

    def __str__(self) -> str:
        lines = [f"workload   {self.workload}", f"config     {run_config_short(self.config)}",
                 f"source     {self.source}", f"why        {self.reason}"]
        if self.entry is not None:
            e = self.entry
            lines.append(f"entry      {e.workload}: TTFT {e.ttft_s * 1e3:.2f} ms, decode {e.decode_tokens_per_s:,.1f} "
                         f"tok/s, {e.speedup_vs_default:.2f}x default, logits err {e.logits_error:.1e}")
        if self.profile_path is not None:
            lines.append(f"profile    {self.profile_path}")
        return "\n".join(lines)


def choose_model(profile: Profile | None, workload: ModelWorkload) -> tuple[ModelProfileEntry | None, str]:
    """The model entry for ``workload`` by the module's rule: (entry or None, "exact"|"nearest"|"default")."""
    if profile is None:
        return None, "default"
    best: tuple[tuple[float, int], ModelProfileEntry] | None = None
    for entry in profile.model_entries:
        w = entry.parsed_workload
        if (w.model_key, w.B, w.dtype) != (workload.model_key, workload.B, workload.dtype):
            continue
        if w == workload:
            return entry, "exact"
        rank = (abs(math.log2(workload.S / w.S)), w.S)
        if best is None or rank < best[0]:
            best = (rank, entry)
    return (None, "default") if best is None else (best[1], "nearest")


_MEMO: dict[tuple[Any, ...], ModelChoice] = {}
_MEMO_LOCK = threading.Lock()
_MEMO_STATE: list[Any] = [None]  # the runtime state the memo belongs to


def _default(workload: ModelWorkload, source: str, path: Path | None, reason: str) -> ModelChoice:
    from ..runner import ModelRunConfig

    return ModelChoice(ModelRunConfig(), source, workload, None, path, reason)


def _unusable(entry: ModelProfileEntry) -> str | None:
    """Why the entry's run config cannot run on this machine (its mlstm_kernels prefill kernel), or None."""
    from ..runner.external import unavailable_reason

    external = entry.run_config.external_prefill
    return None if external is None else unavailable_reason(external)


def choice_for_workload(workload: ModelWorkload, device: torch.device | str) -> ModelChoice:
    """The memoised :class:`ModelChoice` for a model workload on ``device`` (warns once on a fallback)."""
    state = runtime._state()
    dev = torch.device(device)
    key = (str(workload), dev.type)
    with _MEMO_LOCK:
        if _MEMO_STATE[0] is not state:  # reload_profile() / reset_settings() happened
            _MEMO.clear()
            _MEMO_STATE[0] = state
        hit = _MEMO.get(key)
    if hit is not None:
        return hit
    if state.profile is None:
        choice = _default(workload, state.source_when_unusable, state.path, state.unusable or "no profile")
    elif dev.type != state.profile.device_type:
        choice = _default(workload, "default", state.path,
                          f"profile was tuned for {state.profile.device_type}, the model is on {dev.type}")
    else:
        entry, how = choose_model(state.profile, workload)
        if entry is None:
            reason = (f"no model entry for model {workload.model_key} at B={workload.B}, {workload.dtype} "
                      f"in {state.path}; using ModelRunConfig() (run `xlstm-autotune tune --model ...`)")
            runtime._warn_once(("model", f"{workload.model_key},{workload.B},{workload.dtype}"), reason)
            choice = _default(workload, "default", state.path, reason)
        elif (why_not := _unusable(entry)) is not None:
            reason = (f"model entry {entry.workload} in {state.path} cannot run here: {why_not}; using "
                      "ModelRunConfig() (tune the model again on this machine)")
            runtime._warn_once(("model-entry", entry.workload), reason)
            choice = _default(workload, "unusable-entry", state.path, reason)
        else:
            why = "exact workload match" if how == "exact" else f"nearest prompt bucket: entry {entry.workload}"
            choice = ModelChoice(entry.run_config, how, workload, entry, state.path, why)
    with _MEMO_LOCK:
        _MEMO[key] = choice
    return choice


def model_workload_of(model: torch.nn.Module, batch_size: int, prompt_len: int) -> ModelWorkload:
    """The model workload of ``model`` served at ``batch_size`` with prompts of ``prompt_len`` tokens."""
    from ..runner import model_key

    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is None:
        raise ValueError(f"{type(model).__name__} has no floating-point parameters: not an xLSTM model")
    return ModelWorkload(model_key(model), batch_size, prompt_len, dtype_name(param.dtype))


def model_config_for(model: torch.nn.Module, *, batch_size: int, prompt_len: int) -> ModelRunConfig:
    """The run config for ``model`` by the module's rule (what ``compile_model(config=None)`` uses)."""
    return explain_model_config(model, batch_size=batch_size, prompt_len=prompt_len).config


def explain_model_config(model: torch.nn.Module, *, batch_size: int = 1, prompt_len: int = 2048) -> ModelChoice:
    """Which run config ``xk.compile_model(model, config=None)`` would use, and why (print it)."""
    workload = model_workload_of(model, batch_size, prompt_len)
    device = next(model.parameters()).device
    return choice_for_workload(workload, device)
