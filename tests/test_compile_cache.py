"""The compile cache: one code object per key (no recompile limit), eager fallback reported."""

from __future__ import annotations

import warnings

import torch
import torch._dynamo.config

import xlstm_kernels as xk
from xlstm_kernels.compiler import CompileCache, CompileKey


def _key(B: int) -> CompileKey:
    return CompileKey(family="step", B=B, heads=1, DHQK=2, DHV=2, dtype="float32", device="cpu",
                      t_inner=1, chunk_size=1)


def _step_args(B: int):
    z = torch.zeros
    return (torch.randn(B, 1, 2), torch.randn(B, 1, 2), torch.randn(B, 1, 2), torch.randn(B, 1, 1),
            torch.randn(B, 1, 1), z(B, 1, 2, 2), z(B, 1, 2), z(B, 1, 1))


def test_many_keys_do_not_hit_the_recompile_limit():
    """More keys than Dynamo's recompile limit, each compiled once, none falls back to eager."""
    cache = CompileCache()
    n_keys = torch._dynamo.config.recompile_limit + 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", xk.EagerFallbackWarning)
        for B in range(1, n_keys + 1):
            kernel = cache.get(_key(B))
            kernel(*_step_args(B))
            assert kernel.graphs == 1 and not kernel.eager_fallback
            assert kernel.compile_s is not None and kernel.compile_s > 0
    assert len(cache) == n_keys
    assert cache.get(_key(1)) is cache.get(_key(1))


def test_eager_fallback_is_detected_and_warned():
    cache = CompileCache()
    kernel = cache.get(_key(99))
    with torch._dynamo.config.patch(disable=True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kernel(*_step_args(99))
    assert kernel.eager_fallback and kernel.graphs == 0
    assert any(issubclass(w.category, xk.EagerFallbackWarning) for w in caught)
