"""The compile cache: one code object per key (no recompile limit), eager fallback reported, direct calls."""

from __future__ import annotations

import warnings

import torch
import torch._dynamo.config

import xlstm_kernels as xk
from conftest import CONFIGS, REF_RTOL, SHAPE, make_inputs, rel_err
from xlstm_kernels.kernels.compiler import CompileCache, CompileKey


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


def test_sequence_lengths_share_one_compiled_block(inputs):
    """Calls of one config at more sequence lengths than Dynamo's recompile limit, each several blocks
    long and carrying the previous call's states, reuse the block compiled once: no new graph, and the
    answers stay the reference's. (Fed views of the whole call, the block recompiled for every length
    and then failed with FailOnRecompileLimitHit.)"""
    from torch._dynamo.utils import counters

    cfg = CONFIGS["rec_t4"]  # 2 bands of 2 heads, blocks of 32 steps
    h, st = xk.mlstm(*inputs, config=cfg)  # the suite's compile of this config
    unique = counters["stats"]["unique_graphs"]
    for n in range(torch._dynamo.config.recompile_limit + 2):
        x = make_inputs(**{**SHAPE, "S": 40 + 5 * n}, seed=n)
        h, st_next = xk.mlstm(*x, *st, config=cfg)
        if n in (0, 9):
            h_ref, _ = xk.mlstm_reference(*x, *st)
            assert rel_err(h, h_ref) < REF_RTOL[torch.float32]
        st = st_next
    assert counters["stats"]["unique_graphs"] == unique, "a new sequence length compiled the block again"


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
    from xlstm_kernels.kernels.drivers import call_plan, kernel_key, plan
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


def _outputs_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _outputs_close(a, b) -> bool:
    return all(torch.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(a, b, strict=True))


def test_later_calls_skip_dynamo_while_the_inputs_match():
    """After the first call, matching inputs go straight to the compiled graph with the same
    results; other strides, or grad mode on, go through torch.compile (which recompiles as needed)."""
    kernel = CompileCache().get(_key(2))
    args = _step_args(2)
    with torch.no_grad():
        first = kernel(*args)
    assert kernel.direct
    through_dynamo, wrapper = [], kernel.fn
    kernel.fn = lambda *a: through_dynamo.append(1) or wrapper(*a)
    fresh = _step_args(2)  # new tensors, same dtypes, shapes and strides
    with torch.no_grad():
        assert _outputs_equal(kernel(*args), first)
        assert _outputs_close(kernel(*fresh), kernel.eager_fn(*fresh))
    assert through_dynamo == []
    strided = (torch.randn(2, 1, 4)[..., ::2],) + fresh[1:]  # same shape, other strides
    with torch.no_grad():
        out = kernel(*strided)
        assert through_dynamo == [1]  # torch.compile recompiled for these strides
        again = (torch.randn(2, 1, 4)[..., ::2],) + fresh[1:]
        assert _outputs_close(kernel(*again), kernel.eager_fn(*again))
    assert through_dynamo == [1]  # ... and the second signature goes direct too
    assert _outputs_close(out, kernel.eager_fn(*strided))
    kernel(*args)  # grad mode on: torch.compile's guards decide
    assert through_dynamo == [1, 1] and kernel.calls == 6


def test_direct_calls_follow_the_setting(monkeypatch):
    from conftest import settings_env

    with settings_env(monkeypatch, {"DIRECT_CALLS": "false"}):
        kernel = CompileCache().get(_key(3))
        with torch.no_grad():
            kernel(*_step_args(3))
            kernel(*_step_args(3))
    assert not kernel.direct and kernel.calls == 2
