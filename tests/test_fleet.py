"""Fleet mode: machine classes, masked credentials, claims of candidates, the embedded default; and on
REAL servers (PostgreSQL started here, a ``prefect server`` on it, ``xlstm-autotune worker`` processes):
two workers of one class share one study, and a worker SIGKILLed mid-trial leaves no RUNNING trial.

The server tests are marked ``fleet`` (deselect with ``-m "not fleet"``). They tune ``flow_helpers``'s
two-candidate space of ``tests/test_tuner.py``'s workload: no new compile keys. Trials are made long
with ``tune_repeats``/``tune_trial_budget_s`` (settings), so that each worker is mid-trial when the
other looks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

import tuner
import xlstm_kernels as xk
from flows.cli import app
from storage import open_db
from tuner._fleet import claim_of
from xlstm_kernels.profiles.fingerprint import Fingerprint, machine_class, os_major
from tuner.settings import TunerSettings, mask_url

from flow_helpers import GOOD, NARROW_ENV
from fleet_servers import PG_PASSWORD, pg_bindir, postgres, prefect_server, wait_for

ROOT = Path(__file__).resolve().parents[1]
FP = Fingerprint(cpu="Apple M2 Max", device_type="mps", device_name="Apple M2 Max", os="Darwin 23.4.0",
                 machine="arm64", python="3.12.1", torch="2.13.0", triton=None, memory_gb=32.0, device_count=1)


# -- pieces, no servers ------------------------------------------------------------------------------

def test_machine_class_groups_comparable_machines():
    same = [FP.__class__(**{**FP.__dict__, **change}) for change in (
        {"python": "3.12.7"}, {"os": "Darwin 23.6.0"}, {"memory_gb": 31.9})]
    other = [FP.__class__(**{**FP.__dict__, **change}) for change in (
        {"torch": "2.14.0"}, {"cpu": "Apple M3 Max", "device_name": "Apple M3 Max"}, {"memory_gb": 64.0},
        {"os": "Darwin 24.0.0"}, {"device_type": "cpu"}, {"triton": "3.4.0"})]
    assert {machine_class(f) for f in same} == {machine_class(FP)}
    assert len({machine_class(f) for f in other} | {machine_class(FP)}) == len(other) + 1
    assert machine_class(FP).startswith("mps-") and os_major("Linux 6.8.0-45-generic") == "Linux 6"


def test_credentials_are_masked_in_dumped_settings():
    url = "postgresql+psycopg://fleet:p@ss/w0rd@10.0.0.5:5432/optuna"
    assert mask_url(url) == "postgresql+psycopg://fleet:***@10.0.0.5:5432/optuna"
    dumped = json.dumps(TunerSettings(optuna_storage=url).model_dump(mode="json"))  # what a run row stores
    assert "w0rd" not in dumped and "fleet:***@10.0.0.5" in dumped
    assert mask_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_fleet_mode_needs_a_shared_storage(tmp_path):
    with open_db(tmp_path / "t.db") as db:
        with pytest.raises(tuner.FleetMisconfigured, match="XLSTM_AUTOTUNE_OPTUNA_STORAGE"):
            tuner.optuna_storage(db, TunerSettings(fleet=True))
        with pytest.raises(tuner.FleetStorageUnavailable) as err:
            tuner.optuna_storage(db, TunerSettings(fleet=True, optuna_storage="postgresql+psycopg://u:topsecret@127.0.0.1:1/x"))
    assert "topsecret" not in str(err.value) and "u:***@" in str(err.value)


def _t(number: int, state: TrialState, key: str, **attrs) -> optuna.trial.FrozenTrial:
    t = create_trial(state=state, value=1.0 if state == TrialState.COMPLETE else None,
                     user_attrs={"config_key": key, **attrs})
    t.number = number
    return t


def test_claim_is_the_lowest_live_trial_of_a_candidate():
    key_of = lambda t: t.user_attrs.get("config_key")  # noqa: E731
    trials = [_t(0, TrialState.FAIL, "x"),  # abandoned by a dead machine: no status, not a claim
              _t(1, TrialState.RUNNING, "y", duplicate_of=0),  # a duplicate never claims
              _t(2, TrialState.RUNNING, "x"), _t(3, TrialState.WAITING, "x"),
              _t(4, TrialState.FAIL, "z", status="failed"), _t(5, TrialState.COMPLETE, "y")]
    assert claim_of(trials, 3, "x", key_of).number == 2
    assert claim_of(trials, 2, "x", key_of) is None  # the lowest live trial owns its candidate
    assert claim_of(trials, 6, "z", key_of).number == 4  # a real failure is not retried by others
    assert claim_of(trials, 5, "y", key_of) is None and claim_of(trials, 9, "y", key_of).number == 5


def test_embedded_default_still_works_without_servers(tmp_path, monkeypatch):
    """Fleet mode off: SQLite beside the DB, no heartbeat, studies named after the machine."""
    for k, v in NARROW_ENV.items():
        monkeypatch.setenv(f"XLSTM_AUTOTUNE_{k}", v)
    monkeypatch.delenv("XLSTM_AUTOTUNE_OPTUNA_STORAGE", raising=False)
    xk.reset_settings()
    try:
        res = tuner.tune_workload(GOOD, db=tmp_path / "t.db", device="cpu")
        with open_db(tmp_path / "t.db") as db:
            storage = tuner.optuna_storage(db, tuner.get_tuner_settings())
    finally:
        xk.reset_settings()
    assert res.winner is not None and res.study_name.startswith(xk.fingerprint("cpu").machine_id + "/")
    assert storage.get_heartbeat_interval() is None and str(storage.engine.url).startswith("sqlite")
    trials = optuna.load_study(study_name=res.study_name, storage=storage).get_trials()
    assert {t.user_attrs["node"] for t in trials} == {tuner.node_name(tuner.get_tuner_settings())}


# -- real servers --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def servers():
    """PostgreSQL (databases optuna, prefect) and a Prefect server on it, both on 127.0.0.1."""
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    with postgres(bindir) as pg, prefect_server(pg, Path(tempfile.mkdtemp(prefix="xlstm-prefect-"))) as api:
        yield pg, api


class Fleet:
    """Worker processes of one fleet namespace; each node has its own HOME (its own DB and profile)."""

    def __init__(self, servers, name: str, tmp: Path) -> None:
        self.pg, self.api = servers
        self.name, self.tmp = name, tmp
        self.procs: dict[str, subprocess.Popen] = {}

    def env(self, node: str, **extra: str) -> dict[str, str]:
        env = dict(os.environ, PREFECT_API_URL=self.api, PREFECT_WORKER_QUERY_SECONDS="1",
                   PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        env.pop("PREFECT_API_KEY", None)
        settings = {**NARROW_ENV, "FLEET": "true", "OPTUNA_STORAGE": self.pg.url("optuna"), "FLEET_NAME": self.name,
                    "FLEET_NODE": node, "HOME": str(self.tmp / node), "DEVICE": "cpu", "WORKLOADS": json.dumps([GOOD]),
                    "FLEET_HEARTBEAT_S": "1", "FLEET_GRACE_S": "4", "FLEET_POLL_S": "1", **extra}
        env.update({f"XLSTM_AUTOTUNE_{k}": v for k, v in settings.items()})
        return env

    def start(self, node: str, wait: bool = True, **extra: str) -> None:
        """Start ``xlstm-autotune worker`` as machine ``node``; with ``wait``, until it polls its pool."""
        with open(self.tmp / f"{node}.log", "wb") as log:
            self.procs[node] = subprocess.Popen([sys.executable, "-m", "flows.cli", "worker"], cwd=ROOT,
                                                env=self.env(node, **extra), stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        if wait:
            self.wait_started(node)

    def wait_started(self, node: str) -> None:
        wait_for(lambda: b"started!" in (self.tmp / f"{node}.log").read_bytes() or self._dead(node), 120,
                 f"worker {node} to start")
        assert self.procs[node].poll() is None, self.log(node)

    def _dead(self, node: str) -> bool:
        return self.procs[node].poll() is not None

    def log(self, node: str) -> str:
        return (self.tmp / f"{node}.log").read_text(errors="replace")[-4000:]

    def submit(self, runs: int) -> list[str]:
        """``xlstm-autotune fleet submit`` (in process) for this machine's class."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        env = {k: v for k, v in self.env("submitter").items() if k.startswith("XLSTM_AUTOTUNE_")}
        with temporary_settings(updates={PREFECT_API_URL: self.api}):
            out = CliRunner().invoke(app, ["fleet", "submit", "--runs", str(runs), "--json"], env=env)
        assert out.exit_code == 0, out.output
        return json.loads(out.output)["flow_runs"]

    def state(self, run_id: str) -> str:
        import httpx

        return httpx.get(f"{self.api}/flow_runs/{run_id}", timeout=10).json()["state"]["type"]

    def wait_done(self, run_ids: list[str], timeout_s: float = 300) -> None:
        final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
        states = wait_for(lambda: (s := [self.state(r) for r in run_ids]) and all(x in final for x in s) and s,
                          timeout_s, f"flow runs {run_ids}", interval_s=2)
        assert states == ["COMPLETED"] * len(run_ids), (states, {n: self.log(n) for n in self.procs})

    def study(self) -> optuna.Study:
        storage = optuna.storages.RDBStorage(self.pg.url("optuna"))
        names = [n for n in optuna.get_all_study_names(storage) if n.startswith(f"fleet/{self.name}/")]
        assert len(names) == 1, names
        return optuna.load_study(study_name=names[0], storage=storage)

    def kill(self, node: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(node)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=60)

    def close(self) -> None:
        for node in list(self.procs):
            self.kill(node)


