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


def test_cpu_keys_take_the_cpp_wrapper_per_setting(monkeypatch):
    """CPU kernels compile with Inductor's C++ wrapper unless the setting says no; other devices never."""
    from xlstm_kernels.drivers import call_plan, kernel_key, plan
    from xlstm_kernels.settings import reset_settings

    cfg = xk.KernelConfig("chunkwise", chunk_size=4, t_inner=2)
    p = plan(cfg, 2, 8)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert kernel_key(cfg, p, 1, 4, 4, torch.float32, cpu, 1e-6).cpp_wrapper
    assert not kernel_key(cfg, p, 1, 4, 4, torch.float32, cuda, 1e-6).cpp_wrapper
    monkeypatch.setenv("XLSTM_AUTOTUNE_CPP_WRAPPER", "false")
    reset_settings()
    try:
        assert not kernel_key(cfg, p, 1, 4, 4, torch.float32, cpu, 1e-6).cpp_wrapper
        q = torch.randn(1, 2, 8, 4)
        from xlstm_kernels.api import step_key

        assert not step_key(q[:, :, 0], q[:, :, 0], 1e-6).cpp_wrapper
        _, key = call_plan(cfg, 1, 2, 8, 4, 4, torch.float32, (torch.float32,) * 2, cpu, 1e-6, False)
        assert not key.cpp_wrapper
    finally:
        monkeypatch.delenv("XLSTM_AUTOTUNE_CPP_WRAPPER")
        reset_settings()


def test_keep_freed_memory_applies_on_linux_glibc():
    import platform
    import sys

    from xlstm_kernels.device import keep_freed_memory

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected
    assert keep_freed_memory() is expected  # once per process; later calls report the same
