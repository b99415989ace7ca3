"""From tuning results to a published profile: winner -> ``ProfileEntry`` -> ``Profile`` -> publish + record.

The glue between the tuner, ``xlstm_kernels.profiles.profile`` and the tuning DB, kept free of Prefect so the
flow's tasks stay one call each and all of it is tested without a server:

    entry = profile_entry(result)                       # NoWinner when nothing validated
    published = publish_entries(fp, [entry, ...], run_id=run_id, db=db)   # atomic, versioned, recorded
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from storage import TuningDB, using_db
from xlstm_kernels.profiles.fingerprint import Fingerprint
from xlstm_kernels.profiles.profile import (
    ModelProfileEntry,
    Profile,
    ProfileEntry,
    ProfileError,
    PublishResult,
    TuningRun,
    check_profile_matches,
    default_profile_path,
    load_profile,
    parse_profile,
    publish_profile,
    read_profile_text,
)

from ._errors import TunerError
from ._study import WorkloadResult
from .settings import TunerSettings


class NoWinner(TunerError):
    """A workload's study ended without a single validated candidate: nothing to publish for it."""


def profile_entry(result: WorkloadResult) -> ProfileEntry:
    """The profile entry of a tuned workload's winner (config carries the effective T_inner).

    ``speedup_vs_default`` is the median of the per-round default/winner ratios of fresh paired rounds,
    with its interval (``speedup_low``/``speedup_high``); when the default config did not validate (no
    paired time), the winner is its own baseline and 1.0 is recorded. A result of a busy machine carries
    its ``busy_reason`` (``build_profile`` then keeps an earlier published winner of the workload).
    """
    w = result.winner
    if w is None:
        mode = result.workload.mode
        reasons = "; ".join(f"{r.config.short(mode)}: {r.reason}" for r in result.rejected[:3]) or "no candidate ran"
        raise NoWinner(f"{result.workload}: no candidate validated ({len(result.rejected)} rejected/failed: {reasons})")
    effective = w.t_inner_effective or w.config.t_inner
    iv = result.speedup_interval if result.speedup_interval and result.speedup_interval.low else None
    return ProfileEntry(
        workload=str(result.workload),
        config=w.config.replace(t_inner=effective).to_dict(),
        t_inner_requested=max(w.config.t_inner, effective),
        t_inner_effective=effective,
        median_s=w.median_ms / 1e3,
        tokens_per_s=w.tokens_per_s,
        speedup_vs_default=result.speedup if result.speedup else 1.0,
        equivalence_error=w.equivalence_error,
        speedup_low=iv.low if iv else None,
        speedup_high=iv.high if iv else None,
        speedup_confidence=iv.confidence if iv else None,
        busy_reason=result.busy_reason,
    )


def build_profile(
    fingerprint: Fingerprint | dict[str, Any],
    entries: Sequence[ProfileEntry],
    *,
    run_id: int | None = None,
    started_at: datetime | None = None,
    previous: Profile | None = None,
    notes: str = "",
    model_entries: Sequence[ModelProfileEntry] = (),
) -> Profile:
    """A new profile for the machine ``fingerprint`` holding ``entries`` (and ``model_entries``).

    Entries of ``previous`` (the profile published before) for other workloads are carried over when
    it belongs to this machine and software stack, so tuning one workload does not drop the others
    (kernel and model entries alike). The busy rule: an entry measured on a busy machine
    (``busy_reason`` set) does not replace a trustworthy published winner of its workload (that one is
    kept); a new workload publishes, marked.
    """
    fp = fingerprint if isinstance(fingerprint, Fingerprint) else Fingerprint.from_dict(fingerprint)
    mine_models = {e.workload for e in model_entries}
    carried: list[ProfileEntry] = []
    carried_models: list[ModelProfileEntry] = []
    if previous is not None:
        try:
            check_profile_matches(previous, fp)
        except ProfileError:
            pass  # another machine or software: its timings do not carry over
        else:
            trusted = {e.workload: e for e in previous.entries if e.busy_reason is None}
            entries = [trusted.get(e.workload, e) if e.busy_reason is not None else e for e in entries]
            mine = {e.workload for e in entries}
            carried = [e for e in previous.entries if e.workload not in mine]
            carried_models = [e for e in previous.model_entries if e.workload not in mine_models]
    run = TuningRun(run_id=None if run_id is None else str(run_id), source="tuner", started_at=started_at, notes=notes)
    return Profile.for_machine(fp, [*entries, *carried], tuning_run=run,
                               model_entries=[*model_entries, *carried_models])


class ProfileRecordError(TunerError):
    """A published profile cannot be recorded in the tuning DB (version clash, incomplete fingerprint)."""


