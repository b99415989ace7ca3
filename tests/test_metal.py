"""Metal without a Mac: Inductor's MPS code generator on fake MPS tensors, the scanner on its real output,
the T_inner ratchet with ``target="mps"`` (library and CLI), the plan for a Mac, and the probes' target column.

Generating Metal is not ``torch.compile`` but still costs seconds per block (about 1-8 s on 2 cores):
every block is generated once per session (``metal_codegen``'s memo) through the module fixture, and
the probe and CLI tests below reuse exactly those compile keys.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import sqlite3
from pathlib import Path

import pytest
import torch

import xlstm_kernels as xk
from xlstm_kernels.probe.codegen_scan import metal_threadgroup_bytes, scan_output_code, scan_source
from xlstm_kernels.kernels.config import T_INNER_LADDER, KernelConfig, Workload
from xlstm_kernels.kernels.drivers import kernel_key, plan
from xlstm_kernels.probe.metal_codegen import (
    MetalCodegenUnavailable,
    block_metal_source,
    metal_kernel_sources,
    metal_output_code,
)
from xlstm_kernels.probe import EPS, classify_error, probe

DATA = Path(__file__).parent / "data" / "metal"
LIMIT = 31  # Metal's buffer arguments per kernel (settings.metal_buffer_limit)
# A small prefill workload: one head, so every block is one band; S fits T_inner 16 of both families.
WL = Workload.parse("1,1,128,16,32,float32")
REC = KernelConfig("recurrent", chunk_size=16, t_inner=16)
CHUNK = KernelConfig("chunkwise", chunk_size=8, t_inner=16)
FAMILIES = {"recurrent": REC, "chunkwise": CHUNK}
TS = sorted(T_INNER_LADDER)  # 1, 2, 4, 8, 16


def metal_key(cfg: KernelConfig, wl: Workload = WL, **options):
    """The compile key ``probe(cfg, wl, target="mps")`` generates (same memo entry)."""
    key = kernel_key(cfg, plan(cfg, wl.NH, wl.S), wl.B, wl.DHQK, wl.DHV, torch.float32, torch.device("mps"), EPS)
    return dataclasses.replace(key, inductor_options=tuple(options.items())) if options else key


@pytest.fixture(scope="module")
def generated():
    """Output code and scan per (family, T_inner) on WL, plus the recurrent T_inner 16 under the fusion knob."""
    out = {}
    for fam, cfg in FAMILIES.items():
        for t in TS:
            src = block_metal_source(metal_key(cfg.replace(t_inner=t)))
            out[fam, t] = (src, scan_output_code([src]))
    src = block_metal_source(metal_key(REC, max_fusion_unique_io_buffers=LIMIT))
    out["recurrent", "knob"] = (src, scan_output_code([src]))
    return out


@functools.cache
def _generator():
    """tests/data/metal/generate.py as a module (how the committed data was written)."""
    from importlib import util

    spec = util.spec_from_file_location("generate_metal_data", DATA / "generate.py")
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def strip_comments(src: str) -> str:
    """Output code without its top-level comment lines (torch 2.11 writes the FX graph there), as committed."""
    return _generator().strip_comments(src)


def families_sha256() -> str:
    """Checksum of the current xlstm_kernels/kernels/families.py, as the data's manifests record it."""
    return _generator().families_sha256()


def call_site_args(src: str, kernel: str) -> int:
    """Positional arguments the output code's ``call`` passes to ``kernel``: Inductor's own account of its buffers."""
    m = re.search(rf"^\s*{re.escape(kernel)}\((.*?)(?:, threads=|\)$)", src, re.MULTILINE)
    assert m, f"no call of {kernel} in the wrapper"
    return len([a for a in m.group(1).split(",") if a.strip()])


# ----------------------------------------------------------------------------- the generated source

def test_generated_source_is_metal_with_every_kernel_called(generated):
    for (fam, t), (src, scan) in generated.items():
        assert scan.kernel_count >= 1 and all(k.lang == "metal" for k in scan.kernels), (fam, t)
        assert src.count("kernel void") == scan.kernel_count
        for k in scan.kernels:  # the scanner's buffer count equals what the wrapper binds at the call
            assert k.buffers == call_site_args(src, k.name), (fam, t, k.name)


