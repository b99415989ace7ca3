"""The probe's outcome: every ratchet step, requested vs effective config, the effective compile's kernels."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..kernels.config import KernelConfig, Workload
from .attempt import Attempt
from .codegen_scan import CodeScan
from .errors import ERRORS, CompilerError

FUSION_KNOB = "max_fusion_unique_io_buffers"


@dataclass(frozen=True)
class ProbeStep:
    """One compile attempt of the ratchet."""

    t_inner: int  # the config's T_inner at this step
    compiled_t_inner: int  # units in the compiled block (capped by the sequence length)
    inductor_options: tuple[tuple[str, Any], ...]
    ok: bool
    kind: str | None
    message: str
    kernel_count: int | None
    max_kernel_buffers: int | None
    graphs: int
    compile_s: float | None
    max_threadgroup_bytes: int = 0  # Metal: largest threadgroup memory a kernel declares

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        d = dataclasses.asdict(self)
        d["inductor_options"] = dict(self.inductor_options)
        return d


@dataclass(frozen=True)
class ProbeResult:
    """Requested vs effective config, every ratchet step, and the effective compile's kernels."""

    requested: KernelConfig
    effective: KernelConfig | None  # None when no T_inner compiled
    workload: Workload
    device: str
    max_buffers: int | None  # buffer limit of the static check (None: off)
    ok: bool
    failure: str | None  # kind of the failure that ended the probe
    message: str
    steps: tuple[ProbeStep, ...]
    fusion_knob_needed: bool
    inductor_options: tuple[tuple[str, Any], ...]  # what the effective config needs at compile time
    kernels: CodeScan | None
    tile_rel_err: float | None
    machine_id: str
    cached: bool = False
    target: str | None = None  # None: the device itself; "mps": Metal (see ``method``)
    method: str = "compile"  # "compile": compiled and run one tile; "codegen": generated Metal, checked statically

    @property
    def requested_t_inner(self) -> int:
        """T_inner asked for."""
        return self.requested.t_inner

    @property
    def effective_t_inner(self) -> int | None:
        """T_inner that compiled (None if none did)."""
        return self.effective.t_inner if self.effective else None

    @property
    def ratchet(self) -> list[int]:
        """The distinct T_inner values tried, in order (``steps`` also shows the fusion-knob retries)."""
        out: list[int] = []
        for s in self.steps:
            if not out or out[-1] != s.t_inner:
                out.append(s.t_inner)
        return out

    def raise_for_failure(self) -> None:
        """Raise the named ``ProbeError`` subclass of the failure, if the probe failed."""
        if not self.ok:
            raise ERRORS.get(self.failure or "compiler_error", CompilerError)(
                f"probe of {self.requested.short()} on {self.workload} ({self.device}) failed: "
                f"{self.failure}: {self.message}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "ok": self.ok, "failure": self.failure, "message": self.message,
            "workload": str(self.workload), "device": self.device, "machine_id": self.machine_id,
            "max_buffers": self.max_buffers,
            "requested": self.requested.to_dict(),
            "effective": self.effective.to_dict() if self.effective else None,
            "requested_t_inner": self.requested_t_inner, "effective_t_inner": self.effective_t_inner,
            "ratchet": self.ratchet, "steps": [s.to_dict() for s in self.steps],
            "fusion_knob_needed": self.fusion_knob_needed,
            "inductor_options": dict(self.inductor_options),
            "kernels": self.kernels.to_dict() if self.kernels else None,
            "tile_rel_err": self.tile_rel_err, "cached": self.cached,
            "target": self.target, "method": self.method,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeResult:
        """Inverse of ``to_dict`` (for storing probe outcomes, e.g. in the tuning DB)."""
        steps = tuple(
            ProbeStep(**{**st, "inductor_options": tuple(st["inductor_options"].items())}) for st in d["steps"]
        )
        kernels = Attempt.from_dict({"ok": True, "scan": d["kernels"]}).scan if d.get("kernels") else None
        return cls(
            requested=KernelConfig.from_dict(d["requested"]),
            effective=KernelConfig.from_dict(d["effective"]) if d.get("effective") else None,
            workload=Workload.parse(d["workload"]), device=d["device"], max_buffers=d["max_buffers"], ok=d["ok"],
            failure=d["failure"], message=d["message"], steps=steps, fusion_knob_needed=d["fusion_knob_needed"],
            inductor_options=tuple(d["inductor_options"].items()), kernels=kernels,
            tile_rel_err=d.get("tile_rel_err"), machine_id=d["machine_id"], cached=d.get("cached", False),
            target=d.get("target"), method=d.get("method", "compile"),
        )

    def format_text(self) -> str:
        """Human-readable ratchet, one line per step."""
        lim = "off" if self.max_buffers is None else str(self.max_buffers)
        how = " (generated Metal, checked statically: not compiled, not run)" if self.method == "codegen" else ""
        lines = [f"probe {self.requested.short()} on {self.workload} [{self.device}], buffer limit {lim}"
                 + how + (" (cached)" if self.cached else "")]
        for s in self.steps:
            knob = f" +{FUSION_KNOB}={dict(s.inductor_options)[FUSION_KNOB]}" if s.inductor_options else ""
            status = "ok" if s.ok else f"FAIL {s.kind}"
            kern = "" if s.kernel_count is None else f" kernels={s.kernel_count} max_buffers={s.max_kernel_buffers}"
            if s.kernel_count is not None and s.max_threadgroup_bytes:
                kern += f" threadgroup_bytes={s.max_threadgroup_bytes}"
            cs = "" if s.compile_s is None else f" {s.compile_s:.1f}s"
            lines.append(f"  T_inner={s.t_inner:<3}{knob}: {status}{kern}{cs}")
            if not s.ok and s.message:
                lines.append("      " + s.message.splitlines()[0][:200])
        if self.ok:
            lines.append(f"=> effective T_inner {self.effective_t_inner} (requested {self.requested_t_inner})"
                         f"; fusion knob needed: {'yes' if self.fusion_knob_needed else 'no'}")
        else:
            lines.append(f"=> FAILED ({self.failure}): no T_inner compiled")
        return "\n".join(lines)
