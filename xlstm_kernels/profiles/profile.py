"""Tuned profiles: one JSON document per machine mapping workloads to the winning kernel config.

A profile is validated by the pydantic model :class:`Profile` (``schema_version`` 1). It is never
pickled. Files on disk (one per machine, by default ``HOME/profiles/<machine_id>.json``)::

    <stem>.json        the current profile (what the runtime loads)
    <stem>.v<N>.json   every published version N, kept (the current file is a copy of one of them)
    <stem>.lock        serialises publishers (readers never lock: every write is temp file + rename)

Each published file carries a ``publication`` block: its version, the sha256 checksum of the profile
body (everything but ``publication``) and the publication time. The loader recomputes the checksum,
so a file damaged after publication is rejected like a truncated one.

Imports only pydantic, torch and this package: production inference loads profiles without
Optuna, Prefect or sqlite-utils.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from ..kernels.config import KernelConfig, Workload
from .fingerprint import Fingerprint

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS: tuple[int, ...] = (1,)


class ProfileError(Exception):
    """A profile could not be used (base class of the specific profile errors)."""


class ProfileNotFoundError(ProfileError):
    """No profile file exists at the given path (or no such version)."""


class ProfileDamagedError(ProfileError):
    """The profile file is truncated, not JSON, fails validation or its checksum does not match."""


class ProfileSchemaError(ProfileError):
    """The profile has a schema version this code does not know."""


class ProfileMismatchError(ProfileError):
    """The profile belongs to another machine, device or software stack."""


class ProfileWriteError(ProfileError):
    """The profile's directory cannot be written (read-only home, permissions): nothing was published."""


class TuningRun(BaseModel):
    """Where a profile came from: the tuning run (DB id) and the tool that wrote it."""

    model_config = ConfigDict(extra="forbid")

    run_id: str | None = Field(default=None, description="Id of the tuning run in the tuning DB.")
    source: str = Field(default="tuner", description="What produced the profile (tuner, manual, test).")
    started_at: datetime | None = None
    notes: str = ""


class ProfileEntry(BaseModel):
    """The winner for one workload, with its measured speed and equivalence error."""

    model_config = ConfigDict(extra="forbid")

    workload: str = Field(description="'B,NH,S,DHQK,DHV,dtype,mode' (Workload's text form).")
    config: dict[str, Any] = Field(description="KernelConfig to run; its t_inner is the effective one.")
    t_inner_requested: int = Field(ge=1, description="T_inner the tuner asked for (before any ratchet).")
    t_inner_effective: int = Field(ge=1, description="T_inner that compiled and was timed.")
    median_s: float = Field(gt=0, description="Median wall time of one call, seconds.")
    tokens_per_s: float = Field(gt=0)
    speedup_vs_default: float = Field(gt=0, description="Default config's median / this median.")
    equivalence_error: float = Field(ge=0, description="max|err|/max|ref| against the float64 reference.")
    # -- optional (issue 16): the speedup's interval from fresh paired rounds; absent in older profiles
    speedup_low: float | None = Field(default=None, gt=0, description="Lower end of the speedup's interval.")
    speedup_high: float | None = Field(default=None, gt=0, description="Upper end of the speedup's interval.")
    speedup_confidence: float | None = Field(
        default=None, gt=0, lt=1, description="Confidence of that interval (order statistics of per-round ratios)."
    )
    busy_reason: str | None = Field(
        default=None, description="Set when the machine was busy: the entry is published but not trustworthy."
    )

    @field_validator("workload")
    @classmethod
    def _canonical_workload(cls, value: str) -> str:
        return str(Workload.parse(value))

    @field_validator("config")
    @classmethod
    def _valid_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        return KernelConfig.from_dict(value).to_dict()

    @model_validator(mode="after")
    def _t_inner_consistent(self) -> ProfileEntry:
        if self.config["t_inner"] != self.t_inner_effective:
            raise ValueError(
                f"config.t_inner ({self.config['t_inner']}) must equal t_inner_effective "
                f"({self.t_inner_effective})"
            )
        if self.t_inner_effective > self.t_inner_requested:
            raise ValueError("t_inner_effective may not exceed t_inner_requested")
        return self

    _workload: Workload | None = PrivateAttr(default=None)
    _kernel_config: KernelConfig | None = PrivateAttr(default=None)

    @property
    def parsed_workload(self) -> Workload:
        """The workload as a :class:`Workload` (parsed once)."""
        if self._workload is None:
            self._workload = Workload.parse(self.workload)
        return self._workload

    @property
    def kernel_config(self) -> KernelConfig:
        """The config as a :class:`KernelConfig` (built once)."""
        if self._kernel_config is None:
            self._kernel_config = KernelConfig.from_dict(self.config)
        return self._kernel_config


