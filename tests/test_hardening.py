"""Hardening (issue 15): names that become paths, checks before writes, profiles that cannot hang or
crash a call, memory refusal, one heads_per_band rule, read-only homes, NaN in q/k/v.

No new compile keys: every check here runs before compiling; the two calls that run a kernel use
the suite's default-config and ``chunk_t1``/``rec_t1`` keys on ``SHAPE``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from typer.testing import CliRunner

import xlstm_kernels as xk
from conftest import CONFIGS, SHAPE, make_inputs, settings_env
from flow_helpers import NARROW_ENV
from flows.cli import app
from flows.exits import EXIT_FAILED, EXIT_OK, EXIT_TOO_LARGE, EXIT_UNWRITABLE, EXIT_USAGE
from profile_fixtures import entry, make_profile
from xlstm_kernels.paths import PathEscapeError, join_under, safe_component

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
W_SHAPE = "{B},{NH},{S},{DHQK},{DHV},float32".format(**SHAPE)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """HOME = tmp_path/home (so tmp_path/outside is outside it), the narrowed tuner, CPU profiles."""
    h = tmp_path / "home"
    h.mkdir()
    with settings_env(monkeypatch, {"HOME": str(h), "DEVICE": "cpu", **NARROW_ENV},
                      unset=("PROFILE_PATH", "USE_PROFILE", "DB_PATH", "OPTUNA_STORAGE")):
        yield h


def _tree(root: Path, skip: Path | None = None) -> dict[str, str]:
    """path -> sha256 of every file under ``root`` (outside ``skip``): 'no other file changed'."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = ""
    return out


def _output(result) -> str:  # noqa: ANN001 - click Result
    return result.output + (result.stderr if result.stderr_bytes is not None else "")


# -- names that become paths ---------------------------------------------------------------------


