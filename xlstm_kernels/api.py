"""The public mLSTM entry points, signature-compatible with ``mlstm_kernels``' kernels."""

from __future__ import annotations

import functools
from typing import Any

import torch

from .kernels import fastpath
from .kernels.compiler import CACHE, CompileKey, use_cpp_wrapper
from .kernels.config import KernelConfig, dtype_name
from .kernels.drivers import check_device, run_sequence
from .kernels.shrink import run_with_shrink
from .kernels.validation import check_sequence_inputs, check_step_inputs
from .profiles.runtime import config_for
from .threads import compiled_threads, pinned_threads, use_threads

States = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _coerce_config(config: KernelConfig | dict[str, Any]) -> KernelConfig:
    if isinstance(config, KernelConfig):
        return config
    if isinstance(config, dict):
        return KernelConfig.from_dict(config)
    raise ValueError(f"config must be a KernelConfig, a dict or None, got {type(config).__name__}")


def _check_eps(eps: float) -> None:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative float, got {eps!r}")


def mlstm(
    q: torch.Tensor,  # (B, NH, S, DHQK)
    k: torch.Tensor,  # (B, NH, S, DHQK)
    v: torch.Tensor,  # (B, NH, S, DHV)
    i: torch.Tensor,  # (B, NH, S) input gate pre-activations
    f: torch.Tensor,  # (B, NH, S) forget gate pre-activations
    c_initial: torch.Tensor | None = None,  # (B, NH, DHQK, DHV)
    n_initial: torch.Tensor | None = None,  # (B, NH, DHQK)
    m_initial: torch.Tensor | None = None,  # (B, NH, 1)
    return_last_states: bool = True,
    eps: float = 1e-6,
    config: KernelConfig | dict[str, Any] | None = None,
    **kwargs: Any,
) -> torch.Tensor | tuple[torch.Tensor, States]:
    """The stabilized mLSTM over a sequence, as compiled pseudo-kernels.

    Returns h (B, NH, S, DHV) in q's dtype and, with ``return_last_states``, the float32 terminal
    (C, n, m). ``config=None`` takes this machine's tuned profile entry (or the default config).
    Extra keyword arguments of ``mlstm_kernels`` kernels (``chunk_size``, ``autocast_kernel_dtype``,
    ...) are accepted and ignored so that this can stand in for them.
    """
    args = (q, k, v, i, f, c_initial, n_initial, m_initial)
    fast = fastpath.run(args, eps, config)  # a repeat of a call one compiled graph served whole
    if fast is not None:
        return fast if return_last_states else fast[0]
    B, NH, S, DHQK, DHV = check_sequence_inputs(*args)
    _check_eps(eps)
    cfg = config_for(q, v, mode="prefill") if config is None else _coerce_config(config)
    cfg.bands(NH)  # validates heads_per_band against NH before anything compiles
    check_device(cfg, q.device)
    # under the config's thread count: the run (compiles for it) and the memo (keys for it);
    # on device OOM, opt-in chunk shrink (non-canonical, warns) may retry
    with torch.no_grad(), use_threads(pinned_threads(cfg.threads, q.device)):
        run = run_with_shrink(lambda c: run_sequence(*args, c, eps), cfg)
        if run.canonical:
            fastpath.remember(args, eps, config, cfg)
    h, states = run.value
    return (h, states) if return_last_states else h


def step_key(q: torch.Tensor, v: torch.Tensor, eps: float, compile_mode: str = "default") -> CompileKey:
    """The compile key of the decode step for these shapes."""
    return _step_key(tuple(q.shape), v.shape[-1], q.dtype, q.device, float(eps), compile_mode,
                     use_cpp_wrapper(q.device), compiled_threads(q.device))


@functools.lru_cache(maxsize=1024)
def _step_key(shape: tuple[int, ...], DHV: int, dtype: torch.dtype, device: torch.device, eps: float,
              compile_mode: str, cpp_wrapper: bool, threads: int) -> CompileKey:
    B, NH, DHQK = shape
    return CompileKey(
        family="step", B=B, heads=NH, DHQK=DHQK, DHV=DHV, dtype=dtype_name(dtype),
        device=str(device), t_inner=1, chunk_size=1, compile_mode=compile_mode, eps=eps,
        cpp_wrapper=cpp_wrapper, threads=threads,
    )


def mlstm_step(
    q: torch.Tensor,  # (B, NH, DHQK)
    k: torch.Tensor,  # (B, NH, DHQK)
    v: torch.Tensor,  # (B, NH, DHV)
    i: torch.Tensor,  # (B, NH, 1)
    f: torch.Tensor,  # (B, NH, 1)
    c: torch.Tensor,  # (B, NH, DHQK, DHV)
    n: torch.Tensor,  # (B, NH, DHQK)
    m: torch.Tensor,  # (B, NH, 1)
    eps: float = 1e-6,
    config: KernelConfig | dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, States]:
    """One decode step: h (B, NH, DHV) in q's dtype and the new float32 (C, n, m).

    The new C is a (B, NH, DHQK, DHV) view of DHV-major storage (``xk.step_layout``): fed back, it is
    the step's fastest input (C in any other layout works too; the first such call compiles a graph
    for it). Only ``config.compile_mode`` matters for a step; ``config=None`` takes the profile's decode entry.
    """
    args = (q, k, v, i, f, c, n, m)
    fast = fastpath.run_step(args, eps, config)  # a repeat of a call whose graph is called directly
    if fast is not None:
        return fast
    check_step_inputs(*args)
    _check_eps(eps)
    cfg = config_for(q, v, mode="decode") if config is None else _coerce_config(config)
    check_device(cfg, q.device)
    with use_threads(pinned_threads(cfg.threads, q.device)):  # the step compiles and runs under it
        return _step(args, eps, config, cfg)


def _step(args: tuple[torch.Tensor, ...], eps: float, config: Any, cfg: KernelConfig) -> tuple[torch.Tensor, States]:
    q, k, v, i, f, c, n, m = args
    key = step_key(q, v, eps, cfg.compile_mode)
    kernel = CACHE.get(key)
    c, n, m = (x if x.dtype == torch.float32 else x.float() for x in (c, n, m))
    with torch.no_grad():
        if cfg.compile_mode == "graph-capture":
            from .kernels.capture import captured

            call_key = (key, k.dtype, v.dtype, i.dtype, f.dtype)
            h, c, n, m = captured(call_key, kernel, (q, k, v, i, f, c, n, m))
        else:
            h, c, n, m = kernel(q, k, v, i, f, c, n, m)
            if cfg.compile_mode == "reduce-overhead":
                h, c, n, m = h.clone(), c.clone(), n.clone(), m.clone()
    fastpath.remember_step(args, eps, config, cfg, kernel)
    return h, (c, n, m)