def record_published(result: PublishResult, fingerprint: Fingerprint | dict[str, Any], db: TuningDB,
                     run_id: int | None = None) -> int:
    """Record a published version (path, version, checksum, provenance run) in the tuning DB.

    The machine is recorded first when the DB does not know it. Recording the same version and
    checksum again is a no-op; the same version with another checksum raises ``ProfileRecordError``.
    """
    fp = check_recordable(fingerprint, db, result.path, result.version, result.checksum)
    mid = fp.machine_id if isinstance(fp, Fingerprint) else str(fp)
    if isinstance(fp, Fingerprint):
        db.record_machine(fp)
    if [r for r in db.profiles(mid) if r["version"] == result.version]:
        return result.version  # recorded before with this checksum (check_recordable refused another)
    return db.record_profile(machine_id=mid, path=result.path, checksum=result.checksum,
                             run_id=run_id, version=result.version)


def check_recordable(fingerprint: Fingerprint | dict[str, Any], db: TuningDB, path: Path, version: int,
                     checksum: str) -> Fingerprint | str:
    """Raise ``ProfileRecordError`` unless ``db`` can record this version; run before anything is written.

    Returns the ``Fingerprint`` to record when the DB does not know the machine yet, else its id.
    """
    fpd = fingerprint.to_dict() if isinstance(fingerprint, Fingerprint) else dict(fingerprint)
    mid = str(fpd["machine_id"])
    known: Fingerprint | str = mid
    if not db.has_machine(mid):
        try:
            known = Fingerprint.from_dict(fpd)
        except TypeError as exc:
            raise ProfileRecordError(f"machine {mid} is not in {db.path} and the profile's fingerprint is "
                                     f"incomplete ({exc})") from None
        if known.machine_id != mid:
            raise ProfileRecordError(f"the profile's fingerprint gives machine id {known.machine_id}, "
                                     f"not the {mid} it names")
    same = [r for r in db.profiles(mid) if r["version"] == version]
    if same and same[0]["checksum"] != checksum:
        raise ProfileRecordError(
            f"the tuning DB {db.path} already records version {version} of machine {mid}'s profile "
            f"with checksum {same[0]['checksum']} (at {same[0]['path']}); {path} would have {checksum}")
    return known


def publish_entries(
    fingerprint: Fingerprint | dict[str, Any],
    entries: Sequence[ProfileEntry],
    *,
    run_id: int | None = None,
    db: TuningDB | str | Path | None = None,
    path: str | Path | None = None,
    started_at: datetime | None = None,
    settings: TunerSettings | None = None,
    model_entries: Sequence[ModelProfileEntry] = (),
) -> PublishResult:
    """Build this machine's profile from ``entries`` (and ``model_entries``), publish it atomically,
    record it in the DB.

    ``path`` defaults to ``xlstm_kernels.profiles.profile.default_profile_path(machine_id)``; ``db`` to the settings' tuning DB (created if
    absent). Entries of the currently published profile for other workloads are kept (``build_profile``).
    """
    fp = fingerprint if isinstance(fingerprint, Fingerprint) else Fingerprint.from_dict(fingerprint)
    target = Path(path).expanduser() if path is not None else default_profile_path(fp.machine_id)
    previous = None
    with contextlib.suppress(ProfileError):
        previous = load_profile(target)
    with using_db(db if db is not None else (settings.resolved_db_path() if settings else None)) as tdb:
        if started_at is None and run_id is not None:  # provenance: when the tuning run began
            started_at = datetime.fromisoformat(tdb.run(run_id)["started_at"])
        profile = build_profile(fp, entries, run_id=run_id, started_at=started_at, previous=previous,
                                model_entries=model_entries)
        result = publish_profile(profile, target, before_write=lambda p, v, c: check_recordable(fp, tdb, p, v, c))
        record_published(result, fp, tdb, run_id)
    return result


def publish_profile_file(
    source: str | Path, *, path: str | Path | None = None, db: TuningDB | str | Path | None = None
) -> PublishResult:
    """Validate a profile JSON file, publish it as the next version and record that in the tuning DB.

    The DB (default: the settings') is created when it does not exist yet. Every check that can fail
    runs before the profile is written: a bad file (``ProfileError`` subclasses), a DB that is not a
    tuning DB or is newer (``StorageError`` subclasses, the DB left untouched), a version the DB
    cannot record (``ProfileRecordError``), a target that would leave the profiles folder
    (``PathEscapeError``: the machine id is encoded as one file name).
    """
    source = Path(source)
    profile = parse_profile(read_profile_text(source), str(source))
    target = Path(path).expanduser() if path is not None else default_profile_path(profile.machine_id)
    rid = profile.tuning_run.run_id
    with using_db(db) as tdb:
        try:
            result = publish_profile(profile, target, before_write=lambda p, v, c: check_recordable(
                profile.fingerprint, tdb, p, v, c))
        except ProfileRecordError as exc:
            raise ProfileRecordError(f"nothing was published: {exc}") from None
        linked = int(rid) if rid is not None and rid.isdigit() and tdb.is_run_of(int(rid), profile.machine_id) else None
        try:
            record_published(result, profile.fingerprint, tdb, linked)
        except ProfileRecordError as exc:
            raise ProfileRecordError(f"published v{result.version} to {result.path}, but not recorded "
                                     f"in the tuning DB: {exc}") from None
    return result

