"""Static check of Inductor's generated code: kernels and their buffer arguments.

Inductor writes one Python "output code" module per compiled graph. Kernels appear in it as
- Metal (MPS): ``kernel void name(device float* out_ptr0, constant float* in_ptr0, constant long& ks0,
  uint xindex [[thread_position_in_grid]])``. Every ``device``/``constant`` parameter, and every
  parameter with an explicit ``[[buffer(N)]]``, takes one of Metal's 31 buffer slots (Inductor does not
  write ``[[buffer(N)]]``; Metal assigns the slots implicitly). Thread-position parameters take none.
- Triton (CUDA): ``def triton_poi_fused_0(in_ptr0, out_ptr0, ks0, xnumel, XBLOCK : tl.constexpr)``;
  buffers are the pointer arguments: not ``*numel``, not size symbols ``ks0``/``s0``, not constexpr.
- C++ (CPU): ``extern "C" void kernel(const float* in_ptr0, float* out_ptr0)`` inside
  ``cpp_fused_... = async_compile.cpp_pybinding(...)``; buffers are the pointer parameters.

The Metal parser was written from Inductor's MPS code generator (``torch/_inductor/codegen/mps.py``)
and tested on text; it has never been run on Apple hardware.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

KernelLang = Literal["metal", "triton", "cpp"]


@dataclass(frozen=True)
class KernelInfo:
    """One generated kernel: its name, language, buffer arguments and all arguments."""

    name: str
    lang: KernelLang
    buffers: int
    args: int
    buffer_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        d = asdict(self)
        d["buffer_names"] = list(self.buffer_names)
        return d


@dataclass(frozen=True)
class CodeScan:
    """What one or more output-code modules contain: graphs and their kernels."""

    graphs: int
    kernels: tuple[KernelInfo, ...]

    @property
    def kernel_count(self) -> int:
        """Number of generated kernels."""
        return len(self.kernels)

    @property
    def max_buffers(self) -> int:
        """Largest buffer-argument count of any kernel (0 without kernels)."""
        return max((k.buffers for k in self.kernels), default=0)

    def over_limit(self, limit: int | None) -> list[KernelInfo]:
        """Kernels whose buffer arguments exceed ``limit`` (none when ``limit`` is None)."""
        if limit is None:
            return []
        return [k for k in self.kernels if k.buffers > limit]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "graphs": self.graphs,
            "kernel_count": self.kernel_count,
            "max_buffers": self.max_buffers,
            "kernels": [k.to_dict() for k in self.kernels],
        }


def _split_params(text: str) -> list[str]:
    """Split a parameter list on top-level commas (ignores commas inside (), [], <>)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([<":
            depth += 1
        elif ch in ")]>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    tail = "".join(cur).strip()
    if tail:
        parts.append(tail)
    return [p for p in parts if p]


def _matching_paren(src: str, open_idx: int) -> int:
    """Index of the ``)`` closing the ``(`` at ``open_idx`` (or len(src) when unbalanced)."""
    depth = 0
    for j in range(open_idx, len(src)):
        if src[j] == "(":
            depth += 1
        elif src[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return len(src)


def _param_name(param: str) -> str:
    """The identifier a C/Metal/Python parameter declares (attributes and annotations stripped)."""
    param = re.sub(r"\[\[.*?\]\]", "", param).split("=")[0].split(":")[0].strip()
    m = re.search(r"([A-Za-z_]\w*)\s*$", param)
    return m.group(1) if m else param


_METAL_RE = re.compile(r"\bkernel\s+void\s+(\w+)\s*\(")
_TRITON_RE = re.compile(r"^\s*def\s+(triton_\w+)\s*\(", re.MULTILINE)
_CPP_RE = re.compile(r'extern\s+"C"\s+(?:\w+\s+)*?void\s+(\w+)\s*\(')
_CPP_WRAPPER_RE = re.compile(r"^\s*(?:static\s+)?void\s+(cpp_fused_\w+)\s*\(", re.MULTILINE)
_CPP_BINDING_RE = re.compile(r"(\w+)\s*=\s*async_compile\.cpp(?:_pybinding)?\(")
_TRITON_NON_BUFFER = re.compile(r"^(\w*numel|ks\d+|s\d+|u\d+)$")


def _metal_is_buffer(param: str) -> bool:
    if "[[buffer(" in param.replace(" ", ""):
        return True
    if "[[" in param:  # thread_position_in_grid, threadgroup position, ...: no buffer slot
        return False
    return bool(re.match(r"^\s*(device|constant)\b", param))


def _triton_is_buffer(param: str) -> bool:
    if "constexpr" in param:
        return False
    return not _TRITON_NON_BUFFER.match(_param_name(param))


def _cpp_is_buffer(param: str) -> bool:
    return "*" in param


def _scan_signatures(src: str, pattern: re.Pattern[str], lang: KernelLang, is_buffer,
                     names: list[str] | None = None) -> list[KernelInfo]:
    found = []
    for idx, m in enumerate(pattern.finditer(src)):
        open_idx = m.end() - 1
        params = _split_params(src[open_idx + 1:_matching_paren(src, open_idx)])
        bufs = tuple(_param_name(p) for p in params if is_buffer(p))
        name = m.group(1)
        if names is not None and name == "kernel" and idx < len(names):
            name = names[idx]  # CPU kernels are all called "kernel"; the binding names them
        found.append(KernelInfo(name=name, lang=lang, buffers=len(bufs), args=len(params), buffer_names=bufs))
    return found


def scan_source(src: str) -> list[KernelInfo]:
    """Kernels (Metal, Triton, C++) declared in one piece of generated code, in order of kind."""
    kernels = _scan_signatures(src, _METAL_RE, "metal", _metal_is_buffer)
    kernels += _scan_signatures(src, _TRITON_RE, "triton", _triton_is_buffer)
    binding_names = [m.group(1) for m in _CPP_BINDING_RE.finditer(src)]
    kernels += _scan_signatures(src, _CPP_RE, "cpp", _cpp_is_buffer, binding_names)
    kernels += _scan_signatures(src, _CPP_WRAPPER_RE, "cpp", _cpp_is_buffer)
    return kernels


def scan_output_code(sources: list[str]) -> CodeScan:
    """Scan Inductor output-code modules (one per compiled graph)."""
    kernels: list[KernelInfo] = []
    for src in sources:
        kernels.extend(scan_source(src))
    return CodeScan(graphs=len(sources), kernels=tuple(kernels))
