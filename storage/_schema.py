"""Schema of the tuning database and its migrations.

The schema version lives in SQLite's ``PRAGMA user_version``. ``MIGRATIONS[n]`` takes a database
from version ``n`` to ``n + 1``; all pending ones run in one ``BEGIN IMMEDIATE`` transaction, so a
crash mid-migration leaves the previous version intact. A file with a larger version than
``SCHEMA_VERSION`` is refused (``SchemaTooNew``), never downgraded.

Tables
------
machines   one row per machine fingerprint (``id`` = ``Fingerprint.machine_id``)
runs       one tuning run: status running | completed | interrupted | failed, pid/host, heartbeat
workloads  one row per distinct workload spec ``B,NH,S,DHQK,DHV,dtype,mode``
trials     every evaluated candidate: requested and effective config, status ok | rejected | failed
           with its reason, compile_s apart from the steady-state median_ms / spread_ms, tokens/s,
           equivalence error, and the shape it was validated on
results    the winner per (run, workload) after the side-by-side re-timing, with the default's time
probes     compile-probe outcomes (T_inner requested vs. effective, error), so known failures repeat never;
           ``target`` NULL: the machine's own device, "mps": a Metal probe (a plan for a Mac, made on
           any machine from generated Metal source, or a Mac's real compile); ``detail_json`` the
           whole ``ProbeResult`` where the prober stored it
profiles   published profile versions (path, checksum, provenance run)
model_trials   every evaluated model candidate (v3): ModelRunConfig, status with its reason, logits
               error and greedy-token match against the eager float32 model, TTFT and decode times
model_results  the winner per (run, model workload) after the side-by-side re-timing (v3)
"""

from __future__ import annotations

SCHEMA_VERSION = 4

_V1 = [
    """CREATE TABLE machines (
        id TEXT PRIMARY KEY,
        cpu TEXT NOT NULL,
        device_type TEXT NOT NULL,
        device_name TEXT NOT NULL,
        os TEXT NOT NULL,
        machine TEXT NOT NULL,
        python TEXT NOT NULL,
        torch TEXT NOT NULL,
        triton TEXT,
        memory_gb REAL NOT NULL,
        device_count INTEGER NOT NULL,
        fingerprint_json TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL
    )""",
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        machine_id TEXT NOT NULL REFERENCES machines(id),
        status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'interrupted', 'failed')),
        quick INTEGER NOT NULL DEFAULT 0,
        device TEXT NOT NULL,
        torch TEXT NOT NULL,
        triton TEXT,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        started_at TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL,
        finished_at TEXT,
        error TEXT,
        settings_json TEXT
    )""",
    """CREATE TABLE workloads (
        id INTEGER PRIMARY KEY,
        spec TEXT NOT NULL UNIQUE,
        B INTEGER NOT NULL, NH INTEGER NOT NULL, S INTEGER NOT NULL,
        DHQK INTEGER NOT NULL, DHV INTEGER NOT NULL,
        dtype TEXT NOT NULL, mode TEXT NOT NULL
    )""",
    """CREATE TABLE trials (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        workload_id INTEGER NOT NULL REFERENCES workloads(id),
        machine_id TEXT NOT NULL REFERENCES machines(id),
        study_name TEXT,
        trial_number INTEGER,
        config_json TEXT NOT NULL,
        effective_json TEXT NOT NULL,
        config_key TEXT NOT NULL,
        t_inner_effective INTEGER,
        is_default INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL CHECK (status IN ('ok', 'rejected', 'failed')),
        reason TEXT,
        compile_s REAL,
        validate_s REAL,
        equivalence_error REAL,
        tolerance REAL,
        validation_shape TEXT,
        median_ms REAL,
        spread_ms REAL,
        min_ms REAL,
        repeats INTEGER,
        tokens_per_s REAL,
        created_at TEXT NOT NULL,
        CHECK (status = 'ok' OR median_ms IS NULL)
    )""",
    "CREATE INDEX trials_lookup ON trials (machine_id, workload_id, status)",
    """CREATE TABLE results (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        workload_id INTEGER NOT NULL REFERENCES workloads(id),
        machine_id TEXT NOT NULL REFERENCES machines(id),
        trial_id INTEGER REFERENCES trials(id),
        config_json TEXT NOT NULL,
        config_key TEXT NOT NULL,
        t_inner_effective INTEGER,
        median_ms REAL NOT NULL,
        spread_ms REAL NOT NULL,
        tokens_per_s REAL NOT NULL,
        default_median_ms REAL,
        speedup REAL,
        equivalence_error REAL NOT NULL,
        compile_s REAL,
        n_trials INTEGER NOT NULL,
        n_rejected INTEGER NOT NULL,
        n_failed INTEGER NOT NULL,
        retime_json TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (run_id, workload_id)
    )""",
    """CREATE TABLE probes (
        id INTEGER PRIMARY KEY,
        machine_id TEXT NOT NULL REFERENCES machines(id),
        torch TEXT NOT NULL,
        compile_key TEXT NOT NULL,
        config_json TEXT NOT NULL,
        t_inner_requested INTEGER NOT NULL,
        t_inner_effective INTEGER,
        ok INTEGER NOT NULL,
        error TEXT,
        compile_s REAL,
        max_buffers INTEGER,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX probes_lookup ON probes (machine_id, torch, compile_key)",
    """CREATE TABLE profiles (
        id INTEGER PRIMARY KEY,
        machine_id TEXT NOT NULL REFERENCES machines(id),
        version INTEGER NOT NULL,
        path TEXT NOT NULL,
        checksum TEXT NOT NULL,
        run_id INTEGER REFERENCES runs(id),
        created_at TEXT NOT NULL,
        UNIQUE (machine_id, version)
    )""",
]