@pytest.fixture()
def fleet_of(servers, tmp_path):
    made = []

    def make(name: str) -> Fleet:
        made.append(Fleet(servers, name, tmp_path))
        return made[-1]

    yield make
    for f in made:
        f.close()


def _evaluated(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if "status" in t.user_attrs and t.user_attrs.get("duplicate_of") is None]


def _profile(home: Path) -> dict:
    return json.loads((home / "profiles" / f"{xk.fingerprint('cpu').machine_id}.json").read_text())


@pytest.mark.fleet
def test_two_workers_share_one_study(fleet_of):
    fleet = fleet_of("share")
    slow = dict(TUNE_REPEATS="100000", TUNE_TRIAL_BUDGET_S="3")  # each trial ~3 s: both workers get one
    fleet.start("node-a", wait=False, **slow)
    fleet.start("node-b", **slow)
    fleet.wait_started("node-a")
    fleet.wait_done(fleet.submit(2))
    study = fleet.study()
    evaluated = _evaluated(study)
    keys = Counter(t.user_attrs["config_key"] for t in evaluated)
    assert len(keys) == 2 and set(keys.values()) == {1}, keys  # the space, each candidate exactly once
    assert {t.user_attrs["node"] for t in evaluated} == {"node-a", "node-b"}  # both timed a candidate
    assert not [t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    klass = xk.machine_class(xk.fingerprint("cpu"))
    assert study.study_name.startswith(f"fleet/share/{klass}/{GOOD}/")
    for node in ("node-a", "node-b"):  # each machine re-timed the class winners and published its own profile
        home = fleet.tmp / node
        entry = _profile(home)["entries"]
        assert len(entry) == 1
        with open_db(home / "tuning.db") as db:
            mine = [t for t in db.trials() if t["study_name"] == study.study_name]
            assert len(mine) == sum(t.user_attrs["node"] == node for t in evaluated)
            assert PG_PASSWORD not in json.dumps(db.runs())  # the storage URL is stored masked
    out = CliRunner().invoke(app, ["fleet", "--json"], env={"XLSTM_AUTOTUNE_OPTUNA_STORAGE": fleet.pg.url("optuna")})
    assert out.exit_code == 0, out.output
    rows = [r for r in json.loads(out.output) if r["fleet"] == "share"]
    best = min(evaluated, key=lambda t: t.value if t.user_attrs["status"] == "ok" else float("inf"))
    assert [(r["machine_class"], r["workload"], r["node"], r["median_ms"]) for r in rows] == [
        (klass, GOOD, best.user_attrs["node"], best.value)]
    assert rows[0]["nodes"] == ["node-a", "node-b"]


@pytest.mark.fleet
def test_killed_worker_trial_is_failed_and_retried(fleet_of):
    fleet = fleet_of("kill")
    fleet.start("node-b", TUNE_REPEATS="1000000", TUNE_TRIAL_BUDGET_S="300")  # its trial outlives the test
    fleet.submit(1)
    wait_for(lambda: b"submitted to infrastructure" in (fleet.tmp / "node-b.log").read_bytes(), 60, "node-b's run")
    fleet.start("node-a", wait=False, TUNE_REPEATS="8", TUNE_TRIAL_BUDGET_S="2")  # starts while node-b works

    def running_b():
        trials = fleet.study().get_trials() if _has_study(fleet) else []
        return [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("node") == "node-b"
                and "config_key" in t.user_attrs]

    victim = wait_for(running_b, 240, "node-b to be mid-trial", interval_s=1)[0]
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)  # the process timing the trial
    fleet.kill("node-b", signal.SIGKILL)  # and its worker: the machine is gone
    fleet.wait_started("node-a")
    fleet.wait_done(fleet.submit(1))
    study = fleet.study()
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL  # failed by its stale heartbeat, not left RUNNING
    assert not [t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    evaluated = _evaluated(study)
    keys = Counter(t.user_attrs["config_key"] for t in evaluated)
    assert len(keys) == 2 and set(keys.values()) == {1} and victim.user_attrs["config_key"] in keys
    assert {t.user_attrs["node"] for t in evaluated} == {"node-a"}
    assert len(_profile(fleet.tmp / "node-a")["entries"]) == 1


def _has_study(fleet: Fleet) -> bool:
    storage = optuna.storages.RDBStorage(fleet.pg.url("optuna"))
    return any(n.startswith(f"fleet/{fleet.name}/") for n in optuna.get_all_study_names(storage))