def test_safe_component_and_join_under(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    assert safe_component("3f2a9c1b7d04") == "3f2a9c1b7d04"  # real machine ids are unchanged
    for name in ("/abs/x", "../../x", "..", ".", "a/b", "a%2Fb", "1,4,512,64,64,float32,prefill"):
        enc = safe_component(name)
        assert "/" not in enc and not enc.startswith(".") and join_under(base, enc).parent == base
    assert safe_component("a/b") != safe_component("a%2Fb")  # injective: % is encoded too
    (base / "out").symlink_to(tmp_path)
    for parts, words in ((("/etc/passwd",), "absolute"), (("..", "x"), "outside"), (("out", "x"), "outside")):
        with pytest.raises(PathEscapeError, match=words):
            join_under(base, *parts)
    with pytest.raises(PathEscapeError, match="non-empty"):
        safe_component("")


def _foreign_profile(machine_id: str) -> str:
    profile = make_profile([entry(W_SHAPE, CONFIGS["rec_t1"])])
    data = json.loads(profile.to_json())
    data["fingerprint"]["machine_id"] = machine_id
    return json.dumps(data)


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_publish_path_escaping_machine_id_writes_nothing_outside(home, tmp_path, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text('{"mine": true}\n')
    machine_id = str(outside / "config") if kind == "absolute" else "../../outside/pwn"
    src = tmp_path / "src.json"
    src.write_text(_foreign_profile(machine_id))
    before = _tree(tmp_path, skip=home)
    result = runner.invoke(app, ["profile", "publish", str(src)])
    assert result.exit_code == EXIT_FAILED, _output(result)
    assert "nothing was published" in _output(result) and "Traceback" not in _output(result)
    assert _tree(tmp_path, skip=home) == before  # config.json untouched, no pwn folder, no lock there
    assert not list((home / "profiles").glob("*.json"))
    assert xk.profiles.profile.machine_profile_path(home, machine_id).parent == home / "profiles"


def test_report_study_name_stays_under_reports_and_no_stray_db(home, tmp_path):
    missing = runner.invoke(app, ["report", "--study", "x"])
    assert missing.exit_code == EXIT_FAILED and "no Optuna storage at" in _output(missing) and "tuning.optuna.db" in _output(missing)
    assert sorted(p.name for p in home.iterdir()) == []  # no stray optuna.db
    storage = f"sqlite:///{home / 'tuning.optuna.db'}"  # where `tune` writes its studies
    study = optuna.create_study(study_name="../../x", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    before = _tree(tmp_path, skip=home)
    result = runner.invoke(app, ["report", "--study", "../../x", "--json"])
    assert result.exit_code == EXIT_OK, _output(result)
    path = Path(json.loads(result.output)["path"])
    assert path.parent == home / "reports" and path.name == safe_component("../../x") + ".html"
    assert _tree(tmp_path, skip=home) == before


# -- checks before writes; foreign and newer files untouched ---------------------------------------


def _sha(p: Path) -> tuple[str, int]:
    return hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns


def test_publish_refuses_bad_db_before_writing(home, tmp_path):
    src = tmp_path / "src.json"
    src.write_text(make_profile([entry(W_SHAPE, CONFIGS["rec_t1"])]).to_json())
    not_db = tmp_path / "notes.db"
    not_db.write_text("my notes\n" * 50)
    newer = tmp_path / "newer.db"
    xk_db = __import__("storage").TuningDB(newer)
    xk_db.close()
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    for db, words in ((not_db, "not an SQLite database"), (newer, "schema version 99")):
        before = _sha(db)
        result = runner.invoke(app, ["profile", "publish", str(src), "--db", str(db)])
        assert result.exit_code == EXIT_USAGE and words in _output(result), _output(result)
        assert "Traceback" not in _output(result) and _sha(db) == before
        assert not (home / "profiles").exists() or not list((home / "profiles").glob("*.json"))


def test_foreign_sqlite_with_trials_table_is_left_byte_for_byte(home, tmp_path):
    foreign = tmp_path / "other.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE trials (id INTEGER PRIMARY KEY, patient TEXT)")
    conn.execute("INSERT INTO trials (patient) VALUES ('alice')")
    conn.commit()
    conn.close()
    before, names = _sha(foreign), sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, ["best", "-w", W_SHAPE, "--db", str(foreign)])
    assert result.exit_code == EXIT_USAGE and "not a tuning database" in _output(result), _output(result)
    with pytest.raises(__import__("storage").NotADatabase, match="trials"):
        __import__("storage").TuningDB(foreign)  # the writable open refuses it too
    assert _sha(foreign) == before and sorted(p.name for p in tmp_path.iterdir()) == names  # no WAL switch, no -wal


def test_stale_temp_files_of_killed_publishers_are_removed(home):
    path = xk.publish_profile(make_profile([entry(W_SHAPE, CONFIGS["rec_t1"])])).path
    stale = [path.with_name(f".{path.name}.abc123.tmp"), path.with_name(f".{path.stem}.v2{path.suffix}.def.tmp")]
    other = path.with_name(".somebody-else.tmp")
    for p in (*stale, other):
        p.write_bytes(b"x" * 1000)
    xk.publish_profile(make_profile([entry(W_SHAPE, CONFIGS["rec_t1"])]))
    assert not any(p.exists() for p in stale) and other.exists()


# -- a profile never hangs, crashes or changes results ----------------------------------------------


def _in_thread(fn, timeout_s: float = 10.0):  # noqa: ANN001, ANN202
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), f"hung for {timeout_s} s"
    return box


def test_fifo_and_dev_zero_are_refused_without_blocking(home, tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero):
        box = _in_thread(lambda p=path: xk.load_profile(p))
        assert isinstance(box.get("error"), xk.ProfileDamagedError) and "not a regular file" in str(box["error"])
        result = _in_thread(lambda p=path: runner.invoke(app, ["profile", "show", "--path", str(p)]))["value"]
        assert result.exit_code == EXIT_FAILED and "not a regular file" in _output(result)
    with settings_env(pytest.MonkeyPatch(), {"HOME": str(home), "PROFILE_MAX_BYTES": "2048"}):
        big = tmp_path / "big.json"
        big.write_text(" " * 4096 + make_profile([]).to_json())
        with pytest.raises(xk.ProfileDamagedError, match="over the profile size limit of 2048"):
            xk.load_profile(big)