class ModelProfileEntry(BaseModel):
    """The winner for one model workload (``model:<key>,B,S,dtype``): a ModelRunConfig and its numbers.

    ``objective_s`` is what the model tuner minimises: the time of one request, prefill of the prompt
    plus ``decode_steps`` greedy decode steps (``ttft_s + decode_steps / decode_tokens_per_s * B``).
    """

    model_config = ConfigDict(extra="forbid")

    workload: str = Field(description="'model:<model key>,B,S,dtype' (ModelWorkload's text form).")
    config: dict[str, Any] = Field(description="ModelRunConfig to run, as plain JSON.")
    ttft_s: float = Field(gt=0, description="Median time to first token (prefill of the prompt), seconds.")
    decode_tokens_per_s: float = Field(gt=0, description="Median decode throughput, tokens/s (B tokens per step).")
    objective_s: float = Field(gt=0, description="Median time of one request: prefill + decode_steps steps.")
    decode_steps: int = Field(ge=1, description="Decode steps of the request the objective times.")
    speedup_vs_default: float = Field(gt=0, description="ModelRunConfig()'s objective / this objective.")
    logits_error: float = Field(ge=0, description="max|err|/max|ref| of prefill and decode logits vs the "
                                "eager float32 model with native kernels.")
    greedy_match: bool = Field(description="Greedy tokens equal the reference's (required for float32).")

    @field_validator("workload")
    @classmethod
    def _canonical_model_workload(cls, value: str) -> str:
        from ..models.workload import ModelWorkload

        return str(ModelWorkload.parse(value))

    @field_validator("config")
    @classmethod
    def _valid_run_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        from ..models.workload import run_config_from_dict, run_config_to_dict

        return run_config_to_dict(run_config_from_dict(value))

    @property
    def parsed_workload(self) -> Any:
        """The workload as a :class:`~xlstm_kernels.models.workload.ModelWorkload`."""
        from ..models.workload import ModelWorkload

        return ModelWorkload.parse(self.workload)

    @property
    def run_config(self) -> Any:
        """The config as a :class:`~xlstm_kernels.runner.ModelRunConfig`."""
        from ..models.workload import run_config_from_dict

        return run_config_from_dict(self.config)


OPTIONAL_ENTRY_FIELDS = ("speedup_low", "speedup_high", "speedup_confidence", "busy_reason")