def test_buffer_counts_grow_with_t_inner_and_recurrent_ratchet_lands_where_kernels_fit(generated):
    rec = {t: generated["recurrent", t][1].max_buffers for t in TS}
    assert [rec[t] for t in TS] == sorted(rec.values()) and rec[1] < rec[16]  # unrolling fuses more I/O
    assert rec[16] > LIMIT  # the seed's failure: a fused recurrent block over Metal's 31 buffers
    expected = max(t for t in TS if rec[t] <= LIMIT)
    r = probe(REC, WL, target="mps", fusion_knob=False, cache=None)
    assert (r.ok, r.method, r.target, r.max_buffers) == (True, "codegen", "mps", LIMIT)
    assert r.effective_t_inner == expected
    assert r.ratchet == [t for t in (16, 8, 4, 2, 1) if t >= expected]
    assert [s.max_kernel_buffers for s in r.steps] == [rec[t] for t in r.ratchet]
    assert all(s.kind == "buffer_limit" for s in r.steps[:-1]) and r.steps[-1].ok
    assert r.kernels is not None and r.kernels.max_buffers == rec[expected]


def test_chunkwise_ratchet_lands_where_its_kernels_fit(generated):
    cw = {t: generated["chunkwise", t][1].max_buffers for t in TS}
    expected = max(t for t in TS if cw[t] <= LIMIT)
    r = probe(CHUNK, WL, target="mps", fusion_knob=False, cache=None)
    assert r.ok and r.effective_t_inner == expected
    assert r.steps[0].max_kernel_buffers == cw[16]


def test_fusion_knob_is_tried_at_the_same_t_inner_before_stepping_down(generated):
    knob = generated["recurrent", "knob"][1]
    r = probe(REC, WL, target="mps", fusion_knob=True, cache=None)
    assert r.steps[0].kind == "buffer_limit" and r.steps[1].t_inner == 16
    assert dict(r.steps[1].inductor_options) == {"max_fusion_unique_io_buffers": LIMIT}
    assert r.steps[1].max_kernel_buffers == knob.max_buffers
    assert knob.max_buffers < generated["recurrent", 16][1].max_buffers  # the knob reached the code generator
    fits = knob.max_buffers <= LIMIT
    assert r.fusion_knob_needed is fits and (r.effective_t_inner == 16) is fits
    if fits:
        assert r.effective is not None and r.effective.fusion_io_limit == LIMIT


def test_threadgroup_memory_is_checked_statically(generated, monkeypatch):
    tg = {t: generated["recurrent", t][1].max_threadgroup_bytes for t in TS}
    assert tg[16] > tg[1] > 0  # reductions declare threadgroup accumulators
    limit = tg[4]  # a pretend device that allows exactly T_inner 4's accumulators
    monkeypatch.setenv("XLSTM_AUTOTUNE_METAL_THREADGROUP_MEMORY_LIMIT", str(limit))
    xk.reset_settings()
    try:
        r = probe(REC, WL, target="mps", max_buffers=None, fusion_knob=False, cache=None)
    finally:
        monkeypatch.delenv("XLSTM_AUTOTUNE_METAL_THREADGROUP_MEMORY_LIMIT")
        xk.reset_settings()
    assert r.effective_t_inner == max(t for t in TS if tg[t] <= limit)
    assert r.steps[0].kind == "threadgroup_memory" and "threadgroup memory limit" in r.steps[0].message


