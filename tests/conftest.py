"""Shared fixtures. Compiles are expensive (3-25 s cold on 2 cores): tests reuse a few configs
and shapes so that the whole suite compiles only a handful of graphs, and Inductor's disk cache
(TORCHINDUCTOR_CACHE_DIR, set by the Makefile/CI) makes reruns cheap."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".inductor-cache"))
# Never read or write the user's real ~/.xlstm-autotune (profiles, DB) from the tests.
os.environ["XLSTM_AUTOTUNE_HOME"] = tempfile.mkdtemp(prefix="xlstm-autotune-tests-")
# Profiles and tuning runs belong to the settings' device; the suite's profiles are CPU ones, also on GPU boxes.
os.environ["XLSTM_AUTOTUNE_DEVICE"] = "cpu"
# The suite's kernel spaces keep their candidates: no CPU thread-count dimension unless a test sets it
# (tests/test_threads.py does); each thread count is another compile of every kernel.
os.environ.setdefault("XLSTM_AUTOTUNE_TUNE_THREADS", "[]")
os.environ.setdefault("XLSTM_AUTOTUNE_TUNE_SPEEDUP_SPAN_S", "0")  # unpaced paired rounds (test_trust paces its own)

import xlstm_kernels as xk  # noqa: E402
from xlstm_kernels import rel_err  # noqa: E402, F401 - the suite's tests import it from here
from xlstm_kernels import random_inputs  # noqa: E402

# One small odd-length shape for the whole suite: S is not a multiple of any chunk used.
SHAPE = dict(B=2, NH=4, S=37, DHQK=16, DHV=32)

# Relative tolerance (max |err| / max |ref|) against the float64 reference, per input dtype.
REF_RTOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}
# Half-precision h is float32 math rounded once to the output dtype: unit roundoff (2^-8 bf16, 2^-11
# fp16) of max|h| plus the float32 bound. Tighter than the tuner's low-precision gate (1e-2), as a test must be.
REF_RTOL.update({torch.bfloat16: 2**-8 + 1e-4, torch.float16: 2**-11 + 1e-4})
# Between execution variants of one logical chunk size (canonical equivalence), float32.
CANON_RTOL = 1e-5

# The configs the suite compiles (keys shared across test files).
REC_T1 = xk.KernelConfig("recurrent", chunk_size=8, t_inner=1)
REC_T4 = xk.KernelConfig("recurrent", chunk_size=8, t_inner=4, heads_per_band=2)
CHUNK_T1 = xk.KernelConfig("chunkwise", chunk_size=8, t_inner=1)
CHUNK_T4 = xk.KernelConfig("chunkwise", chunk_size=8, t_inner=4, heads_per_band=2)
CONFIGS = {"rec_t1": REC_T1, "rec_t4": REC_T4, "chunk_t1": CHUNK_T1, "chunk_t4": CHUNK_T4}


def make_inputs(B, NH, S, DHQK, DHV, dtype=torch.float32, seed=0, gate_scale=3.0, device="cpu"):
    return random_inputs(B, NH, S, DHQK, DHV, dtype=dtype, device=device, seed=seed, gate_scale=gate_scale)


@pytest.fixture(scope="session")
def inputs():
    return make_inputs(**SHAPE)


@pytest.fixture(scope="session")
def reference(inputs):
    return xk.mlstm_reference(*inputs)


@pytest.fixture(scope="session")
def results(inputs):
    """Output of every suite config on the shared inputs, computed once per session."""
    return {name: xk.mlstm(*inputs, config=cfg) for name, cfg in CONFIGS.items()}


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness (temporary SQLite DB and API server), entered once per session (~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield

# -- tuning database and tuner (storage/, tuner/) -------------------------------------------------

@pytest.fixture()
def db_path(tmp_path):
    """Path of a not-yet-created tuning database in a temporary directory."""
    return tmp_path / "tuning.db"


@pytest.fixture()
def fresh_db(db_path):
    """An empty tuning database (schema created), closed after the test."""
    import storage

    db = storage.TuningDB(db_path)
    yield db
    db.close()


@contextlib.contextmanager
def settings_env(monkeypatch, set_env: dict[str, str], unset: tuple[str, ...] = ()) -> Iterator[None]:
    """``XLSTM_AUTOTUNE_*`` variables set (and others removed) meanwhile; settings and the loaded
    profile are re-read on the way in and again after the environment is restored."""
    for k, v in set_env.items():
        monkeypatch.setenv(f"XLSTM_AUTOTUNE_{k}", v)
    for k in unset:
        monkeypatch.delenv(f"XLSTM_AUTOTUNE_{k}", raising=False)
    xk.reset_settings()
    xk.reload_profile()
    try:
        yield
    finally:
        monkeypatch.undo()
        xk.reset_settings()
        xk.reload_profile()


@pytest.fixture()
def tuner_home(tmp_path, monkeypatch):
    """A fresh HOME (DB, profiles, reports), the real tuner narrowed to a two-candidate space with
    small timing budgets (``flow_helpers.NARROW_ENV``); settings and the loaded profile re-read around it."""
    from flow_helpers import NARROW_ENV

    with settings_env(monkeypatch, {"HOME": str(tmp_path), **NARROW_ENV}):
        yield tmp_path
