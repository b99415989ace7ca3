"""Use the tuned kernels inside NX-AI's ``xlstm`` package (``xlstm.xlstm_large.xLSTMLarge``).

Two ways, both inference-only for our kernels (anything that needs gradients runs the model's native
PyTorch kernels instead, so training is never silently wrong):

1. **One call on a built model** (recommended)::

       from xlstm_kernels.models.xlstm_adapter import use_xlstm_kernels
       model = xLSTMLarge(xLSTMLargeConfig(..., mode="inference",
                          chunkwise_kernel="chunkwise--native_autograd",
                          sequence_kernel="native_sequence__native", step_kernel="native"))
       use_xlstm_kernels(model)          # every mLSTM layer now runs xk.mlstm / xk.mlstm_step
       restore_native_kernels(model)     # undo

   Prefill calls ``xk.mlstm`` on the unpadded sequence (exact no-op padding happens inside), a
   single-token call with a state calls ``xk.mlstm_step``; configs come from this machine's profile
   unless given.

2. **By name** in ``mlstm_kernels``' registries, after :func:`register_kernels`:
   ``chunkwise_kernel="chunkwise--xlstm_autotune"``, ``step_kernel="xlstm_autotune"``. The model's
   own wrapper then pads prefill to a multiple of its ``chunk_size`` (gates ±25, as for its native
   kernels) before calling us, which costs work on short prompts; prefer (1).

Requires the optional ``xlstm`` / ``mlstm_kernels`` packages (imported lazily, only here).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import api
from ..kernels.compiler import CACHE
from ..kernels.config import KernelConfig
from ..profiles import runtime
from ..threads import compiled_threads, pinned_threads, use_threads

KERNEL_NAME = "xlstm_autotune"
CHUNKWISE_KERNEL_NAME = f"chunkwise--{KERNEL_NAME}"
STEP_KERNEL_NAME = KERNEL_NAME

States = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class XLSTMAdapterError(RuntimeError):
    """The model has no mLSTM backends to swap, or the ``xlstm`` packages are missing."""


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _import_backend_class() -> type:
    try:
        from mlstm_kernels.torch.backend_module import mLSTMBackend
    except ImportError as exc:
        raise XLSTMAdapterError(
            "the xLSTM adapter needs the 'mlstm_kernels' and 'xlstm' packages (pip install 'xlstm==2.0.6')"
        ) from exc
    return mLSTMBackend


class XLSTMKernelsBackend(nn.Module):
    """Drop-in for ``mlstm_kernels``' ``mLSTMBackend`` that runs xlstm_kernels (gradients: the native one)."""

    def __init__(self, native: nn.Module, config: KernelConfig | None = None,
                 step_config: KernelConfig | None = None) -> None:
        super().__init__()
        self.native = native  # the replaced backend: used for autograd, and by restore_native_kernels
        self.config = native.config  # the model reads config.mode etc. from its backend
        self.kernel_config = config
        self.step_config = step_config
        self._steps: dict[tuple, Any] = {}  # decode fast path: shape key -> compiled step kernel

    def _step(self, q, k, v, i, f, c, n, m):  # q, k (B, NH, DHQK); v (B, NH, DHV); i, f (B, NH, 1)
        """One decode step. The first call per shape goes through ``xk.mlstm_step`` (validation,
        compile); later calls of that shape call the compiled kernel directly, skipping the
        per-call validation and compile-key construction (its guards still check every input)."""
        cfg = self.step_config or runtime.config_for(q, v, "decode")
        with use_threads(pinned_threads(cfg.threads, q.device)):  # the kernel is compiled for the count
            return self._step_under(cfg, q, k, v, i, f, c, n, m)

    def _step_under(self, cfg, q, k, v, i, f, c, n, m):
        """``_step`` under the step config's thread count (the shape key includes the count it runs under)."""
        key = (q.shape, v.shape, q.dtype, q.device, cfg.compile_mode, c.dtype, compiled_threads(q.device))
        kernel = self._steps.get(key)
        if kernel is None or cfg.compile_mode != "default":  # CUDA-graph modes keep api's handling
            h, states = api.mlstm_step(q, k, v, i, f, c, n, m, eps=self.config.eps, config=cfg)
            if cfg.compile_mode == "default":
                self._steps[key] = CACHE.get(api.step_key(q, v, self.config.eps, cfg.compile_mode))
            return h, states
        if c.dtype != torch.float32:
            c, n, m = c.float(), n.float(), m.float()
        h, c, n, m = kernel(q, k, v, i, f, c, n, m)
        return h, (c, n, m)

    def forward(
        self,
        q: torch.Tensor,  # (B, NH, S, DHQK)
        k: torch.Tensor,  # (B, NH, S, DHQK)
        v: torch.Tensor,  # (B, NH, S, DHV)
        i: torch.Tensor,  # (B, NH, S)
        f: torch.Tensor,  # (B, NH, S)
        c_initial: torch.Tensor | None = None,  # (B, NH, DHQK, DHV)
        n_initial: torch.Tensor | None = None,  # (B, NH, DHQK)
        m_initial: torch.Tensor | None = None,  # (B, NH, 1)
        return_last_states: bool | None = None,
        mode: str | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, States]:
        """Same contract as ``mLSTMBackend.forward``: inference mode always returns (h, (c, n, m))."""
        mode = mode or self.config.mode
        if _needs_grad(q, k, v, i, f, c_initial, n_initial, m_initial):
            return self.native(q, k, v, i, f, c_initial, n_initial, m_initial,
                               return_last_states=return_last_states, mode=mode)
        if "inference" in mode:
            want_states = True
        elif "train" in mode:
            want_states = self.config.return_last_states if return_last_states is None else return_last_states
        else:
            raise ValueError(f"unknown mLSTM backend mode {mode!r}; expected 'train', 'train_with_padding' "
                             "or 'inference'")
        eps = self.config.eps
        if q.shape[2] == 1 and c_initial is not None:
            h, states = self._step(q[:, :, 0], k[:, :, 0], v[:, :, 0], i, f, c_initial, n_initial, m_initial)
            h = h[:, :, None, :]
        else:
            h, states = api.mlstm(q, k, v, i, f, c_initial, n_initial, m_initial, return_last_states=True,
                                  eps=eps, config=self.kernel_config)
        return (h, states) if want_states else h

    def extra_repr(self) -> str:
        cfg = "profile" if self.kernel_config is None else self.kernel_config.short()
        return f"xlstm_kernels (config: {cfg}; native: {self.native.config.chunkwise_kernel})"