def test_committed_kernels_parse_as_generated(generated):
    """tests/data/metal/torch-X.Y holds output code of this module's blocks made by torch X.Y
    (``tests/data/metal/generate.py``); on that torch, it is reproduced exactly."""
    manifests = sorted(DATA.glob("torch-*/manifest.json"))
    assert {m.parent.name for m in manifests} >= {"torch-2.11", "torch-2.13"}  # the supported versions
    for path in manifests:
        manifest = json.loads(path.read_text())
        for name, meta in manifest["files"].items():
            src = (path.parent / name).read_text()
            scan = scan_output_code([src])
            assert scan.kernel_count == src.count("kernel void") >= 1
            assert len({k.name for k in scan.kernels}) == scan.kernel_count  # 2.11: mps_lib_N.generated_kernel
            for k in scan.kernels:
                assert k.buffers == call_site_args(src, k.name), (path.parent.name, name, k.name)
            if manifest["torch"] == torch.__version__:
                if manifest.get("families_sha256") != families_sha256():
                    pytest.skip(f"{path.parent.name}'s data predates the current xlstm_kernels/kernels/families.py: "
                                "regenerate it on this torch with `python tests/data/metal/generate.py`")
                key = metal_key(FAMILIES[meta["family"]].replace(t_inner=meta["t_inner"]))
                assert strip_comments(block_metal_source(key)) == src, \
                    f"{name} is no longer what torch {torch.__version__} generates"


def test_threadgroup_bytes_of_declarations():
    """Sizes by Metal type: scalars, vectors (a 3-vector takes a 4-vector's room), multi-dimensional arrays."""
    body = "threadgroup float a[2]; threadgroup half2 b[4][8]; threadgroup bool c; threadgroup float3 d[3];"
    assert metal_threadgroup_bytes(body) == 2 * 4 + 32 * 4 + 1 + 3 * 16
    k, h = scan_source("kernel void g(device float* out_ptr0, constant float* in_ptr0, uint2 p [[thread_position_in_grid]])"
                       " { threadgroup float tmp_acc_0[64]; if (p.x) { out_ptr0[0] = in_ptr0[0]; } }\n"
                       "kernel void h(device float* out_ptr0) { }")
    assert (k.buffers, k.args, k.threadgroup_bytes) == (2, 3, 256)
    assert (h.buffers, h.threadgroup_bytes) == (1, 0)  # the body ends at g's closing brace


# ----------------------------------------------------------------------------- classification on real source

QUOTED_METAL_ERROR = "program_source:797:17: error: number of constant buffers exceeds maximum supported (31)"
QUOTED_OTHER_ERROR = "program_source:1:1: error: unknown type name 'What'"  # pytorch/pytorch#144648


def test_classifier_on_generated_source_wrapped_as_inductor_wraps_it(generated):
    """Inductor raises ``SyntaxError(f"failed to compile {source} with {err.msg}")`` (runtime_utils.compile_mps_shader)
    inside an InductorError; the source itself (threadgroup attributes, buffer names) must not decide the kind."""
    from torch._inductor.exc import InductorError

    src, scan = generated["recurrent", 16]
    for metal_src in metal_kernel_sources(src)[:2]:
        over = InductorError(SyntaxError(f"failed to compile {metal_src} with {QUOTED_METAL_ERROR}"), "")
        assert classify_error(over) == "buffer_limit"
        other = InductorError(SyntaxError(f"failed to compile {metal_src} with {QUOTED_OTHER_ERROR}"), "")
        assert classify_error(other) == "compiler_error"
    assert classify_error(src) == "compiler_error"  # source text alone carries no failure signature


# ----------------------------------------------------------------------------- command line

def cli():
    """(runner, app) of the command line; skipped where typer is not installed (the GPU box)."""
    testing = pytest.importorskip("typer.testing")
    from flows.cli import app

    return testing.CliRunner(), app