class Publication(BaseModel):
    """Added by :func:`publish_profile`: version number and checksum of the profile body."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    checksum: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    published_at: datetime


class Profile(BaseModel):
    """A per-machine tuned profile (schema version 1)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    fingerprint: dict[str, Any] = Field(description="Fingerprint.to_dict() of the tuned machine.")
    torch: str
    triton: str | None = None
    created_at: datetime
    tuning_run: TuningRun = Field(default_factory=TuningRun)
    entries: list[ProfileEntry] = Field(default_factory=list)
    publication: Publication | None = None
    # model workloads (model tuner); absent from profiles written before them, and from the checksum
    # when empty, so those profiles keep their checksums
    model_entries: list[ModelProfileEntry] = Field(default_factory=list)

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value not in SUPPORTED_SCHEMA_VERSIONS:
            raise ValueError(f"unknown schema_version {value}; supported: {list(SUPPORTED_SCHEMA_VERSIONS)}")
        return value

    @field_validator("fingerprint")
    @classmethod
    def _has_machine_id(cls, value: dict[str, Any]) -> dict[str, Any]:
        missing = {"machine_id", "device_type", "torch"} - set(value)
        if missing:
            raise ValueError(f"fingerprint lacks {sorted(missing)}")
        return value

    @model_validator(mode="after")
    def _unique_workloads(self) -> Profile:
        seen: set[str] = set()
        for e in [*self.entries, *self.model_entries]:
            if e.workload in seen:
                raise ValueError(f"workload {e.workload} appears twice")
            seen.add(e.workload)
        return self

    @property
    def machine_id(self) -> str:
        """The tuned machine's id (Fingerprint.machine_id)."""
        return str(self.fingerprint["machine_id"])

    @property
    def device_type(self) -> str:
        """Device type the profile was tuned on (cpu, cuda, mps)."""
        return str(self.fingerprint["device_type"])

    @classmethod
    def for_machine(
        cls,
        fp: Fingerprint,
        entries: list[ProfileEntry] | list[dict[str, Any]],
        tuning_run: TuningRun | None = None,
        model_entries: list[ModelProfileEntry] | list[dict[str, Any]] | None = None,
    ) -> Profile:
        """A new, unpublished profile for the machine ``fp`` created now."""
        return cls(
            fingerprint=fp.to_dict(),
            torch=fp.torch,
            triton=fp.triton,
            created_at=datetime.now(timezone.utc),
            tuning_run=tuning_run or TuningRun(),
            entries=[e if isinstance(e, ProfileEntry) else ProfileEntry(**e) for e in entries],
            model_entries=[e if isinstance(e, ModelProfileEntry) else ModelProfileEntry(**e)
                           for e in model_entries or []],
        )

    def body_checksum(self) -> str:
        """sha256 of the canonical JSON of everything except ``publication``."""
        body = self._plain(exclude={"publication"})
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> str:
        """The file form (indented JSON); ``model_entries`` only when there are some."""
        return json.dumps(self._plain(), indent=2, ensure_ascii=False) + "\n"

    def _plain(self, exclude: set[str] | None = None) -> dict[str, Any]:
        """JSON-ready dict; fields added later (optional entry fields, an empty ``model_entries``) are
        left out when unset, so files and checksums of profiles without them are what they were."""
        body = self.model_dump(mode="json", exclude=exclude)
        if not body.get("model_entries"):
            body.pop("model_entries", None)
        for entry in body["entries"]:
            for name in OPTIONAL_ENTRY_FIELDS:
                if entry.get(name) is None:
                    entry.pop(name, None)
        return body


class PublishResult(NamedTuple):
    """What :func:`publish_profile` and :func:`rollback_profile` wrote."""

    path: Path  # the current profile file
    version: int
    checksum: str


class ProfileVersion(NamedTuple):
    """One kept version of a profile file."""

    version: int
    path: Path
    checksum: str | None  # None: the version file is damaged
    published_at: datetime | None
    entries: int
    current: bool


# ----------------------------------------------------------------------------------------- paths


def default_profile_path(machine_id: str | None = None, device: str | None = None) -> Path:
    """Where this machine's profile lives: settings' ``profile_path``, else HOME/profiles/<machine_id>.json.

    ``machine_id`` defaults to the fingerprint of ``device`` (default: settings' device, else the
    best available device).
    """
    from ..settings import get_settings

    settings = get_settings()
    if settings.profile_path is not None:
        return settings.profile_path.expanduser()
    if machine_id is None:
        from .fingerprint import fingerprint

        machine_id = fingerprint(device or settings.device).machine_id
    return machine_profile_path(settings.resolved_home(), machine_id)


def machine_profile_path(home: Path, machine_id: str) -> Path:
    """HOME/profiles/<machine_id>.json, the id encoded as one safe file name (``paths.safe_component``).

    Raises ``PathEscapeError`` when the result would leave HOME/profiles (a symlinked folder).
    """
    from ..paths import join_under, safe_component

    return join_under(Path(home) / "profiles", safe_component(machine_id) + ".json")


def version_path(path: Path, version: int) -> Path:
    """The file that keeps ``version`` of the profile at ``path``."""
    return path.with_name(f"{path.stem}.v{version}{path.suffix}")


def _version_files(path: Path) -> dict[int, Path]:
    pattern = re.compile(rf"^{re.escape(path.stem)}\.v(\d+){re.escape(path.suffix)}$")
    found: dict[int, Path] = {}
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            m = pattern.match(p.name)
            if m:
                found[int(m.group(1))] = p
    return dict(sorted(found.items()))


