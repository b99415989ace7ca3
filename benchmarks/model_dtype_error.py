"""How far a built model's eager bf16 logits are from its eager float32 logits, before any runner.

The model tuner's gate compares candidates with the eager float32 model; this measures what the dtype
alone costs on a given depth and width (random weights, native kernels, prefill logits), once with the
float32 model's own weights and once with the bf16 model's rounded weights copied into it (the
arithmetic's share alone). The default model is 32 blocks deep, like xLSTM-7B, but narrow enough for a CPU.

Run: ``PYTHONPATH=. python benchmarks/model_dtype_error.py [--embedding-dim 1024 --blocks 32]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from tuner import logits_error  # noqa: E402
from xlstm_kernels.models.presets import build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--embedding-dim", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--blocks", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    fields = {"embedding_dim": args.embedding_dim, "num_heads": args.heads, "num_blocks": args.blocks,
              "vocab_size": args.vocab}
    tokens = torch.randint(0, args.vocab, (1, args.prompt), generator=torch.Generator().manual_seed(1))
    tokens = tokens.to(args.device)
    with torch.no_grad():
        ref = build_model(fields, dtype="float32", device=args.device, seed=0)
        bf16 = build_model(fields, dtype="bfloat16", device=args.device, seed=0)
        ref_logits, low = ref(tokens)[0], bf16(tokens)[0]
        print(f"# {fields}, prompt {args.prompt}, torch {torch.__version__}, {args.device}")
        print(f"eager bf16 vs eager float32, the float32 model's weights:   {logits_error(low, ref_logits):.3g}")
        for p32, p16 in zip(ref.parameters(), bf16.parameters()):
            p32.copy_(p16.float())
        rounded = ref(tokens)[0]
        print(f"eager bf16 vs eager float32, the bf16 model's rounded weights: {logits_error(low, rounded):.3g}")
        print(f"the weights' rounding alone (float32 both):                  {logits_error(rounded, ref_logits):.3g}")


if __name__ == "__main__":
    main()
