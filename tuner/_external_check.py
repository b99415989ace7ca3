"""Whether an ``mlstm_kernels`` prefill runs at a model's head shape, tried in a child process.

A Triton compile can abort the interpreter instead of raising: ``chunkwise--triton_xl_chunk`` at the
xLSTM-7B head shape (DHQK 256, DHV 512, bf16) hits an LLVM assertion in Triton 3.6 on an H200
(torch 2.11, 2026-12-01) and the process dies with SIGABRT. Run in the study's process, that would
kill the whole study; run here, it kills a child and the candidate is left out, with the reason.

    python -m tuner._external_check '{"kernel": "chunkwise--triton_limit_chunk@64", "shape": [1, 8, 2048, 256, 512],
                                      "dtype": "bfloat16", "device": "cuda"}'
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import torch

from xlstm_kernels.kernels.config import dtype_name
from xlstm_kernels.probe.runners import child_env
from xlstm_kernels.runner import MlstmKernelsPrefill

HeadShape = tuple[int, int, int, int, int]  # (B, NH, S, DHQK, DHV)


def child_failure(argv: list[str], timeout_s: float) -> str | None:
    """Run ``argv`` as a child process: None when it exits 0, else why not (the signal that killed it,
    its exit status and last stderr line, or the timeout it ran past)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=child_env())
    except subprocess.TimeoutExpired:
        return f"did not finish within {timeout_s:g} s"
    if done.returncode == 0:
        return None
    lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
    last = f": {lines[-1].strip()[:300]}" if lines else ""
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return f"was killed by {name}{last}"
    return f"exited with status {done.returncode}{last}"


def external_prefill_failure(prefill: MlstmKernelsPrefill, shape: HeadShape, dtype: str | torch.dtype,
                             device: torch.device | str, timeout_s: float) -> str | None:
    """Run ``prefill``'s kernel once at ``shape`` (B, NH, S, DHQK, DHV) in ``dtype`` on ``device`` in a
    child process (``child_failure``): None when it ran, else a sentence saying what happened."""
    spec = {"kernel": f"{prefill.chunkwise_kernel}@{prefill.chunk_size}", "shape": list(shape),
            "dtype": dtype if isinstance(dtype, str) else dtype_name(dtype), "device": str(device)}
    why = child_failure([sys.executable, "-m", "tuner._external_check", json.dumps(spec)], timeout_s)
    if why is None:
        return None
    B, NH, S, DHQK, DHV = shape
    return (f"a trial run of {prefill.short()} at B={B} NH={NH} S={S} DHQK={DHQK} DHV={DHV} "
            f"{spec['dtype']} on {device} in a child process {why}")


def _run(spec: dict[str, Any]) -> None:
    """The child: the backend the runner would build, called once on validation inputs."""
    from xlstm_kernels.kernels.reference import validation_inputs
    from xlstm_kernels.runner.external import mlstm_kernels_backend

    dtype = getattr(torch, spec["dtype"])
    backend = mlstm_kernels_backend(MlstmKernelsPrefill.parse(spec["kernel"]), dtype, 1e-6)
    x = validation_inputs(*spec["shape"], dtype=dtype, device=spec["device"])
    h, _ = backend(*x, return_last_states=True, mode="inference")
    if not torch.isfinite(h).all():
        raise SystemExit("the kernel's output is not finite")
    if torch.device(spec["device"]).type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    _run(json.loads(sys.argv[1]))