# ------------------------------------------------------------------------------------- reading


def parse_profile(text: str, source: str = "<string>") -> Profile:
    """Validate profile JSON text; raises ProfileDamagedError or ProfileSchemaError."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileDamagedError(f"{source}: not valid JSON (truncated or damaged): {exc}") from None
    if not isinstance(data, dict):
        raise ProfileDamagedError(f"{source}: expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ProfileSchemaError(
            f"{source}: unknown profile schema_version {version!r}; this xlstm_kernels reads "
            f"{list(SUPPORTED_SCHEMA_VERSIONS)}"
        )
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ProfileDamagedError(
            f"{source}: invalid profile ({exc.error_count()} errors; first at {where}: {first['msg']})"
        ) from None
    if profile.publication is not None and profile.publication.checksum != profile.body_checksum():
        raise ProfileDamagedError(
            f"{source}: checksum mismatch (file says {profile.publication.checksum}, content is "
            f"{profile.body_checksum()}): the file was changed after publication"
        )
    return profile


def read_profile_text(path: Path, max_bytes: int | None = None) -> str:
    """The text of the regular file ``path``, read without blocking and at most ``max_bytes`` long.

    Opened with ``O_NONBLOCK`` and checked with ``fstat`` before a byte is read: a FIFO, device
    (``/dev/zero``), socket or directory is refused at once (``ProfileDamagedError``), as is a file
    larger than ``max_bytes`` (default: settings' ``profile_max_bytes``) — it is never read whole.
    """
    import stat

    if max_bytes is None:
        from ..settings import get_settings

        max_bytes = get_settings().profile_max_bytes
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ProfileNotFoundError(f"no profile at {path}") from None
    except OSError as exc:
        raise ProfileDamagedError(f"{path}: cannot open: {exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ProfileDamagedError(f"{path}: not a regular file (a FIFO, device, socket or directory); not read")
        if st.st_size > max_bytes:
            raise ProfileDamagedError(
                f"{path}: {st.st_size} bytes, over the profile size limit of {max_bytes} (setting profile_max_bytes); not read")
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:  # grew while being read
            raise ProfileDamagedError(f"{path}: over the profile size limit of {max_bytes} bytes; not read whole")
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileDamagedError(f"{path}: cannot read: {exc}") from None
    except OSError as exc:
        raise ProfileDamagedError(f"{path}: cannot read: {exc}") from None
    finally:
        os.close(fd)


def load_profile(path: Path | str | None = None) -> Profile:
    """Read and validate a profile file (default: this machine's); raises a ProfileError subclass."""
    path = Path(path).expanduser() if path is not None else default_profile_path()
    return parse_profile(read_profile_text(path), str(path))


def check_profile_matches(profile: Profile, fp: Fingerprint) -> None:
    """Raise ProfileMismatchError unless ``profile`` was tuned on this machine and software stack."""
    if profile.machine_id != fp.machine_id:
        theirs = profile.fingerprint
        raise ProfileMismatchError(
            f"profile is for another machine (id {profile.machine_id}: {theirs.get('device_name')!r} "
            f"{theirs.get('device_type')}); this machine is {fp.machine_id} ({fp.device_name!r} {fp.device_type})"
        )
    mine = fp.software()
    theirs_sw = {"torch": profile.torch, "triton": profile.triton, "python": profile.fingerprint.get("python")}
    diffs = [f"{k} {theirs_sw[k]} (running {mine[k]})" for k in mine if theirs_sw.get(k) != mine[k]]
    if diffs:
        raise ProfileMismatchError("profile is stale: tuned with " + ", ".join(diffs))


# ------------------------------------------------------------------------------------ writing


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same directory, fsync and rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _publish_lock(path: Path) -> Iterator[None]:
    """Serialise publishers of one profile (readers never need it)."""
    lock = path.with_name(f"{path.stem}.lock")
    with open(lock, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: rename is still atomic, publishers unserialised
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Delete the temp files a killed publisher of ``path`` left (``.<name>.*.tmp``); call under its lock.

    Every writer of these names holds the publish lock while its temp file exists, so under the lock
    none of them is in use. Returns the removed files.
    """
    removed = []
    prefixes = (f".{path.name}.", f".{path.stem}.v")
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            if p.name.endswith(".tmp") and p.name.startswith(prefixes) and p.is_file() and not p.is_symlink():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed


def _writable_error(path: Path, exc: OSError) -> ProfileWriteError:
    return ProfileWriteError(f"cannot write the profile {path}: {exc.strerror or exc} ({type(exc).__name__}); "
                             "is the home directory read-only? The current profile is unchanged.")


def publish_profile(profile: Profile, path: Path | str | None = None,
                    before_write: Callable[[Path, int, str], None] | None = None) -> PublishResult:
    """Publish ``profile`` as the next version, atomically; earlier versions are kept.

    Default path: settings' ``profile_path``, else HOME/profiles/<the profile's machine_id>.json.
    ``before_write(path, version, checksum)`` runs under the publish lock before the first byte is
    written, so a check that can fail (e.g. "can the DB record this version?") fails with nothing
    written. Temp files of killed publishers are removed first. A directory that cannot be written
    raises ``ProfileWriteError``. Returns (path of the current file, version, checksum).
    """
    path = Path(path).expanduser() if path is not None else default_profile_path(profile.machine_id)
    with contextlib.ExitStack() as held:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            held.enter_context(_publish_lock(path))
        except OSError as exc:
            raise _writable_error(path, exc) from None
        remove_stale_temp_files(path)
        versions = _version_files(path)
        version = max(versions, default=0) + 1
        checksum = profile.body_checksum()
        if before_write is not None:
            before_write(path, version, checksum)
        published = profile.model_copy(
            update={"publication": Publication(
                version=version, checksum=checksum, published_at=datetime.now(timezone.utc))}
        )
        text = published.to_json()
        try:
            _atomic_write(version_path(path, version), text)
            _atomic_write(path, text)
        except OSError as exc:
            raise _writable_error(path, exc) from None
    return PublishResult(path, version, checksum)


def list_profile_versions(path: Path | str | None = None) -> list[ProfileVersion]:
    """Every kept version of the profile at ``path`` (oldest first), marking the current one."""
    path = Path(path).expanduser() if path is not None else default_profile_path()
    current: Publication | None = None
    with contextlib.suppress(ProfileError):
        current = load_profile(path).publication
    out = []
    for version, vpath in _version_files(path).items():
        try:
            pub = load_profile(vpath)
        except ProfileError:
            out.append(ProfileVersion(version, vpath, None, None, 0, False))
            continue
        checksum = pub.publication.checksum if pub.publication else None
        is_current = current is not None and current.version == version and current.checksum == checksum
        out.append(ProfileVersion(
            version, vpath, checksum, pub.publication.published_at if pub.publication else None,
            len(pub.entries), is_current,
        ))
    return out


def rollback_profile(version: int | None = None, path: Path | str | None = None) -> PublishResult:
    """Make a kept version current again (default: the newest version older than the current one)."""
    path = Path(path).expanduser() if path is not None else default_profile_path()
    with contextlib.ExitStack() as held:
        if path.parent.is_dir():
            try:
                held.enter_context(_publish_lock(path))
            except OSError as exc:
                raise _writable_error(path, exc) from None
        versions = _version_files(path)
        if not versions:
            raise ProfileNotFoundError(f"no published versions of {path}")
        if version is None:
            try:
                cur = load_profile(path).publication
                cur_version = cur.version if cur else max(versions) + 1
            except ProfileError:
                cur_version = max(versions) + 1
            older = [v for v in versions if v < cur_version]
            if not older:
                raise ProfileNotFoundError(
                    f"{path}: no version older than the current one (v{cur_version}); kept: {list(versions)}"
                )
            version = max(older)
        if version not in versions:
            raise ProfileNotFoundError(f"{path}: no version {version}; kept: {list(versions)}")
        target = load_profile(versions[version])  # validates (checksum included) before it goes live
        assert target.publication is not None
        try:
            _atomic_write(path, target.to_json())
        except OSError as exc:
            raise _writable_error(path, exc) from None
    return PublishResult(path, version, target.publication.checksum)
