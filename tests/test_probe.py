"""Compile-probe: generated-code scan, error classification, T_inner ratchet under an emulated buffer
limit, graph-break detection, fault bounds, fusion report, CLI, and the chunk-shrink escape hatch.

Compiles are real and few: one tiny recurrent shape (B=1, NH=2, S=16, DHQK=DHV=8) whose unrolled
kernel's buffer count grows with T_inner, so a buffer limit forces the ratchet on the CPU.
"""

from __future__ import annotations

import json
import os
import signal
import time
import warnings
from pathlib import Path

import pytest
import torch

import xlstm_kernels as xk
from xlstm_kernels.probe.codegen_scan import scan_output_code, scan_source
from xlstm_kernels.kernels.compiler import CACHE, CompileKey
from xlstm_kernels.probe import (
    FAILURE_KINDS,
    FUSION_KNOB,
    BufferLimitError,
    GraphBreakError,
    ProbeCache,
    classify_error,
    compile_and_scan,
    fuse_report,
    graph_breaks,
    probe,
    t_inner_ladder,
)
from xlstm_kernels.probe.runners import ChildRunner as _ChildRunner
from xlstm_kernels.kernels.shrink import NonCanonicalWarning, run_with_shrink, shrunk_config, tuning

from conftest import CONFIGS, make_inputs, rel_err, settings_env

DATA = Path(__file__).parent / "data"
WL = xk.Workload(B=1, NH=2, S=16, DHQK=8, DHV=8)
REQ16 = xk.KernelConfig("recurrent", chunk_size=16, t_inner=16)
LIMIT = 40  # over T_inner=16's fused kernel on the CPU, so the ratchet must step down


# ----------------------------------------------------------------------------- generated-code scan

TRITON_SRC = '''
triton_poi_fused_add_0 = async_compile.triton('triton_poi_fused_add_0', """
import triton
@triton.jit
def triton_poi_fused_add_0(in_ptr0, in_ptr1, in_out_ptr0,
                           out_ptr0, ks0, xnumel, r0_numel, XBLOCK : tl.constexpr, R0_BLOCK : tl.constexpr):
    xnumel = 128
    xoffset = tl.program_id(0) * XBLOCK
""", device_str='cuda')
triton_red_fused_sum_1 = async_compile.triton('triton_red_fused_sum_1', """
@triton.jit
def triton_red_fused_sum_1(in_ptr0, out_ptr0, xnumel, XBLOCK : tl.constexpr):
    pass
""")
'''

METAL_INDUCTOR_SRC = """
generated_kernel = async_compile.metal('generated_kernel', '''
    #include <c10/metal/utils.h>
    [[max_total_threads_per_threadgroup(64)]]
    kernel void generated_kernel(
        device float* out_ptr0,
        device float* out_ptr1,
        constant float* in_ptr0,
        constant half* in_ptr1,
        constant long& ks0,
        uint xindex [[thread_position_in_grid]],
        uint group_pos [[thread_position_in_threadgroup]]
    ) {
        out_ptr0[xindex] = in_ptr0[xindex];
    }
''')
"""

METAL_EXPLICIT_SRC = """
kernel void fused_step(device float* in_ptr0 [[buffer(0)]], device float* in_ptr1 [[buffer(1)]],
                       device float* out_ptr0 [[buffer(2)]], constant int& n [[buffer(3)]],
                       uint tid [[thread_position_in_grid]]) { }
"""


def test_scan_counts_triton_pointer_args_not_numel_or_constexpr():
    kernels = scan_source(TRITON_SRC)
    assert [(k.name, k.lang, k.buffers, k.args) for k in kernels] == [
        ("triton_poi_fused_add_0", "triton", 4, 9),
        ("triton_red_fused_sum_1", "triton", 2, 4),
    ]
    assert kernels[0].buffer_names == ("in_ptr0", "in_ptr1", "in_out_ptr0", "out_ptr0")


def test_scan_counts_metal_buffer_slots():
    """Inductor's MPS signatures (implicit slots: every device/constant parameter, scalars ``constant long&``
    included) and explicit [[buffer(N)]]. Composed text; tests/test_metal.py runs the scanner on real
    generated Metal output code."""
    (k,) = scan_source(METAL_INDUCTOR_SRC)
    assert (k.name, k.lang, k.buffers, k.args) == ("generated_kernel", "metal", 5, 7)
    (e,) = scan_source(METAL_EXPLICIT_SRC)
    assert (e.name, e.buffers, e.args) == ("fused_step", 4, 5)
    scan = scan_output_code([METAL_INDUCTOR_SRC, METAL_EXPLICIT_SRC])
    assert (scan.graphs, scan.kernel_count, scan.max_buffers) == (2, 2, 5)
    assert [x.name for x in scan.over_limit(4)] == ["generated_kernel"]
    assert scan.over_limit(None) == []


