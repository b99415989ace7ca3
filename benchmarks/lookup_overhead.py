"""Per-call cost of looking up the config from the profile (``config=None``), against the smallest call.

    PYTHONPATH=. python benchmarks/lookup_overhead.py

Publishes a synthetic 36-entry profile into a temporary HOME (its timings are placeholders: only the
lookup is measured here), then times:
  * ``runtime.config_for`` on a memo hit (every call after the first for a shape),
  * the first lookup of a new shape (memo miss: the nearest-bucket scan over all entries),
  * the smallest tuned call there is, one ``xk.mlstm_step`` decode step with an explicit config,
and reports the hit cost in µs and as a share of that step (targets: < 20 µs and < 2 %).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch


def _per_call_us(fn, n: int, rounds: int = 7) -> float:
    fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    """Run the measurement and print one line per figure."""
    home = tempfile.mkdtemp(prefix="xlstm-autotune-bench-")
    os.environ["XLSTM_AUTOTUNE_HOME"] = home
    os.environ.pop("XLSTM_AUTOTUNE_PROFILE_PATH", None)
    import xlstm_kernels as xk
    from xlstm_kernels.profiles import runtime

    xk.reset_settings()
    xk.reload_profile()
    entries = []
    for s in (16, 32, 64, 128, 256, 512, 1024, 2048):
        for nh in (4, 8):
            for dh in (32, 64):
                for mode in ("prefill", "decode"):
                    if mode == "decode" and s != 16:
                        continue
                    w = xk.Workload(1, nh, 1 if mode == "decode" else s, dh, 2 * dh, mode=mode)
                    cfg = xk.KernelConfig("chunkwise", chunk_size=min(64, s), t_inner=1, heads_per_band=2)
                    entries.append(dict(workload=str(w), config=cfg.to_dict(), t_inner_requested=1,
                                        t_inner_effective=1, median_s=1e-3, tokens_per_s=s / 1e-3,
                                        speedup_vs_default=1.0, equivalence_error=0.0))
    xk.publish_profile(xk.Profile.for_machine(xk.fingerprint(), entries, xk.TuningRun(source="benchmark")))

    B, NH, DHQK, DHV = 1, 4, 32, 64
    q, k, v = torch.randn(B, NH, DHQK), torch.randn(B, NH, DHQK), torch.randn(B, NH, DHV)
    i, f = torch.randn(B, NH, 1), torch.randn(B, NH, 1)
    c, n, m = torch.zeros(B, NH, DHQK, DHV), torch.zeros(B, NH, DHQK), torch.zeros(B, NH, 1)
    qs, vs = torch.randn(B, NH, 1024, DHQK), torch.randn(B, NH, 1024, DHV)  # 601 distinct lengths are timed

    hit_us = _per_call_us(lambda: runtime.config_for(q, v, "decode"), 20000)
    assert xk.loaded_profile() is not None and runtime.choice_for(q, v, "decode").source != "default"
    sizes = iter(range(1, qs.shape[2] + 1))  # every call a length not seen before: a real memo miss

    def miss() -> None:
        runtime.choice_for(qs[:, :, : next(sizes)], vs[:, :, :1], "prefill")

    memo_before = len(runtime._state().memo)
    miss_us = _per_call_us(miss, 200, rounds=3)
    assert len(runtime._state().memo) - memo_before == 601, "each timed miss must be a new shape"
    cfg = xk.loaded_profile().entries[0].kernel_config
    with torch.no_grad():
        step_us = _per_call_us(lambda: xk.mlstm_step(q, k, v, i, f, c, n, m, config=cfg), 300)
        step_none_us = _per_call_us(lambda: xk.mlstm_step(q, k, v, i, f, c, n, m), 300)
    print(f"machine {xk.fingerprint().device_name}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"profile entries {len(entries)}")
    print(f"config_for, memo hit      {hit_us:8.2f} us   (target < 20 us)")
    print(f"lookup, memo miss         {miss_us:8.2f} us   (once per new shape)")
    print(f"mlstm_step, explicit cfg  {step_us:8.2f} us   (smallest tuned call)")
    print(f"mlstm_step, config=None   {step_none_us:8.2f} us")
    print(f"hit / smallest call       {hit_us / step_us * 100:8.2f} %    (target < 2 %)")


if __name__ == "__main__":
    main()