def _q_v(S: int = SHAPE["S"]):  # noqa: ANN202
    q = torch.zeros(SHAPE["B"], SHAPE["NH"], S, SHAPE["DHQK"])
    return q, torch.zeros(SHAPE["B"], SHAPE["NH"], S, SHAPE["DHV"])


ABSURD = {
    "huge-chunk": (xk.KernelConfig("chunkwise", chunk_size=10**9, t_inner=1), "far longer than the sequence"),
    "cuda-mode-on-cpu": (xk.KernelConfig("chunkwise", chunk_size=8, t_inner=1, compile_mode="reduce-overhead"),
                         "needs CUDA graphs"),
}


@pytest.mark.parametrize("case", list(ABSURD))
def test_absurd_but_valid_entry_falls_back_with_one_warning(home, case, inputs):
    cfg, words = ABSURD[case]
    xk.publish_profile(make_profile([entry(W_SHAPE, cfg)]))  # publication block: checksum recomputed
    q, v = _q_v()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            choice = xk.explain_config(q, q, v)
            assert (choice.source, choice.config) == ("rejected-entry", xk.DEFAULT_CONFIG)
        assert xk.profiles.runtime.config_for(q[:1], v[:1]) == xk.DEFAULT_CONFIG  # same entry (nearest): no new warning
        if case == "huge-chunk":
            h, (c, n, m) = xk.mlstm(*inputs)  # runs (the default config), no 10**9-step allocation
            h_def, _ = xk.mlstm(*inputs, config=xk.DEFAULT_CONFIG)
            assert torch.equal(h, h_def)
    got = [w for w in record if issubclass(w.category, xk.ProfileWarning)]
    assert len(got) == 1 and words in str(got[0].message) and "default config" in str(got[0].message), \
        [str(w.message) for w in got]


def test_entry_over_memory_limit_falls_back(home):
    cfg = xk.KernelConfig("chunkwise", chunk_size=256, t_inner=1)  # valid, but more memory than the default's
    xk.publish_profile(make_profile([entry(W_SHAPE, cfg)]))
    q, v = _q_v()
    assert xk.explain_config(q, q, v).source == "exact"
    with settings_env(pytest.MonkeyPatch(), {"HOME": str(home), "DEVICE": "cpu", "MEMORY_LIMIT_BYTES": "4096"}):
        with pytest.warns(xk.ProfileWarning, match="over the memory limit"):
            assert xk.explain_config(q, q, v).source == "rejected-entry"


def test_unsigned_profile_warns_once_or_is_refused(home):
    path = xk.profiles.profile.default_profile_path()
    path.parent.mkdir(parents=True)
    path.write_text(make_profile([entry(W_SHAPE, CONFIGS["rec_t1"])]).to_json())  # no publication block
    q, v = _q_v()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert xk.explain_config(q, q, v).config == CONFIGS["rec_t1"]
        xk.explain_config(q[:1], q[:1], v[:1])
    got = [str(w.message) for w in record if issubclass(w.category, xk.ProfileWarning)]
    assert len(got) == 1 and "unsigned" in got[0], got
    with settings_env(pytest.MonkeyPatch(), {"HOME": str(home), "DEVICE": "cpu", "REQUIRE_SIGNED_PROFILE": "true"}):
        with pytest.warns(xk.ProfileWarning, match="unsigned.*require_signed_profile"):
            choice = xk.explain_config(q, q, v)
        assert (choice.source, choice.config) == ("rejected-profile", xk.DEFAULT_CONFIG)


# -- memory refusal and the heads_per_band rule: one message, one exit code -------------------------

HUGE_S = "1,2,10000000000,16,16,float32"  # ~2 TB of inputs: over any machine's limit, nothing allocated
HUGE_DH = "1,1,64,200000,200000,float32"  # 160 GB per state: over the limit even for one probe tile