_V2 = [  # probe outcomes per target (issue 21: Metal plans made off-Mac)
    "ALTER TABLE probes ADD COLUMN target TEXT",
    "ALTER TABLE probes ADD COLUMN detail_json TEXT",
    "CREATE INDEX probes_target ON probes (torch, target, compile_key)",
]

# v3: model workloads (``model:<key>,B,S,dtype``, tuner/_model_study.py). Their candidates are
# ModelRunConfigs timed as TTFT + decode steps, so they get tables of their own: the kernel trials'
# readers (best, reports) parse config_json as a KernelConfig.
_V3 = [
    """CREATE TABLE model_trials (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        machine_id TEXT NOT NULL REFERENCES machines(id),
        workload TEXT NOT NULL,
        model_key TEXT NOT NULL,
        B INTEGER NOT NULL, S INTEGER NOT NULL, dtype TEXT NOT NULL,
        model_json TEXT NOT NULL,
        study_name TEXT,
        trial_number INTEGER,
        config_json TEXT NOT NULL,
        is_default INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL CHECK (status IN ('ok', 'rejected', 'failed')),
        reason TEXT,
        compile_s REAL,
        validate_s REAL,
        logits_error REAL,
        tolerance REAL,
        greedy_match INTEGER,
        ttft_ms REAL,
        ttft_spread_ms REAL,
        decode_ms REAL,
        decode_spread_ms REAL,
        decode_tokens_per_s REAL,
        decode_steps INTEGER,
        objective_ms REAL,
        repeats INTEGER,
        created_at TEXT NOT NULL,
        CHECK (status = 'ok' OR objective_ms IS NULL)
    )""",
    "CREATE INDEX model_trials_lookup ON model_trials (machine_id, workload, status)",
    """CREATE TABLE model_results (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        machine_id TEXT NOT NULL REFERENCES machines(id),
        workload TEXT NOT NULL,
        trial_id INTEGER REFERENCES model_trials(id),
        config_json TEXT NOT NULL,
        ttft_ms REAL NOT NULL,
        decode_tokens_per_s REAL NOT NULL,
        objective_ms REAL NOT NULL,
        default_objective_ms REAL,
        speedup REAL,
        logits_error REAL NOT NULL,
        n_trials INTEGER NOT NULL,
        n_rejected INTEGER NOT NULL,
        n_failed INTEGER NOT NULL,
        retime_json TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (run_id, workload)
    )""",
]

# v4 (issue 16, trustworthy timing): a trial's samples that stayed unstable after re-measuring are
# marked (and never decide a winner), with the load seen while timing; a result carries the speedup's
# interval from fresh paired rounds and whether the run was trustworthy (``busy_reason`` if not).
_V4 = [
    "ALTER TABLE trials ADD COLUMN unstable INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE trials ADD COLUMN instability TEXT",
    "ALTER TABLE trials ADD COLUMN remeasures INTEGER",
    "ALTER TABLE trials ADD COLUMN load_avg REAL",
    "ALTER TABLE trials ADD COLUMN steal_fraction REAL",
    "ALTER TABLE results ADD COLUMN speedup_low REAL",
    "ALTER TABLE results ADD COLUMN speedup_high REAL",
    "ALTER TABLE results ADD COLUMN speedup_confidence REAL",
    "ALTER TABLE results ADD COLUMN trusted INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE results ADD COLUMN busy_reason TEXT",
]

MIGRATIONS: list[list[str]] = [_V1, _V2, _V3, _V4]
TABLES = ("machines", "runs", "workloads", "trials", "results", "probes", "profiles",
          "model_trials", "model_results")
assert len(MIGRATIONS) == SCHEMA_VERSION