# ----------------------------------------------------------------------------- error classification

CASES = json.loads((DATA / "probe_error_texts.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[f"{c['kind']}-{c['provenance']}-{i}" for i, c in enumerate(CASES)])
def test_classify_error_texts(case):
    """Quoted (with a URL), composed or wording texts: the data file says which is which."""
    assert case["kind"] in FAILURE_KINDS
    assert case["provenance"] in ("quoted", "composed", "wording") and (case["provenance"] != "quoted" or case["url"])
    assert classify_error(case["text"]) == case["kind"]


def test_classify_exception_objects():
    from torch._inductor.exc import InductorError

    metal = InductorError(SyntaxError("failed to compile\nerror: number of constant buffers exceeds "
                                      "maximum supported (31)"), "")
    assert classify_error(metal) == "buffer_limit"
    assert classify_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")) == "out_of_memory"
    assert classify_error(RuntimeError("something else entirely")) == "compiler_error"
    assert classify_error(GraphBreakError("x")) == "graph_break"


# ----------------------------------------------------------------------------- the ratchet (real compiles)

@pytest.fixture(scope="module")
def ratchet_result():
    """Requested T_inner=16 under an emulated limit; the knob is off so only the ratchet acts."""
    before = len(CACHE)
    result = probe(REQ16, WL, device="cpu", max_buffers=LIMIT, fusion_knob=False, cache=ProbeCache())
    assert len(CACHE) == before, "the probe must not add (possibly broken) entries to the compile cache"
    return result


def test_ratchet_ends_at_largest_t_inner_that_fits(ratchet_result):
    r = ratchet_result
    assert r.ok and r.failure is None
    assert r.requested_t_inner == 16 and r.effective_t_inner is not None and r.effective_t_inner < 16
    assert r.effective.chunk_size == REQ16.chunk_size  # logical chunk untouched
    ladder = t_inner_ladder(REQ16)
    assert ladder == [16, 8, 4, 2, 1]
    # every ladder value above the effective one was tried, failed on the limit, and was really over it
    assert r.ratchet == ladder[: ladder.index(r.effective_t_inner) + 1]
    for s in r.steps[:-1]:
        assert not s.ok and s.kind == "buffer_limit" and s.max_kernel_buffers > LIMIT
    last = r.steps[-1]
    assert last.ok and 0 < last.max_kernel_buffers <= LIMIT and last.graphs == 1
    assert r.kernels is not None and r.kernels.max_buffers <= LIMIT
    assert not r.fusion_knob_needed and r.inductor_options == ()
    assert r.tile_rel_err is not None and r.tile_rel_err < 1e-5
    doc = json.loads(json.dumps(r.to_dict()))
    assert doc["requested_t_inner"] == 16 and doc["effective_t_inner"] == r.effective_t_inner
    assert len(doc["steps"]) == len(r.steps)
    assert xk.ProbeResult.from_dict(doc) == r  # round-trips for storage


def test_effective_config_passes_equivalence(ratchet_result):
    inputs = make_inputs(WL.B, WL.NH, WL.S, WL.DHQK, WL.DHV, seed=3)
    ref_h, ref_states = xk.mlstm_reference(*inputs)
    h, states = xk.mlstm(*inputs, config=ratchet_result.effective)
    assert rel_err(h, ref_h) < 1e-4
    for x, r in zip(states, ref_states):
        assert rel_err(x, r) < 1e-4


def test_probe_results_are_cached():
    cache = ProbeCache()
    cfg = REQ16.replace(t_inner=4)
    first = probe(cfg, WL, device="cpu", max_buffers=LIMIT, fusion_knob=False, cache=cache)
    t0 = time.perf_counter()
    again = probe(cfg, WL, device="cpu", max_buffers=LIMIT, fusion_knob=False, cache=cache)
    assert again.cached and not first.cached and time.perf_counter() - t0 < 1.0
    assert again.effective == first.effective and again.steps == first.steps
    assert len(cache) == 1


def test_fusion_knob_is_tried_before_stepping_down():
    """Limit one below what T_inner=2 needs: the knob is tried at T_inner=2 before the ratchet steps down.

    On the C++ backend the knob does not split this kernel (measured: 23 buffers at T_inner=2 with the
    knob at 22, 19 or 15, and 36 at T_inner=4 with it at 35, 32 or 28), so the ratchet must go on to 1.
    """
    cache = ProbeCache()
    cfg = REQ16.replace(t_inner=2)
    free = probe(cfg, WL, device="cpu", max_buffers=None, cache=cache)
    assert free.ok and free.effective_t_inner == 2 and free.max_buffers is None
    need = free.kernels.max_buffers
    r = probe(cfg, WL, device="cpu", max_buffers=need - 1, fusion_knob=True, cache=cache)
    assert r.steps[0].t_inner == 2 and r.steps[0].kind == "buffer_limit" and not r.steps[0].inductor_options
    assert r.steps[1].t_inner == 2 and dict(r.steps[1].inductor_options) == {FUSION_KNOB: need - 1}
    assert r.steps[1].kind == "buffer_limit" and not r.steps[1].ok
    assert [s.t_inner for s in r.steps] == [2, 2, 1] and r.steps[2].ok and not r.steps[2].inductor_options
    assert not r.fusion_knob_needed and r.effective_t_inner == 1 and r.kernels.max_buffers < need


# ----------------------------------------------------------------------------- graph breaks and eager fallback

def _breaking(x, y):
    z = x * y + 1.0
    torch._dynamo.graph_break()
    return (z.sin(),)


_TINY = CompileKey(family="step", B=1, heads=1, DHQK=2, DHV=2, dtype="float32", device="cpu",
                   t_inner=1, chunk_size=1)


def test_graph_break_is_a_probe_failure_with_reason():
    args = (torch.randn(4), torch.randn(4))
    a = compile_and_scan(_TINY, None, fn=_breaking, args=args)
    assert not a.ok and a.kind == "graph_break"
    graphs, breaks, reasons = graph_breaks(_breaking, args)
    assert breaks >= 1 and graphs >= 2 and reasons and any("graph_break" in r for r in reasons)


def test_silent_eager_fallback_is_a_probe_failure():
    key = xk.CompileKey(family="recurrent", B=1, heads=2, DHQK=8, DHV=8, dtype="float32", device="cpu",
                        t_inner=1, chunk_size=1)
    with torch._dynamo.config.patch(disable=True):
        a = compile_and_scan(key)
    assert not a.ok and a.kind == "graph_break" and "eager" in a.message


# ----------------------------------------------------------------------------- faults: timeout, crash

_HANG = """
import os, time
import torch._inductor.compile_fx as _cfx

def _hang(*args, **kwargs):  # Inductor's entry point, looked up at every torch.compile
    open(os.environ["XLSTM_TEST_HANG_MARK"], "w").write("compiling")
    time.sleep(3600)

_cfx.compile_fx = _hang
"""


def test_hanging_compile_is_bounded_by_timeout(tmp_path, monkeypatch):
    """The child's compile itself hangs (Inductor patched to sleep in the child only): killed at the bound."""
    (tmp_path / "sitecustomize.py").write_text(_HANG)
    mark = tmp_path / "mark"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("XLSTM_TEST_HANG_MARK", str(mark))
    cache = ProbeCache()
    t0 = time.perf_counter()
    r = probe(REQ16.replace(t_inner=4), WL, device="cpu", max_buffers=LIMIT, isolate=True, timeout_s=2,
              cache=cache)
    assert time.perf_counter() - t0 < 60
    assert mark.read_text() == "compiling", "the child must have reached the compile before the bound"
    assert not r.ok and r.failure == "timeout" and len(r.steps) == 1 and "compile_timeout_s=2" in r.message
    assert len(cache) == 0  # a timeout may be load-dependent: not remembered
    with pytest.raises(xk.ProbeError) as info:
        r.raise_for_failure()
    assert info.value.kind == "timeout"


def test_tuner_probe_failure_is_the_named_probe_error(monkeypatch):
    """The tuner's ratchet probe fails a candidate over the buffer limit with the probe's named exception as cause."""
    from tuner import CandidateFailed
    from tuner._evaluate import ratchet_probe, run_kernel

    inputs = make_inputs(WL.B, WL.NH, WL.S, WL.DHQK, WL.DHV)
    with settings_env(monkeypatch, {"MAX_BUFFERS": "1"}):  # no kernel fits one buffer argument
        with pytest.raises(CandidateFailed, match=r"^probe failed \(buffer_limit\): ") as info:
            ratchet_probe(run_kernel, WL, inputs, REQ16.replace(t_inner=1), torch.device("cpu"))
    assert isinstance(info.value.__cause__, BufferLimitError) and info.value.__cause__.kind == "buffer_limit"


def test_compiler_crash_does_not_kill_the_caller():
    runner = _ChildRunner(timeout_s=60)
    runner.proc = runner._start()
    os.killpg(runner.proc.pid, signal.SIGKILL)  # the compiling process dies hard
    runner.proc.wait()
    a = runner.attempt(_TINY, None)
    runner.close()
    assert not a.ok and a.kind == "crash" and "signal 9" in a.message


def test_isolated_probe_compiles_in_a_child():
    r = probe(REQ16.replace(t_inner=4), WL, device="cpu", max_buffers=LIMIT, isolate=True, timeout_s=300,
              fusion_knob=False, cache=ProbeCache())
    assert r.ok, r.message
    assert r.effective_t_inner == 4 and r.kernels.kernel_count >= 1 and r.kernels.max_buffers <= LIMIT


# ----------------------------------------------------------------------------- bad input

def test_bad_input_is_rejected_before_compiling():
    with pytest.raises(ValueError, match="heads_per_band"):
        probe(REQ16.replace(heads_per_band=3), WL, device="cpu")
    with pytest.raises(ValueError, match="max_buffers"):
        probe(REQ16, WL, device="cpu", max_buffers=0)
    with pytest.raises(ValueError, match="timeout_s"):
        probe(REQ16, WL, device="cpu", timeout_s=0)
    with pytest.raises(ValueError, match="Workload"):
        probe(REQ16, "1,2,16,8,8,float32", device="cpu")  # type: ignore[arg-type]


def test_ladder_respects_recurrent_tile():
    assert t_inner_ladder(xk.KernelConfig("recurrent", chunk_size=12, t_inner=12)) == [12, 4, 2, 1]
    assert t_inner_ladder(xk.KernelConfig("chunkwise", chunk_size=8, t_inner=8)) == [8, 4, 2, 1]


# ----------------------------------------------------------------------------- fusion report and CLI

FUSE_KEYS = {"config", "workload", "device", "compiled_t_inner", "graphs", "graph_breaks", "break_reasons",
             "kernel_count", "max_kernel_buffers", "kernels", "buffer_limit", "over_limit", "compile_s", "ok",
             "error_kind", "error"}


def test_fuse_report_function_and_cli_json():
    from typer.testing import CliRunner

    from flows.cli import app

    cfg = REQ16.replace(t_inner=4)
    rep = fuse_report(cfg, WL, device="cpu", max_buffers=10)
    assert rep.ok and rep.graphs == 1 and rep.graph_breaks == 0 and rep.break_reasons == ()
    assert rep.kernels.kernel_count >= 1 and rep.over_limit()  # the fused kernel has more than 10 buffers
    res = CliRunner().invoke(app, ["fuse-report", "--workload", "1,2,16,8,8,float32", "--family", "recurrent",
                                   "--chunk-size", "16", "--t-inner", "4", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert set(doc) == FUSE_KEYS
    assert doc["graphs"] == 1 and doc["graph_breaks"] == 0 and doc["buffer_limit"] is None
    assert doc["kernel_count"] == len(doc["kernels"]) >= 1
    for k in doc["kernels"]:
        assert {"name", "lang", "buffers", "args", "buffer_names"} <= set(k) and k["lang"] == "cpp"
        assert isinstance(k["buffers"], int) and 0 < k["buffers"] <= k["args"]
    assert doc["max_kernel_buffers"] == max(k["buffers"] for k in doc["kernels"])
    assert isinstance(doc["compile_s"], float) and doc["compile_s"] > 0
    text = CliRunner().invoke(app, ["fuse-report", "-w", "1,2,16,8,8,float32", "--family", "recurrent",
                                    "--chunk-size", "16", "--t-inner", "4", "--device", "cpu"])
    assert text.exit_code == 0 and "graph breaks: 0" in text.output and "buffers" in text.output


def test_probe_cli_json_and_errors():
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["probe", "-w", "1,2,16,8,8,float32", "--family", "recurrent", "--chunk-size", "16",
                              "--t-inner", "8", "--device", "cpu", "--max-buffers", str(LIMIT),
                              "--no-fusion-knob", "--in-process", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["ok"] and doc["requested_t_inner"] == 8 and doc["ratchet"][0] == 8
    assert doc["effective_t_inner"] < 8 and doc["max_buffers"] == LIMIT
    bad = runner.invoke(app, ["probe", "-w", "1,2,16", "--device", "cpu"])
    assert bad.exit_code == 2 and "B,NH,S,DHQK,DHV" in bad.output
    bad = runner.invoke(app, ["probe", "--family", "gru"])
    assert bad.exit_code == 2 and "family" in bad.output


# ----------------------------------------------------------------------------- chunk shrink

def _oom_above(limit):
    calls = []

    def run(cfg):
        calls.append(cfg.chunk_size)
        if cfg.chunk_size > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate for chunk {cfg.chunk_size}")
        return cfg.chunk_size * 10

    return run, calls


def test_shrink_retries_smaller_chunks_and_marks_non_canonical():
    run, calls = _oom_above(16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_with_shrink(run, xk.KernelConfig("chunkwise", chunk_size=64, t_inner=4), enabled=True)
    assert calls == [64, 32, 16] and res.value == 160 and res.config.chunk_size == 16
    assert not res.canonical and res.shrinks == [64, 32]
    assert sum(issubclass(w.category, NonCanonicalWarning) for w in caught) == 2  # one per shrink


def test_shrink_is_off_by_default_and_never_while_tuning(monkeypatch):
    cfg = xk.KernelConfig("chunkwise", chunk_size=64, t_inner=4)
    run, calls = _oom_above(16)
    with pytest.raises(torch.OutOfMemoryError):
        run_with_shrink(run, cfg)  # setting default: off
    monkeypatch.setenv("XLSTM_AUTOTUNE_SHRINK", "1")
    xk.reset_settings()
    try:
        with tuning(), pytest.raises(torch.OutOfMemoryError):
            run_with_shrink(run, cfg)
        ok = run_with_shrink(run, cfg)  # the setting turns it on outside tuning
        assert ok.config.chunk_size == 16 and not ok.canonical
        other, _ = _oom_above(0)
        with pytest.raises(torch.OutOfMemoryError):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NonCanonicalWarning)
                run_with_shrink(other, cfg)  # chunk 1 still OOMs: the error propagates
    finally:
        monkeypatch.delenv("XLSTM_AUTOTUNE_SHRINK")
        xk.reset_settings()
    with pytest.raises(ValueError):  # not an OOM: never retried
        run_with_shrink(lambda c: (_ for _ in ()).throw(ValueError("bad")), cfg, enabled=True)


def test_shrink_through_mlstm(monkeypatch):
    """xk.mlstm itself: an out-of-memory at chunk 16 (the driver raises it) is retried at chunk 8 with a
    NonCanonicalWarning and gives exactly the chunk-8 kernel's result; off, or while tuning, the OOM
    propagates; a shrunk result is never remembered by the fast path."""
    from xlstm_kernels import api
    from xlstm_kernels.kernels import fastpath

    real = api.run_sequence

    def oom_above_8(*args):
        if args[-2].chunk_size > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(*args)

    small = CONFIGS["chunk_t1"]  # chunk 8, T1: the suite's key; S = 8 is one block the fast path could remember
    inputs = make_inputs(B=2, NH=4, S=8, DHQK=16, DHV=32)
    expected = xk.mlstm(*inputs, config=small)
    monkeypatch.setattr(api, "run_sequence", oom_above_8)
    monkeypatch.setattr(fastpath, "_MEMO", {})
    big = small.replace(chunk_size=16)
    with pytest.raises(torch.OutOfMemoryError):
        xk.mlstm(*inputs, config=big)  # shrink off by default
    monkeypatch.setenv("XLSTM_AUTOTUNE_SHRINK", "true")
    xk.reset_settings()
    try:
        with pytest.warns(NonCanonicalWarning, match="chunk_size=16; retrying with chunk_size=8"):
            h, states = xk.mlstm(*inputs, config=big)
        assert torch.equal(h, expected[0]) and all(torch.equal(a, b) for a, b in zip(states, expected[1]))
        assert not fastpath._MEMO, "a non-canonical result must not be remembered"
        with tuning(), pytest.raises(torch.OutOfMemoryError):
            xk.mlstm(*inputs, config=big)
    finally:
        monkeypatch.delenv("XLSTM_AUTOTUNE_SHRINK")
        xk.reset_settings()


def test_shrunk_config_keeps_recurrent_tile_valid():
    assert shrunk_config(xk.KernelConfig("recurrent", chunk_size=8, t_inner=8)) == xk.KernelConfig(
        "recurrent", chunk_size=4, t_inner=4)
    assert shrunk_config(xk.KernelConfig("chunkwise", chunk_size=1, t_inner=4)) is None