def test_memory_refusal_for_tune_bench_probe(home):
    small = "1,4,64,16,16,float32"
    commands = {
        "bench": ["bench", "-w", HUGE_S],
        "probe": ["probe", "-w", HUGE_DH, "--in-process"],
        "tune": ["tune", "-w", small, "-w", HUGE_S, "--no-server"],
    }
    for name, args in commands.items():
        result = runner.invoke(app, args)
        out = _output(result)
        assert result.exit_code == EXIT_TOO_LARGE, (name, out)
        assert "GiB" in out and "over the limit of" in out and "nothing was allocated" in out and "Traceback" not in out
    assert sorted(p.name for p in home.iterdir()) == []  # tune refused before the lock, DB or Prefect
    with settings_env(pytest.MonkeyPatch(), {"HOME": str(home), "MEMORY_LIMIT_BYTES": "1000"}):
        result = runner.invoke(app, ["bench", "-w", small])
        assert result.exit_code == EXIT_TOO_LARGE and "over the limit of 0.00 GiB" in _output(result)


def test_heads_per_band_rule_one_exit_code(home):
    cases = {
        "probe": ["probe", "-w", "1,4,16,8,8,float32", "--heads-per-band", "3", "--in-process"],
        "bench": ["bench", "-w", "1,4,16,8,8,float32", "--config", '{"heads_per_band": 3}'],
        "tune": ["tune", "-w", "1,3,16,8,8,float32", "--no-server"],  # NARROW_ENV: heads_per_band [2]
    }
    for name, args in cases.items():
        result = runner.invoke(app, args)
        out = _output(result)
        assert result.exit_code == EXIT_USAGE and "heads_per_band" in out and "NH" in out, (name, out)
    assert sorted(p.name for p in home.iterdir()) == []


# -- a read-only home: clear messages, documented exit code -----------------------------------------


_DRIVER = """
import json, sys
from typer.testing import CliRunner
from flows.cli import app
out = {}
for name, args in json.loads(sys.argv[1]).items():
    r = CliRunner().invoke(app, args)
    out[name] = [r.exit_code, r.output + (r.stderr if r.stderr_bytes is not None else ""), repr(r.exception)]
print(json.dumps(out))
"""


