"""Machine fingerprint: what must match for timings (and so a tuned profile) to carry over."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass
from typing import Any

import torch


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo, sysctl on macOS, or platform)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        import subprocess

        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def triton_version() -> str | None:
    """Triton's version, or None where Triton is not installed (CPU, MPS)."""
    try:
        import triton  # type: ignore[import-not-found]

        return str(triton.__version__)
    except Exception:  # noqa: BLE001 - triton is optional and may fail to import on odd machines
        return None


@dataclass(frozen=True)
class Fingerprint:
    """Identity of a machine + software stack for tuning purposes."""

    cpu: str
    device_type: str
    device_name: str
    os: str
    machine: str
    python: str
    torch: str
    triton: str | None
    memory_gb: float
    device_count: int

    @property
    def machine_id(self) -> str:
        """Stable id of the hardware (not the software): hostname-free, 12 hex digits."""
        ident = json.dumps([self.cpu, self.device_type, self.device_name, self.machine, self.memory_gb])
        return hashlib.sha256(ident.encode()).hexdigest()[:12]

    def software(self) -> dict[str, Any]:
        """The software part; a mismatch makes a profile stale."""
        return {"torch": self.torch, "triton": self.triton, "python": self.python}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["machine_id"] = self.machine_id
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)


def os_major(os_text: str) -> str:
    """``"Linux 6.8.0-45-generic"`` -> ``"Linux 6"``: the OS and its major release (minor updates keep timings)."""
    system, _, release = os_text.partition(" ")
    major = release.split(".", 1)[0].split("-", 1)[0]
    return f"{system} {major}".strip()


def machine_class(fp: Fingerprint) -> str:
    """Class id of machines whose timings are comparable, e.g. ``cpu-3f2a9c1b7d04``.

    Hashes what decides a kernel's speed: CPU model, architecture, device type and name, device
    count, memory (whole GiB), OS major release, torch and triton versions. Not the host name nor
    the Python patch level: identical boxes of a fleet share a class and so one Optuna study.
    """
    ident = json.dumps([fp.cpu, fp.machine, fp.device_type, fp.device_name, fp.device_count,
                        round(fp.memory_gb), os_major(fp.os), fp.torch, fp.triton])
    return f"{fp.device_type}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def fingerprint(device: torch.device | str | None = None) -> Fingerprint:
    """Fingerprint of this machine for ``device`` (default: best available)."""
    from ..device import default_device, device_name

    dev = torch.device(device) if device is not None else default_device()
    count = torch.cuda.device_count() if dev.type == "cuda" else 1
    return Fingerprint(
        cpu=cpu_model(),
        device_type=dev.type,
        device_name=device_name(dev),
        os=f"{platform.system()} {platform.release()}",
        machine=platform.machine(),
        python=platform.python_version(),
        torch=torch.__version__,
        triton=triton_version(),
        memory_gb=round(_memory_bytes() / 2**30, 1),
        device_count=count,
    )
