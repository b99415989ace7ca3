"""Static check of Inductor's generated code: kernels and their buffer arguments.

Inductor writes one Python "output code" module per compiled graph. Kernels appear in it as
- Metal (MPS): ``generated_kernel_0 = async_compile.metal('generated_kernel_0', '''... kernel void
  generated_kernel_0(device float* out_ptr0, constant float* in_ptr0, constant long& ks0,
  uint2 thread_pos [[thread_position_in_grid]]) { threadgroup float tmp_acc_0[2]; ...''')``. Every
  ``device``/``constant`` parameter, and every parameter with an explicit ``[[buffer(N)]]``, takes one
  of Metal's 31 buffer slots (Inductor does not write ``[[buffer(N)]]``; Metal assigns the slots
  implicitly). Thread-position parameters take none. ``threadgroup`` arrays declared in the body add
  up to the kernel's threadgroup memory (Apple GPUs allow 32 KiB).
- Triton (CUDA): ``def triton_poi_fused_0(in_ptr0, out_ptr0, ks0, xnumel, XBLOCK : tl.constexpr)``;
  buffers are the pointer arguments: not ``*numel``, not size symbols ``ks0``/``s0``, not constexpr.
- C++ (CPU): ``extern "C" void kernel(const float* in_ptr0, float* out_ptr0)`` inside
  ``cpp_fused_... = async_compile.cpp_pybinding(...)``; buffers are the pointer parameters.

The Metal parser is tested on real Metal output code of the project's blocks, generated off-Mac by
Inductor's MPS code generator (``metal_codegen``; samples in ``tests/data/metal/``). The Metal compiler
has never seen those sources here: that a counted kernel over 31 fails, and one under it compiles, is
Metal's documented limit, not an observation on Apple hardware.
"""

from __future__ import annotations

import dataclasses
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
    threadgroup_bytes: int = 0  # Metal: threadgroup memory the body declares (0 elsewhere)

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

    @property
    def max_threadgroup_bytes(self) -> int:
        """Largest threadgroup memory any kernel declares, in bytes (0 without Metal kernels)."""
        return max((k.threadgroup_bytes for k in self.kernels), default=0)

    def over_threadgroup_limit(self, limit_bytes: int | None) -> list[KernelInfo]:
        """Kernels whose declared threadgroup memory exceeds ``limit_bytes`` (none when None)."""
        if limit_bytes is None:
            return []
        return [k for k in self.kernels if k.threadgroup_bytes > limit_bytes]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "graphs": self.graphs,
            "kernel_count": self.kernel_count,
            "max_buffers": self.max_buffers,
            "max_threadgroup_bytes": self.max_threadgroup_bytes,
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
# torch 2.13: ``generated_kernel_0 = async_compile.metal('generated_kernel_0', '''...``; torch 2.11:
# ``mps_lib_0 = compile_mps_shader('''... kernel void generated_kernel(...`` (every kernel of the graph
# is called ``generated_kernel``; the wrapper calls ``mps_lib_0.generated_kernel(...)``).
_METAL_BINDING_RE = re.compile(r"(\w+)\s*=\s*(?:async_compile\.metal|compile_mps_shader)\(")
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


# Bytes of Metal scalar types a threadgroup array may hold; vectors (float2, half4, ...) multiply them
# (a 3-vector takes the room of a 4-vector, as Metal aligns it).
_METAL_TYPE_BYTES = {"bool": 1, "char": 1, "uchar": 1, "int8_t": 1, "uint8_t": 1, "short": 2, "ushort": 2,
                     "half": 2, "bfloat": 2, "int16_t": 2, "uint16_t": 2, "int": 4, "uint": 4, "float": 4,
                     "int32_t": 4, "uint32_t": 4, "long": 8, "ulong": 8, "int64_t": 8, "uint64_t": 8}
_METAL_THREADGROUP_RE = re.compile(r"\bthreadgroup\s+([\w:]+)\s+\w+\s*((?:\[\s*\d+\s*\]\s*)*);")


class UnknownThreadgroupType(ValueError):
    """A Metal kernel declares threadgroup memory of a type whose size the scanner does not know."""


def _metal_type_bytes(name: str) -> int:
    base = name.split("::")[-1]
    if base in _METAL_TYPE_BYTES:
        return _METAL_TYPE_BYTES[base]
    if base[-1:] in ("2", "3", "4") and base[:-1] in _METAL_TYPE_BYTES:
        return _METAL_TYPE_BYTES[base[:-1]] * (4 if base[-1] == "3" else int(base[-1]))
    raise UnknownThreadgroupType(f"threadgroup memory of Metal type {name!r}: size unknown to the scanner")


def metal_threadgroup_bytes(body: str) -> int:
    """Threadgroup memory (bytes) the ``threadgroup T name[N]...;`` declarations in ``body`` take."""
    total = 0
    for m in _METAL_THREADGROUP_RE.finditer(body):
        count = 1
        for dim in re.findall(r"\d+", m.group(2)):
            count *= int(dim)
        total += _metal_type_bytes(m.group(1)) * count
    return total


def _metal_body(src: str, close_idx: int) -> str:
    """The body of the Metal kernel whose parameter list closes at ``close_idx`` (brace-matched)."""
    start = src.find("{", close_idx)
    if start < 0:
        return ""
    depth = 0
    for j in range(start, len(src)):
        if src[j] == "{":
            depth += 1
        elif src[j] == "}":
            depth -= 1
            if depth == 0:
                return src[start:j + 1]
    return src[start:]


def _scan_signatures(src: str, pattern: re.Pattern[str], lang: KernelLang, is_buffer,
                     names: list[str] | None = None) -> list[KernelInfo]:
    found = []
    for idx, m in enumerate(pattern.finditer(src)):
        open_idx = m.end() - 1
        close_idx = _matching_paren(src, open_idx)
        params = _split_params(src[open_idx + 1:close_idx])
        bufs = tuple(_param_name(p) for p in params if is_buffer(p))
        name = m.group(1)
        if names is not None and name == "kernel" and idx < len(names):
            name = names[idx]  # CPU kernels are all called "kernel"; the binding names them
        tg = metal_threadgroup_bytes(_metal_body(src, close_idx)) if lang == "metal" else 0
        found.append(KernelInfo(name=name, lang=lang, buffers=len(bufs), args=len(params), buffer_names=bufs,
                                threadgroup_bytes=tg))
    return found


def _metal_names(src: str, kernels: list[KernelInfo]) -> list[KernelInfo]:
    """Name each Metal kernel as the wrapper calls it: ``lib.kernel`` where its library binding differs."""
    bindings = [(m.start(), m.group(1)) for m in _METAL_BINDING_RE.finditer(src)]
    if not bindings:
        return kernels
    out = []
    for k, m in zip(kernels, _METAL_RE.finditer(src)):
        lib = next((name for pos, name in reversed(bindings) if pos < m.start()), None)
        out.append(k if lib is None or lib == k.name else dataclasses.replace(k, name=f"{lib}.{k.name}"))
    return out


def scan_source(src: str) -> list[KernelInfo]:
    """Kernels (Metal, Triton, C++) declared in one piece of generated code, in order of kind."""
    kernels = _metal_names(src, _scan_signatures(src, _METAL_RE, "metal", _metal_is_buffer))
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