def use_xlstm_kernels(model: nn.Module, config: KernelConfig | None = None,
                      step_config: KernelConfig | None = None) -> int:
    """Swap every mLSTM backend of a built ``xLSTMLarge`` for xlstm_kernels, in place; returns how many.

    ``config`` / ``step_config`` fix the prefill / decode configs; ``None`` takes this machine's profile.
    """
    backend_cls = _import_backend_class()
    swapped = 0
    for module in model.modules():
        backend = getattr(module, "mlstm_backend", None)
        if isinstance(backend, XLSTMKernelsBackend):
            backend.kernel_config, backend.step_config = config, step_config
            swapped += 1
        elif isinstance(backend, backend_cls):
            module.mlstm_backend = XLSTMKernelsBackend(backend, config, step_config)
            swapped += 1
    if swapped == 0:
        raise XLSTMAdapterError(f"{type(model).__name__} has no mLSTM backend (mlstm_backend) to swap")
    return swapped


def restore_native_kernels(model: nn.Module) -> int:
    """Undo :func:`use_xlstm_kernels`: put the model's own backends back; returns how many."""
    restored = 0
    for module in model.modules():
        backend = getattr(module, "mlstm_backend", None)
        if isinstance(backend, XLSTMKernelsBackend):
            module.mlstm_backend = backend.native
            restored += 1
    return restored


def _chunkwise_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor,
    c_initial: torch.Tensor | None = None, n_initial: torch.Tensor | None = None,
    m_initial: torch.Tensor | None = None, return_last_states: bool = False, eps: float = 1e-6,
    **kwargs: Any,
) -> torch.Tensor | tuple[torch.Tensor, States]:
    """``mlstm_kernels`` chunkwise-kernel signature over :func:`xlstm_kernels.mlstm` (autograd: native)."""
    if _needs_grad(q, k, v, i, f, c_initial, n_initial, m_initial):
        from mlstm_kernels.torch.chunkwise import mlstm_chunkwise__native_autograd

        return mlstm_chunkwise__native_autograd(q=q, k=k, v=v, i=i, f=f, c_initial=c_initial,
                                                n_initial=n_initial, m_initial=m_initial,
                                                return_last_states=return_last_states, eps=eps, **kwargs)
    return api.mlstm(q, k, v, i, f, c_initial, n_initial, m_initial, return_last_states=return_last_states,
                     eps=eps)


def _step_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor,
    c: torch.Tensor, n: torch.Tensor, m: torch.Tensor, eps: float = 1e-6, **kwargs: Any,
) -> tuple[torch.Tensor, States]:
    """``mlstm_kernels`` step-kernel signature over :func:`xlstm_kernels.mlstm_step`."""
    return api.mlstm_step(q, k, v, i, f, c, n, m, eps=eps)


def register_kernels() -> tuple[str, str]:
    """Register ours in ``mlstm_kernels``' registries; returns (chunkwise name, step name). Idempotent."""
    _import_backend_class()
    from mlstm_kernels.torch import chunkwise, recurrent

    chunkwise.registry[KERNEL_NAME] = _chunkwise_kernel
    recurrent.registry_step[KERNEL_NAME] = _step_kernel
    return CHUNKWISE_KERNEL_NAME, STEP_KERNEL_NAME