def _cli_read_only(home: Path, commands: dict[str, list[str]]) -> dict[str, list]:
    """Run CLI commands (one process) with ``home`` read-only: chmod for a normal user, a read-only
    bind mount for root (root ignores permission bits). Returns name -> [exit code, output, exception]."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "XLSTM_AUTOTUNE_HOME": str(home), "XLSTM_AUTOTUNE_DEVICE": "cpu"}
    cmd = [sys.executable, "-c", _DRIVER, json.dumps(commands)]
    modes = {p: p.stat().st_mode for p in (home, *home.rglob("*")) if p.is_dir()}
    if os.geteuid() == 0:
        mount = f"mount --bind '{home}' '{home}' && mount -o remount,bind,ro '{home}' && exec \"$@\""
        cmd = ["unshare", "-m", "sh", "-c", mount, "sh", *cmd]
    else:
        for p in modes:
            p.chmod(0o555)
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    if os.geteuid() == 0 and done.returncode != 0 and done.stderr.startswith(("unshare:", "mount:")):
        pytest.skip(f"root without mount namespaces cannot make a read-only home: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_read_only_home(home, tmp_path):
    import storage

    src = tmp_path / "src.json"
    src.write_text(make_profile([entry(W_SHAPE, CONFIGS["rec_t1"])]).to_json())
    for _ in range(2):  # two versions, so that a rollback has something to do
        assert runner.invoke(app, ["profile", "publish", str(src)]).exit_code == EXIT_OK
    before = _tree(home)
    runs = _cli_read_only(home, {
        "best": ["best", "-w", W_SHAPE],
        "publish": ["profile", "publish", str(src)],
        "rollback": ["profile", "rollback"],
        "tune": ["tune", "-w", W_SHAPE, "--no-server"],
    })
    code, out, _exc = runs.pop("best")
    assert code == EXIT_FAILED and "no tuned config" in out, out  # the truth, not "not an SQLite database"
    for name, (code, out, exc) in runs.items():
        assert code == EXIT_UNWRITABLE, (name, code, out, exc)
        assert "read-only" in out and "Traceback" not in out and exc.startswith("SystemExit"), (name, out, exc)
    assert _tree(home) == before
    assert storage.TuningDB(home / "tuning.db").schema_version == storage.SCHEMA_VERSION  # still a good DB


# -- NaN / Inf in q, k, v (docs/hardening.md states this) --------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("where", ["q", "k", "v"])
def test_nan_in_qkv_lands_where_the_reference_puts_it(where, value):
    args = list(make_inputs(**SHAPE))
    t = 5  # step of the bad value; chunk_t1's chunks are 8 steps: steps 0..7 share a chunk
    args["qkv".index(where)][0, 1, t, 3] = value
    bad = lambda x: ~torch.isfinite(x)  # noqa: E731
    ref = xk.mlstm_reference(*args)
    rec = xk.mlstm(*args, config=CONFIGS["rec_t1"])
    chunk = xk.mlstm(*args, config=CONFIGS["chunk_t1"])
    ref_bad = bad(ref[0])
    assert ref_bad.any() and not ref_bad[:, :, :t].any()  # the reference: from step t on, never before
    assert torch.equal(bad(rec[0]), ref_bad)  # recurrent: exactly where the reference puts it
    for ours in (rec, chunk):  # final states: exactly the reference's non-finite entries
        assert all(torch.equal(bad(a), bad(b)) for a, b in zip(ours[1], ref[1]))
    extra = bad(chunk[0]) & ~ref_bad
    assert torch.equal(bad(chunk[0]) | ref_bad, bad(chunk[0]))  # chunkwise: at least the reference's
    if where == "q":
        assert not extra.any()
    else:  # k/v: 0 * NaN in the masked intra-chunk matmul also poisons the chunk's earlier steps, no others
        assert extra[0, 1, :t].any()
        extra[0, 1, :8] = False
        assert not extra.any()


# -- after kill -9 of tune: its temporary Prefect server is stopped by the next start --------------


def _fake_server(port: int, app_name: str = "prefect.server.api.server:create_app") -> subprocess.Popen:
    """A process whose command line is that of Prefect's temporary server (it only sleeps)."""
    code = "import time; time.sleep(120)"
    return subprocess.Popen([sys.executable, "-c", code, "-m", "uvicorn", "--factory", app_name, "--port", str(port)])


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="orphan identification reads Linux /proc")
def test_orphaned_temporary_server_is_stopped_only_when_proven_ours(home):
    from flows.server import EPHEMERAL_FILE, _proc_start, cleanup_orphaned_server

    def record(pid: int, port: int, owner: int) -> None:
        (home / EPHEMERAL_FILE).write_text(json.dumps({"pid": pid, "port": port, "start": _proc_start(pid),
                                                      "owner": owner, "owner_start": _proc_start(owner)}))

    orphan, other_app, alive_owner = _fake_server(4301), _fake_server(4302, "myapp:create_app"), _fake_server(4303)
    try:
        record(alive_owner.pid, 4303, os.getpid())  # its tune (this process) is alive: left alone
        assert cleanup_orphaned_server(home) is None and alive_owner.poll() is None
        record(other_app.pid, 4302, _dead_pid())  # owner gone, but not Prefect's server: left alone
        assert cleanup_orphaned_server(home) is None and other_app.poll() is None
        assert not (home / EPHEMERAL_FILE).exists()  # the stale record is dropped
        record(orphan.pid, 4301, _dead_pid())  # owner killed, Prefect's server on the recorded port: stopped
        assert cleanup_orphaned_server(home) == orphan.pid
        assert orphan.wait(timeout=10) is not None
    finally:
        for p in (orphan, other_app, alive_owner):
            p.kill()
            p.wait()