def test_cli_probe_target_mps_ratchets_on_generated_metal(generated):
    runner, app = cli()

    rec = {t: generated["recurrent", t][1].max_buffers for t in TS}
    result = runner.invoke(app, ["probe", "--target", "mps", "-w", str(WL), "--family", "recurrent",
                                 "--chunk-size", "16", "--t-inner", "16", "--no-fusion-knob", "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert (d["method"], d["target"], d["device"]) == ("codegen", "mps", "mps")
    assert d["effective_t_inner"] == max(t for t in TS if rec[t] <= LIMIT)
    text = runner.invoke(app, ["probe", "--target", "mps", "-w", str(WL), "--family", "recurrent",
                               "--chunk-size", "16", "--t-inner", "16", "--no-fusion-knob"])
    assert "generated Metal, checked statically" in text.output and "FAIL buffer_limit" in text.output
    bad = runner.invoke(app, ["probe", "--target", "cuda", "-w", str(WL)])
    assert bad.exit_code == 2 and "target must be one of ['mps']" in bad.output


def test_cli_tune_target_mps_stores_a_plan_another_machine_finds(generated, monkeypatch, tmp_path):
    runner, app = cli()
    from storage import open_db
    from tuner import effective_key

    db_path = tmp_path / "plan.db"
    for name, value in (("DB_PATH", str(db_path)), ("TUNE_FAMILIES", '["recurrent"]'),
                        ("TUNE_T_INNERS", "[16]"), ("TUNE_HEADS_PER_BAND", "[1]")):
        monkeypatch.setenv(f"XLSTM_AUTOTUNE_{name}", value)
    xk.reset_settings()
    try:
        result = runner.invoke(app, ["tune", "--target", "mps", "-w", str(WL), "-w", "1,1,1,16,32,float32,decode",
                                     "--json"])
    finally:
        xk.reset_settings()
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert (d["target"], d["method"], d["buffer_limit"]) == ("mps", "codegen", LIMIT)
    prefill, decode = d["workloads"]
    assert decode["candidates"] == 0  # the step: not probed
    rec = [r for r in prefill["results"] if r["requested"]["family"] == "recurrent"]
    assert len(rec) == 1 and rec[0]["ok"]
    knob = generated["recurrent", "knob"][1]
    landing = [x for x in prefill["landings"] if x["family"] == "recurrent"][0]
    assert landing["effective_t_inner"] == rec[0]["effective_t_inner"]
    assert landing["fusion_knob_needed"] is (knob.max_buffers <= LIMIT)
    with open_db(db_path) as db:  # stored for the Mac: found by torch, key and target from any machine id
        cfg = KernelConfig.from_dict(rec[0]["requested"])
        row = db.probe_outcome("some-mac", torch.__version__, effective_key(cfg, WL), target="mps")
        assert row is not None and row["target"] == "mps" and row["t_inner_effective"] == rec[0]["effective_t_inner"]
        assert json.loads(row["detail_json"])["method"] == "codegen"
        assert db.probe_outcome(row["machine_id"], torch.__version__, effective_key(cfg, WL)) is None  # own device
        assert db.probe_outcome("some-mac", "2.0.0", effective_key(cfg, WL), target="mps") is None


# ----------------------------------------------------------------------------- failure modes and storage

def test_moved_internal_is_a_named_error_not_a_traceback(monkeypatch):
    from torch._inductor.graph import GraphLowering

    def moved(self, *a, **k):
        raise AttributeError("'GraphLowering' object has no attribute 'wrapper_code'")

    monkeypatch.setattr(GraphLowering, "codegen", moved)
    with pytest.raises(MetalCodegenUnavailable, match=rf"Metal codegen unavailable on torch {re.escape(torch.__version__)}: "
                                                      r"lowering and code generation failed: AttributeError"):
        metal_output_code(lambda x: (x * 2).sum(), [((4,), torch.float32)])


def test_probes_table_migrates_to_target_column(tmp_path):
    from storage import SCHEMA_VERSION, open_db
    from storage._schema import MIGRATIONS

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    for stmt in MIGRATIONS[0]:
        conn.execute(stmt)
    conn.execute("INSERT INTO machines VALUES ('m1','cpu','cpu','cpu','linux','x86','3.12','2.13',NULL,1,1,'{}','t','t')")
    conn.execute("INSERT INTO probes (machine_id, torch, compile_key, config_json, t_inner_requested, t_inner_effective,"
                 " ok, created_at) VALUES ('m1', '2.13', 'k1', '{}', 16, 8, 1, 't')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with open_db(path) as db:
        assert db.schema_version == SCHEMA_VERSION >= 2
        old = db.probe_outcome("m1", "2.13", "k1")
        assert old is not None and old["t_inner_effective"] == 8 and old["target"] is None
        assert db.probe_outcome("m1", "2.13", "k1", target="mps") is None
