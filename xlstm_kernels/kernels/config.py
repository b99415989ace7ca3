"""Kernel configurations and workloads: what a tuner varies and what it tunes for."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

Family = Literal["recurrent", "chunkwise"]
Driver = Literal["queued", "ray"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs", "graph-capture"]
CUDA_ONLY_MODES: tuple[str, ...] = ("reduce-overhead", "graph-capture")
Precision = Literal["fp32", "tf32", "mixed"]
Mode = Literal["prefill", "decode"]

FAMILIES: tuple[str, ...] = get_args(Family)
DRIVERS: tuple[str, ...] = get_args(Driver)
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
PRECISIONS: tuple[str, ...] = get_args(Precision)
MODES: tuple[str, ...] = get_args(Mode)
T_INNER_LADDER: tuple[int, ...] = (16, 8, 4, 2, 1)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_fields(cls: type, data: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the keys of ``data`` that are not fields of the dataclass ``cls``."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")


@dataclass(frozen=True)
class KernelConfig:
    """How the mLSTM is executed; validated on construction.

    family: ``recurrent`` (unit = one time step) or ``chunkwise`` (unit = one chunk of ``chunk_size``).
    chunk_size: logical chunk (chunkwise) or driver tile (recurrent; a multiple of ``t_inner``).
    heads_per_band: heads per independent band; ``None`` means all heads in one band.
    t_inner: units unrolled inside one compiled region.
    driver: ``queued`` (in-process) or ``ray`` (bands as Ray tasks; optional extra).
    compile_mode: Inductor's ``default`` / ``max-autotune-no-cudagraphs``; CUDA only: ``reduce-overhead``
        (CUDA-graph trees around each compiled block) or ``graph-capture`` (one CUDA graph of the
        whole call, see ``capture.py``).
    precision: ``fp32`` computes everything in float32 (TF32 off): h within 1e-4 of the float64
        reference for float32 inputs (bf16/fp16 inputs: their output rounding, 2^-8 / 2^-11, on top).
        ``tf32`` allows TF32 matmuls on CUDA (the state write k·v, S·v, q·C): no guarantee, the
        low-precision gate (1e-2) decides, for bf16 AND float32 inputs (seen 4.3e-4 in h, 5.2e-4 in
        C on spiky gates with carried-in states, H200); the tuner's float32 gate (1e-4) rejects it.
        ``mixed`` runs S·v and q·C in the input dtype: float32 inputs, 1e-4; bf16 inputs, no guarantee
        (seen 2.9e-3 to 0.1; the gate decides). In every mode gates, states, q·kᵀ and the
        normalizer q·n stay float32 (not matmuls outside ``fp32``), so no cancelling sum is rounded to
        TF32 or bf16. See docs/numerics.md.
    fusion_io_limit: Inductor's ``max_fusion_unique_io_buffers`` for this config's kernels (set by
        the compile-probe when it keeps fused kernels under Metal's buffer limit); ``None``: Inductor's.
    threads: torch's CPU thread count (``torch.set_num_threads``) while a call runs, restored after it
        (``xlstm_kernels.threads``); ``None`` leaves the process's count alone. CPU only (ignored on
        CUDA/MPS). Inductor's CPU kernels are compiled for the count they run under, so it is part of
        the compile key there (``CompileKey.threads``). Absent from ``to_dict`` when ``None``: profiles
        and rows written before the field existed read as "unchanged", and still match new ones.
    """

    family: Family = "chunkwise"
    chunk_size: int = 64
    heads_per_band: int | None = None
    t_inner: int = 4
    driver: Driver = "queued"
    compile_mode: CompileMode = "default"
    precision: Precision = "fp32"
    fusion_io_limit: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        _check_choice("family", self.family, FAMILIES)
        _check_choice("driver", self.driver, DRIVERS)
        _check_choice("compile_mode", self.compile_mode, COMPILE_MODES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_positive_int("chunk_size", self.chunk_size)
        _check_positive_int("t_inner", self.t_inner)
        if self.heads_per_band is not None:
            _check_positive_int("heads_per_band", self.heads_per_band)
        if self.fusion_io_limit is not None:
            _check_positive_int("fusion_io_limit", self.fusion_io_limit)
        if self.threads is not None:
            _check_positive_int("threads", self.threads)
        if self.family == "recurrent" and self.chunk_size % self.t_inner != 0:
            raise ValueError(
                f"recurrent family: chunk_size ({self.chunk_size}) must be a multiple of "
                f"t_inner ({self.t_inner})"
            )

    def replace(self, **changes: Any) -> KernelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``threads`` only when set, so configs that leave it alone keep their old form)."""
        data = dataclasses.asdict(self)
        if data["threads"] is None:
            del data["threads"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KernelConfig:
        """Inverse of ``to_dict``; unknown keys are an error."""
        check_fields(cls, data)
        return cls(**data)

    def bands(self, num_heads: int) -> int:
        """Number of head bands for ``num_heads`` heads; raises if the band size does not divide."""
        hpb = num_heads if self.heads_per_band is None else self.heads_per_band
        if num_heads % hpb != 0:
            raise ValueError(f"heads_per_band ({hpb}) must divide the number of heads NH ({num_heads})")
        return num_heads // hpb

    def short(self, mode: str = "prefill") -> str:
        """Compact human-readable form, e.g. ``chunkwise L64 hpb4 T8 queued``; ``step <compile mode>``
        for ``mode="decode"``, where only the compile mode matters."""
        threads = "" if self.threads is None else f" threads={self.threads}"
        if mode == "decode":
            return f"step {self.compile_mode}{threads}"
        hpb = "all" if self.heads_per_band is None else self.heads_per_band
        extra = "" if self.compile_mode == "default" else f" {self.compile_mode}"
        extra += "" if self.precision == "fp32" else f" {self.precision}"
        extra += "" if self.fusion_io_limit is None else f" io<={self.fusion_io_limit}"
        extra += threads
        return f"{self.family} L{self.chunk_size} hpb{hpb} T{self.t_inner} {self.driver}{extra}"


DEFAULT_CONFIG = KernelConfig()


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32, etc.; raises for unsupported dtypes."""
    for name, dt in DTYPES.items():
        if dt == dtype:
            return name
    raise ValueError(f"unsupported dtype {dtype}; expected one of {list(DTYPES)}")


def parse_dtype(name: str) -> torch.dtype:
    """Parse 'float32' / 'fp32' / 'bf16' ... into a torch dtype."""
    key = _DTYPE_ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {list(DTYPES)} (or fp32/bf16/fp16)")
    return DTYPES[key]


@dataclass(frozen=True)
class Workload:
    """One shape the tuner optimises for: ``B,NH,S,DHQK,DHV,dtype[,mode]``."""

    B: int
    NH: int
    S: int
    DHQK: int
    DHV: int
    dtype: str = "float32"
    mode: Mode = "prefill"

    def __post_init__(self) -> None:
        for name in ("B", "NH", "S", "DHQK", "DHV"):
            _check_positive_int(name, getattr(self, name))
        object.__setattr__(self, "dtype", dtype_name(parse_dtype(self.dtype)))
        _check_choice("mode", self.mode, MODES)
        if self.mode == "decode" and self.S != 1:
            raise ValueError(f"decode workloads have S=1 (one step), got S={self.S}")

    @classmethod
    def parse(cls, text: str) -> Workload:
        """Parse ``"B,NH,S,DHQK,DHV,dtype[,mode]"``, e.g. ``"1,4,512,64,128,float32,prefill"``."""
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if len(parts) not in (6, 7):
            raise ValueError(
                f"workload {text!r}: expected 'B,NH,S,DHQK,DHV,dtype[,mode]' (6 or 7 fields), "
                f"got {len(parts)}"
            )
        try:
            dims = [int(p) for p in parts[:5]]
        except ValueError:
            raise ValueError(f"workload {text!r}: B,NH,S,DHQK,DHV must be integers") from None
        mode = parts[6] if len(parts) == 7 else "prefill"
        return cls(*dims, dtype=parts[5], mode=mode)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.B},{self.NH},{self.S},{self.DHQK},{self.DHV},{self.dtype},{self.mode}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def tokens(self) -> int:
        """Tokens processed by one call (B*S)."""
        return self.B * self.S
