"""Two per-process costs genebench avoids, measured: interpreter teardown and grappler.

    python scripts/bench_overheads.py [--repeats 3] [--out results/overheads.md]

1. Teardown: a fresh interpreter imports what a deep-model stage imports, fits a tiny
   Keras model and logs one MLflow run to a throwaway SQLite store, prints a timestamp,
   then exits either normally or the way `benchmark.cli.run` does (exit handlers, flush,
   `os._exit`). The time from the timestamp to the process's end is the exit's cost.
2. Grappler: in a fresh process per setting, a recurrent Regressor (the default search
   space's larger shapes, 10 epochs, data of the bundled dataset's size) is fitted once
   (build + trace + train) and refitted (train only), with TensorFlow's graph optimizer
   on (TensorFlow's default) or off (what `benchmark.models.tensorflow_setup` sets on a CPU-only
   machine). Predictions of both settings are compared bit for bit.

Medians over `--repeats` runs; writes a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

EXIT_CHILD = """
import atexit, os, sys, time
import tensorflow as tf, keras, mlflow, optuna, sklearn.model_selection
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
model.compile("adam", "mse")
model.fit(tf.zeros((16, 8)), tf.zeros((16, 2)), verbose=0)
mlflow.set_tracking_uri("sqlite:///" + sys.argv[2])
with mlflow.start_run():
    mlflow.log_metric("x", 1.0)
print(time.time(), flush=True)
if sys.argv[1] == "fast":
    atexit._run_exitfuncs()
    sys.stdout.flush()
    os._exit(0)
"""

FIT_CHILD = """
import hashlib, json, sys, time
import numpy as np
from benchmark import training
from benchmark.models.tensorflow_setup import import_keras
tf, _ = import_keras()
if sys.argv[1] == "on":
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})
rng = np.random.default_rng(0)
X = rng.normal(size=(560, 715)).astype("float32")
Y = X[:, :20] @ rng.normal(size=(20, 50)).astype("float32")
hp = {"steps": 16, "units": 64, "layers": 2, "attention_units": 16, "dropout": 0.1,
      "learning_rate": 0.003, "batch_size": 64}
cfg = {"max_epochs": 10, "batch_size": 64, "learning_rate": 0.001, "patience": 100,
       "validation_fraction": 0.15, "seed": 42}
regressor = training.Regressor(sys.argv[2], hp, cfg)
start = time.perf_counter(); regressor.fit(X, Y); first = time.perf_counter() - start
start = time.perf_counter(); regressor.fit(X, Y); refit = time.perf_counter() - start
digest = hashlib.sha256(np.ascontiguousarray(regressor.predict(X)).tobytes()).hexdigest()
print(json.dumps({"first": first, "refit": refit, "digest": digest}))
"""


def exit_seconds(mode: str, env: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", EXIT_CHILD, mode, str(Path(tmp) / "mlflow.db")],
                              env=env, capture_output=True, text=True, check=True)
        end = time.time()
    return end - float(proc.stdout.strip().splitlines()[-1])


def fit_seconds(mode: str, arch: str, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", FIT_CHILD, mode, arch], env=env, cwd=REPO,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "results" / "overheads.md"))
    args = parser.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), MLFLOW_DISABLE_TELEMETRY="true")
    load = os.getloadavg()[0]

    exits = {mode: statistics.median(exit_seconds(mode, env) for _ in range(args.repeats))
             for mode in ("normal", "fast")}
    print(f"exit: {exits}", flush=True)

    fits = {}
    for arch in ("lstm", "gru", "attention_gru"):
        for mode in ("on", "off"):
            runs = [fit_seconds(mode, arch, env) for _ in range(args.repeats)]
            fits[arch, mode] = {"first": statistics.median(r["first"] for r in runs),
                                "refit": statistics.median(r["refit"] for r in runs),
                                "digests": {r["digest"] for r in runs}}
            print(arch, mode, fits[arch, mode], flush=True)

    lines = [
        "# Per-process overheads (scripts/bench_overheads.py)\n\n",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()}-core "
        f"{platform.machine()} CPU, load average {load:.1f} at start; Python {platform.python_version()}; "
        f"medians of {args.repeats} runs.\n\n",
        "## Exit of a process that loaded TensorFlow, MLflow, Optuna and scikit-learn\n\n",
        "| exit | seconds from the last line of work to the end of the process |\n|---|---:|\n",
        f"| normal interpreter exit | {exits['normal']:.2f} |\n",
        f"| exit handlers, flush, `os._exit` (`benchmark.cli.run`) | {exits['fast']:.2f} |\n\n",
        "## Grappler on (TensorFlow's default) vs off (genebench on a CPU-only machine)\n\n",
        "Regressor with steps 16, units 64, 2 layers (attention units 16), batch 64, 10 epochs, "
        "560 x 715 inputs, 50 targets.\n\n",
        "| arch | first fit, on | first fit, off | refit, on | refit, off | identical predictions |\n",
        "|---|---:|---:|---:|---:|---|\n",
    ]
    for arch in ("lstm", "gru", "attention_gru"):
        on, off = fits[arch, "on"], fits[arch, "off"]
        same = "yes" if len(on["digests"] | off["digests"]) == 1 else "no"
        lines.append(f"| `{arch}` | {on['first']:.2f} s | {off['first']:.2f} s | {on['refit']:.2f} s | "
                     f"{off['refit']:.2f} s | {same} |\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines))
    print("".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
