"""Write the Metal test data of the running torch: ``python tests/data/metal/generate.py`` (from the repo root).

Inductor's MPS output code (``xlstm_kernels.probe.metal_codegen``, generated off-Mac on fake MPS tensors, never
compiled by Metal or run) of a few blocks of tests/test_metal.py's workload (B 1, one head, DHQK 16,
DHV 32), into ``tests/data/metal/torch-<major.minor>/`` with a manifest naming the torch that made them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from xlstm_kernels.kernels.compiler import CompileKey  # noqa: E402
from xlstm_kernels.probe.metal_codegen import block_metal_source  # noqa: E402

def strip_comments(src: str) -> str:
    """Drop the output code's top-level ``#`` lines (torch 2.11 writes the whole FX graph there, 3x the
    size); the Metal sources are inside string literals, their indented ``#include`` lines stay."""
    return "".join(line for line in src.splitlines(keepends=True) if not line.startswith("#"))


def families_sha256() -> str:
    """Checksum of xlstm_kernels/kernels/families.py: the blocks' source the data was generated from."""
    return hashlib.sha256((ROOT / "xlstm_kernels" / "kernels" / "families.py").read_bytes()).hexdigest()


BLOCKS = {"recurrent_t16.py.txt": ("recurrent", 16, 1), "recurrent_t8.py.txt": ("recurrent", 8, 1),
          "chunkwise_t4_l8.py.txt": ("chunkwise", 4, 8)}


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / f"torch-{'.'.join(torch.__version__.split('.')[:2])}"
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"_note": "Inductor MPS output code generated off-Mac by xlstm_kernels.probe.metal_codegen (fake MPS "
                         "tensors; never compiled by Metal or run). Regenerate: python tests/data/metal/generate.py",
                "torch": torch.__version__, "families_sha256": families_sha256(), "files": {}}
    for name, (family, t, chunk) in BLOCKS.items():
        key = CompileKey(family=family, B=1, heads=1, DHQK=16, DHV=32, dtype="float32", device="mps",
                         t_inner=t, chunk_size=chunk)
        (out / name).write_text(strip_comments(block_metal_source(key)))
        manifest["files"][name] = {"family": family, "B": 1, "heads": 1, "DHQK": 16, "DHV": 32, "t_inner": t,
                                   "chunk_size": chunk, "inductor_options": {}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(BLOCKS)} files to {out}")


if __name__ == "__main__":
    main()
