"""Tuner vs. exhaustive grid on CPU (issue 4's performance check).

1. The tuner (TPE, at most ``--fraction`` of the grid's candidates) runs in a fresh process with an
   empty Inductor cache (cold), then again in a fresh process on a fresh DB with that cache (warm);
   each reports its wall time.
2. The exhaustive grid: every candidate of the same space compiled, validated and timed (grid
   sampler), in a fresh process with its OWN empty Inductor cache, so its wall time is cold like the
   tuner's first run (the tuner's warm cache would make it look cheaper than it is).
3. The tuned winner and the grid's best are re-timed side by side (interleaved rounds) and the
   tuned winner's median is compared with the grid best's: the target is within 3%.

    PYTHONPATH=. python benchmarks/tuner_vs_grid.py [--workload 1,4,128,32,32,float32] [--fraction 0.4]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _space_kwargs(a: argparse.Namespace) -> dict:
    return dict(chunk_sizes=a.chunk_sizes, heads_per_band=a.hpb, t_inners=a.t_inners)


def _child(a: argparse.Namespace) -> None:
    import torch

    import tuner

    torch.set_num_threads(a.threads)
    space = tuner.SearchSpace.for_workload(a.workload, "cpu", **_space_kwargs(a))
    t0 = time.perf_counter()
    res = tuner.tune_workload(a.workload, db=a.db, device="cpu", space=space, sampler=a.child,
                              n_trials=a.n_trials)
    out = res.to_dict()
    out["wall_s"] = time.perf_counter() - t0
    Path(a.out).write_text(json.dumps(out))


def _spawn(a: argparse.Namespace, mode: str, db: Path, cache: Path, n_trials: int | None) -> dict:
    out = db.with_suffix(".json")
    cmd = [sys.executable, __file__, "--child", mode, "--db", str(db), "--out", str(out),
           "--workload", a.workload, "--chunk-sizes", *map(str, a.chunk_sizes),
           "--hpb", *map(str, a.hpb), "--t-inners", *map(str, a.t_inners), "--threads", str(a.threads)]
    if n_trials is not None:
        cmd += ["--n-trials", str(n_trials)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), TORCHINDUCTOR_CACHE_DIR=str(cache),
               OMP_NUM_THREADS=str(a.threads))
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    data = json.loads(out.read_text())
    data["process_wall_s"] = time.perf_counter() - t0
    return data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", default="1,4,128,32,32,float32")
    p.add_argument("--chunk-sizes", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--hpb", type=int, nargs="+", default=[2, 4])
    p.add_argument("--t-inners", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--fraction", type=float, default=0.4)
    p.add_argument("--rounds", type=int, default=51, help="interleaved rounds of the final comparison")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1: a shared 2-core box oversubscribed by other "
                        "processes makes multi-threaded ms-scale timings swing by 100x)")
    p.add_argument("--child", choices=["tpe", "grid"], help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--n-trials", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return _child(a)

    work = Path(tempfile.mkdtemp(prefix="tuner_vs_grid_"))
    cache = work / "inductor-cache"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    sys.path.insert(0, str(ROOT))
    import torch

    import tuner
    import xlstm_kernels as xk
    from tuner._evaluate import summarize, time_one

    torch.set_num_threads(a.threads)
    space = tuner.SearchSpace.for_workload(a.workload, "cpu", **_space_kwargs(a))
    n_grid = len(space.candidates())
    budget = max(1, math.floor(a.fraction * n_grid))
    print(f"# {a.workload} on {xk.fingerprint('cpu').cpu} ({os.cpu_count()} cores), torch {torch.__version__}, "
          f"{platform.system()}; {a.threads} torch thread(s); {time.strftime('%Y-%m-%d')}")
    print(f"grid: {n_grid} candidates; tuner budget: {budget} evaluated candidates ({a.fraction:.0%})")

    cold = _spawn(a, "tpe", work / "tpe_cold.db", cache, budget)
    print(f"tuner cold cache: {cold['n_trials']} trials, wall {cold['process_wall_s']:.1f} s "
          f"(tuning {cold['wall_s']:.1f} s), winner {xk.KernelConfig.from_dict(cold['winner']['config']).short()}")
    warm = _spawn(a, "tpe", work / "tpe_warm.db", cache, budget)
    print(f"tuner warm cache: {warm['n_trials']} trials, wall {warm['process_wall_s']:.1f} s "
          f"(tuning {warm['wall_s']:.1f} s), winner {xk.KernelConfig.from_dict(warm['winner']['config']).short()}")
    grid = _spawn(a, "grid", work / "grid.db", work / "grid-inductor-cache", None)
    print(f"grid cold cache: {grid['n_trials']} trials, wall {grid['process_wall_s']:.1f} s; "
          f"rejected/failed: {len(grid['rejected'])}; tuner cold / grid cold wall = "
          f"{cold['process_wall_s'] / grid['process_wall_s']:.2f}")

    # the grid's best by its per-trial timing, then confirmed by its own paired re-timing
    grid_best = xk.KernelConfig.from_dict(grid["winner"]["config"])
    tuned = xk.KernelConfig.from_dict(cold["winner"]["config"])
    wl = tuner.parse_workload(a.workload)
    ev = tuner.Evaluator(wl, torch.device("cpu"), tuner.get_tuner_settings())
    inputs = ev.timing_inputs()
    fns = {"tuned": lambda: xk.mlstm(*inputs, config=tuned), "grid_best": lambda: xk.mlstm(*inputs, config=grid_best)}
    for fn in fns.values():
        for _ in range(3):
            fn()
    samples = {k: [] for k in fns}
    names = list(fns)
    for r in range(a.rounds):
        for j in range(len(names)):
            name = names[(j + r) % len(names)]
            samples[name].append(time_one(fns[name], torch.device("cpu")))
    t_tuned, t_grid = summarize(samples["tuned"]), summarize(samples["grid_best"])
    ratio = t_tuned.median_ms / t_grid.median_ms
    print(f"side by side ({a.rounds} interleaved rounds): tuned {tuned.short()} {t_tuned.median_ms:.3f} ms "
          f"(IQR {t_tuned.spread_ms:.3f}); grid best {grid_best.short()} {t_grid.median_ms:.3f} ms "
          f"(IQR {t_grid.spread_ms:.3f})")
    print(f"tuned / grid best = {ratio:.3f} ({'within' if ratio <= 1.03 else 'NOT within'} 3%); "
          f"trials {cold['n_trials']}/{n_grid} = {cold['n_trials'] / n_grid:.0%} of the grid; "
          f"speedup of the tuned winner over the default (tuner's paired re-timing): {cold['speedup']:.2f}x")


if __name__ == "__main__":
    main()
