"""Which SQL statements a tuning run sends to its Optuna storage, by kind, per trial.

One default study of a tiny workload on the configured storage (the embedded SQLite unless
OPTUNA_STORAGE points elsewhere), with every statement counted by its first 90 characters: what
docs/fleet.md's per-trial cost is made of.

Run: ``XLSTM_AUTOTUNE_HOME=$(mktemp -d) PYTHONPATH=. python benchmarks/storage_statements.py``
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from sqlalchemy import event  # noqa: E402

import tuner  # noqa: E402
from storage import open_db  # noqa: E402
from tuner.settings import get_tuner_settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workload", default="1,2,64,16,16,float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = get_tuner_settings()
    kinds: collections.Counter[str] = collections.Counter()
    with open_db(settings.resolved_db_path()) as db:
        engine = tuner.optuna_storage(db, settings).engine

        @event.listens_for(engine, "after_cursor_execute")
        def _count(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            kinds[re.sub(r"\s+", " ", statement)[:90]] += 1

        res = tuner.tune_workload(args.workload, db=db, device="cpu")
    n, total = res.n_trials, sum(kinds.values())
    print(f"# {args.workload}: {n} trials, {total} statements, {total / n:.0f} per trial")
    for text, count in kinds.most_common(args.top):
        print(f"{count:6d} {count / n:6.1f}/trial  {text}")


if __name__ == "__main__":
    main()
