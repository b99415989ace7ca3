"""The one place where a name (machine id, study, run, workload, lock) becomes a file path.

``safe_component`` encodes any name into ONE path component that cannot climb out of its
directory; ``join_under`` joins components under a base directory and refuses
(:class:`PathEscapeError`) a result that resolves outside it (absolute parts, ``..``, a symlink
that points out). Every writer of a derived path goes through them, so a hostile name in a profile
or on the command line can only ever name a file inside the configured directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_SAFE = re.compile(r"[A-Za-z0-9._-]")
_MAX_COMPONENT = 200  # bytes; well under every common file system's 255


class PathEscapeError(ValueError):
    """A path built from a name would leave its base directory (or the name is empty)."""


def safe_component(name: str) -> str:
    """``name`` as one file-name component: ``[A-Za-z0-9._-]`` kept, every other byte ``%XX``-encoded.

    Injective (``%`` itself is encoded), so two names never share a file; ``.`` and ``..`` and a
    leading dot are encoded too (no hidden or parent entries). Raises ``PathEscapeError`` for an
    empty name or one whose encoding is longer than 200 bytes.
    """
    if not isinstance(name, str) or not name:
        raise PathEscapeError(f"a name that becomes a file name must be a non-empty string, got {name!r}")
    out = []
    for ch in name:
        if _SAFE.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    text = "".join(out)
    if text.startswith("."):
        text = "%2E" + text[1:]
    if len(text) > _MAX_COMPONENT:
        raise PathEscapeError(f"name {name[:40]!r}... is too long for a file name ({len(text)} bytes encoded)")
    return text


def join_under(base: Path | str, *parts: str) -> Path:
    """``base / parts...``, refusing (``PathEscapeError``) anything that resolves outside ``base``.

    ``parts`` are used as given (encode names with :func:`safe_component` first); an absolute part,
    a ``..`` that climbs out or a symlink inside ``base`` that points out are all refused. The
    returned path is ``base``-relative as written (not resolved), so messages stay readable.
    """
    base = Path(base).expanduser()
    candidate = base.joinpath(*parts)
    for part in parts:
        if os.path.isabs(part):
            raise PathEscapeError(f"{part!r} is an absolute path; expected a name inside {base}")
    root = base.resolve()
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise PathEscapeError(f"{candidate} resolves to {resolved}, outside {root}; refusing to use it")
    return candidate


def check_inside(path: Path | str, base: Path | str) -> Path:
    """``path`` itself when it resolves inside ``base``; else ``PathEscapeError`` (for derived siblings)."""
    path, base = Path(path).expanduser(), Path(base).expanduser()
    root, resolved = base.resolve(), path.resolve()
    if resolved != root and root not in resolved.parents:
        raise PathEscapeError(f"{path} resolves to {resolved}, outside {root}; refusing to use it")
    return path
