"""Profiles on disk: model validation, atomic versioned publish, list, rollback, every rejection."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import xlstm_kernels as xk
from profile_fixtures import entry, home, make_profile  # noqa: F401 - fixture
from xlstm_kernels.profiles.profile import check_profile_matches, parse_profile, version_path

CFG_A = xk.KernelConfig("recurrent", chunk_size=8, t_inner=4, heads_per_band=2)
CFG_B = xk.KernelConfig("chunkwise", chunk_size=8, t_inner=1)
ENTRIES = [
    entry("2,4,37,16,32,float32,prefill", CFG_A, requested=8),
    entry("1,4,1,16,32,float32,decode", CFG_B),
]


def test_round_trip_publish_load_same_configs(home):
    profile = make_profile(ENTRIES)
    result = xk.publish_profile(profile)
    assert result.path == home / "profiles" / f"{xk.fingerprint('cpu').machine_id}.json"
    assert result.version == 1 and result.checksum == profile.body_checksum()
    loaded = xk.load_profile()
    assert [e.kernel_config for e in loaded.entries] == [CFG_A, CFG_B]
    assert loaded.entries[0].t_inner_requested == 8 and loaded.entries[0].t_inner_effective == 4
    assert loaded.publication.version == 1 and loaded.publication.checksum == result.checksum
    assert loaded.model_dump(exclude={"publication"}) == profile.model_dump(exclude={"publication"})
    check_profile_matches(loaded, xk.fingerprint("cpu"))  # ours: no exception


def test_versions_are_kept_and_rollback(home):
    p1 = xk.publish_profile(make_profile(ENTRIES[:1]))
    p2 = xk.publish_profile(make_profile(ENTRIES))
    assert (p1.version, p2.version) == (1, 2)
    assert version_path(p1.path, 1).exists() and version_path(p1.path, 2).exists()
    versions = xk.list_profile_versions()
    assert [(v.version, v.entries, v.current) for v in versions] == [(1, 1, False), (2, 2, True)]
    back = xk.rollback_profile()
    assert back.version == 1 and back.checksum == p1.checksum
    assert len(xk.load_profile().entries) == 1
    assert [v.current for v in xk.list_profile_versions()] == [True, False]
    with pytest.raises(xk.ProfileNotFoundError, match="no version older"):
        xk.rollback_profile()
    assert xk.rollback_profile(2).version == 2
    assert xk.publish_profile(make_profile(ENTRIES)).version == 3  # numbering continues
    with pytest.raises(xk.ProfileNotFoundError, match="no version 9"):
        xk.rollback_profile(9)


def test_publish_goes_to_the_profiles_machine_file_and_setting_overrides(home, monkeypatch):
    foreign = make_profile(ENTRIES, cpu="Some Other CPU")
    res = xk.publish_profile(foreign)
    assert res.path.name == f"{foreign.machine_id}.json" and foreign.machine_id != xk.fingerprint("cpu").machine_id
    elsewhere = home / "elsewhere" / "mine.json"
    monkeypatch.setenv("XLSTM_AUTOTUNE_PROFILE_PATH", str(elsewhere))
    xk.reset_settings()
    assert xk.default_profile_path() == elsewhere
    assert xk.publish_profile(make_profile(ENTRIES)).path == elsewhere
    assert (home / "elsewhere" / "mine.v1.json").exists()


def test_atomic_publish_under_concurrent_reader(home):
    small, big = make_profile(ENTRIES[:1]), make_profile(ENTRIES)
    path = xk.publish_profile(small).path
    errors: list[Exception] = []
    seen: set[int] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(len(xk.load_profile(path).entries))  # validates JSON and checksum
            except Exception as exc:  # noqa: BLE001 - any failure is the test's finding
                errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for n in range(60):
            xk.publish_profile(big if n % 2 else small, path)
    finally:
        stop.set()
        t.join()
    assert not errors, errors[:3]
    assert seen == {1, 2}
    assert not list(path.parent.glob("*.tmp")), "temp files must not stay behind"
    assert xk.list_profile_versions(path)[-1].version == 61


def test_publish_from_json_file_roundtrip(home, tmp_path):
    src = tmp_path / "from_tuner.json"
    src.write_text(make_profile(ENTRIES).to_json())
    res = xk.publish_profile(parse_profile(src.read_text(), str(src)))
    assert res.version == 1 and xk.load_profile().entries[1].workload == "1,4,1,16,32,float32,decode"


@pytest.mark.parametrize(
    "damage, error, words",
    [
        (lambda text: text[: len(text) // 2], xk.ProfileDamagedError, "not valid JSON"),
        (lambda text: "{not json", xk.ProfileDamagedError, "not valid JSON"),
        (lambda text: "[1, 2]", xk.ProfileDamagedError, "JSON object"),
        (lambda text: text.replace('"schema_version": 1', '"schema_version": 99'), xk.ProfileSchemaError,
         "schema_version 99"),
        (lambda text: text.replace('"t_inner_effective": 4', '"t_inner_effective": 5'), xk.ProfileDamagedError,
         "invalid profile"),
        (lambda text: text.replace('"median_s": 0.001', '"median_s": 0.002', 1), xk.ProfileDamagedError,
         "checksum mismatch"),
        (lambda text: text.replace('"family": "recurrent"', '"family": "warp"'), xk.ProfileDamagedError,
         "invalid profile"),
    ],
    ids=["truncated", "bad-json", "not-object", "wrong-schema", "inconsistent", "tampered", "bad-config"],
)
def test_load_rejects_damage(home, damage, error, words):
    path = xk.publish_profile(make_profile(ENTRIES)).path
    path.write_text(damage(path.read_text()))
    with pytest.raises(error, match=words):
        xk.load_profile(path)


def test_missing_and_mismatch_errors(home):
    with pytest.raises(xk.ProfileNotFoundError):
        xk.load_profile(home / "nope.json")
    fp = xk.fingerprint("cpu")
    with pytest.raises(xk.ProfileMismatchError, match="another machine"):
        check_profile_matches(make_profile(ENTRIES, cpu="Other CPU"), fp)
    with pytest.raises(xk.ProfileMismatchError, match="stale.*torch 2.0.0"):
        check_profile_matches(make_profile(ENTRIES, torch="2.0.0"), fp)


def test_model_rejects_duplicate_workloads_and_bad_entries():
    with pytest.raises(ValueError, match="appears twice"):
        make_profile([ENTRIES[0], ENTRIES[0]])
    bad = dict(ENTRIES[0], workload="1,4,2,16,32,float32,decode")
    with pytest.raises(ValueError, match="decode workloads have S=1"):
        make_profile([bad])
    with pytest.raises(ValueError, match="unknown KernelConfig fields"):
        make_profile([dict(ENTRIES[0], config={**CFG_A.to_dict(), "warp": 1})])


def test_profile_json_is_plain_and_documented():
    data = json.loads(make_profile(ENTRIES).to_json())
    assert set(data) >= {"schema_version", "fingerprint", "torch", "triton", "created_at", "tuning_run", "entries"}
    assert set(data["entries"][0]) == {
        "workload", "config", "t_inner_requested", "t_inner_effective", "median_s", "tokens_per_s",
        "speedup_vs_default", "equivalence_error",
    }


def test_kernels_import_without_optuna_prefect_sqlite():
    code = (
        "import sys, xlstm_kernels, xlstm_kernels.profiles.profile, xlstm_kernels.profiles.runtime, xlstm_kernels.models.xlstm_adapter\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('optuna', 'prefect', 'sqlite_utils')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_cli_publish_show_list_rollback_path(home, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    src = tmp_path / "tuned.json"
    src.write_text(make_profile(ENTRIES).to_json())
    first = runner.invoke(app, ["profile", "publish", str(src)])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["version"] == 1
    src.write_text(make_profile(ENTRIES[:1]).to_json())
    assert json.loads(runner.invoke(app, ["profile", "publish", str(src)]).output)["version"] == 2
    path = runner.invoke(app, ["profile", "path"])
    assert path.output.strip() == str(home / "profiles" / f"{xk.fingerprint('cpu').machine_id}.json")
    listed = runner.invoke(app, ["profile", "list"]).output.splitlines()
    assert len(listed) == 2 and listed[1].startswith("* v2") and listed[0].startswith("  v1")
    show = runner.invoke(app, ["profile", "show"])
    assert show.exit_code == 0 and "this host  yes" in show.output and "2,4,37,16,32,float32,prefill" in show.output
    assert "recurrent L8 hpb2 T4 queued" in show.output and "   8/4" in show.output
    back = runner.invoke(app, ["profile", "rollback"])
    assert back.exit_code == 0 and json.loads(back.output)["version"] == 1
    assert json.loads(runner.invoke(app, ["profile", "show", "--json"]).output)["publication"]["version"] == 1
    src.write_text("{broken")
    bad = runner.invoke(app, ["profile", "publish", str(src)])
    assert bad.exit_code == 1 and "not valid JSON" in bad.output
    assert runner.invoke(app, ["profile", "rollback", "--to", "7"]).exit_code == 1
