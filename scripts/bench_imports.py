"""What a stage process pays before it does any work: the imports, measured in fresh interpreters.

    python scripts/bench_imports.py [--repeats 5] [--out results/imports.md]

Each row imports one set of modules in a new `python -c` process (the venv's, with warm
file caches: every set runs once before timing) and records the median wall time over
`--repeats` runs, interpreter start-up included, teardown skipped (as genebench does).
The stage rows are the sets a genebench stage process imports: a deep model's tune or evaluate stage needs TensorFlow+Keras,
MLflow's SQL store, Optuna and scikit-learn; a baseline's needs all but TensorFlow. The
last column multiplies by the number of such processes in one `dvc repro` (2 tasks x
5 deep architectures, tune and evaluate each: 20 deep-model processes; per task, the
evaluate stages of mean, ridge and knn and the tune stages of ridge and knn: 10 baseline
processes; mean's tune stage runs no trial and imports neither), which is the time a
`dvc repro` spends importing whatever its configuration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SETS = [
    ("python alone", "pass", 0),
    ("numpy + pandas", "import numpy, pandas", 0),
    ("scikit-learn", "import sklearn.model_selection, sklearn.linear_model, sklearn.neighbors", 0),
    ("optuna", "import optuna", 0),
    ("mlflow + its SQL store", "import mlflow, mlflow.store.tracking.sqlalchemy_store", 0),
    ("tensorflow + keras", "import tensorflow, keras", 0),
    ("baseline stage (no TensorFlow)",
     "import sklearn.model_selection, sklearn.linear_model, sklearn.neighbors, optuna, mlflow, "
     "mlflow.store.tracking.sqlalchemy_store, matplotlib.pyplot", 10),
    ("deep-model stage",
     "import tensorflow, keras, sklearn.model_selection, optuna, mlflow, "
     "mlflow.store.tracking.sqlalchemy_store, matplotlib.pyplot", 20),
]


def timed(code: str, env: dict) -> float:
    start = time.perf_counter()
    # os._exit: genebench processes skip the interpreter teardown too (benchmark.cli.run).
    subprocess.run([sys.executable, "-c", f"{code}; import os; os._exit(0)"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "results" / "imports.md"))
    args = parser.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    load = os.getloadavg()[0]
    rows = []
    for label, code, processes in SETS:
        timed(code, env)  # warm the file cache and the bytecode
        median = statistics.median(timed(code, env) for _ in range(args.repeats))
        rows.append((label, median, processes))
        print(f"{label}: {median:.2f} s", flush=True)

    lines = [
        "# Import cost of a stage process (scripts/bench_imports.py)\n\n",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()}-core "
        f"{platform.machine()} CPU, load average {load:.1f} at start; Python {platform.python_version()}\n",
        f"- Median of {args.repeats} fresh `python -c \"import ...\"` runs each, interpreter start-up "
        "included, teardown skipped (`os._exit`, as genebench's own processes do).\n\n",
        "| modules | seconds per process | processes per `dvc repro` | seconds per `dvc repro` |\n",
        "|---|---:|---:|---:|\n",
    ]
    for label, median, processes in rows:
        total = f"{median * processes:.0f}" if processes else ""
        lines.append(f"| {label} | {median:.2f} | {processes or ''} | {total} |\n")
    floor = sum(median * processes for _, median, processes in rows)
    lines.append(f"\nImports alone: **{floor:.0f} s ({floor / 60:.1f} min)** of every `dvc repro`, "
                 "before prepare, compare and promote and before any model is fitted.\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines))
    print("".join(lines[-len(rows) - 3:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
