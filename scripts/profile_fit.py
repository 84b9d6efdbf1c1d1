"""Where a deep model's fit spends its time: cProfile of `Regressor.fit` against plain `model.fit`.

    python scripts/profile_fit.py [--dataset pbmc68k] [--epochs 3] [--archs dnn attention_lstm] [--top 15] [--out FILE]

On random data of the dataset's multi-task shape (as scripts/bench_throughput.py), each
architecture's Regressor (params.yaml defaults, `--epochs` epochs, patience past them) is
fitted once to build and trace it, then profiled over one more fit. The table lists the
entries with the largest cumulative time among genebench's own functions and the Keras
fit, grouped under the parts of `benchmark.models.fit_loop.fit_network`. A fit whose base
or tokens come from the process's fit cache is profiled too (`warm`), after one with the
cache cleared (`cold`). Appends to `--out` (a markdown file) with the date and commit.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import os
import platform
import pstats
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_throughput import _shape, random_task  # noqa: E402
from benchmark.config import load_config  # noqa: E402
from benchmark.training import make_regressor  # noqa: E402

# Functions worth a row: genebench's own and the Keras steps, by (file part, function name).
WATCHED = (
    ("benchmark/", None),
    ("keras/src/backend/tensorflow/trainer.py", "fit"),
    ("keras/src/backend/tensorflow/trainer.py", "predict"),
    ("keras/src/callbacks/early_stopping.py", None),
    ("sklearn/decomposition/_pca.py", "fit"),
    ("sklearn/neighbors/_base.py", "kneighbors"),
)


def _clear_fit_cache() -> None:
    try:
        from benchmark.models.fit_cache import FIT_CACHE
    except ImportError:  # before the cache existed
        return
    FIT_CACHE.clear()


def profile_fit(regressor, X, Y, cold: bool, top: int) -> tuple[float, list[tuple[str, int, float]]]:
    """(seconds, [(function, calls, cumulative s)]) of one fit, profiled."""
    if cold:
        _clear_fit_cache()
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    regressor.fit(X, Y)
    profile.disable()
    seconds = time.perf_counter() - started
    stats = pstats.Stats(profile).stats
    rows = []
    for (path, line, name), (_, calls, _, cumulative, _) in stats.items():
        for part, wanted in WATCHED:
            if part in path and (wanted is None or wanted == name):
                short = path.split("site-packages/")[-1].replace(str(REPO) + "/", "")
                rows.append((f"{short}:{line}({name})", calls, cumulative))
                break
    rows.sort(key=lambda row: -row[2])
    return seconds, rows[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pbmc68k")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--archs", nargs="*", default=["dnn", "attention_lstm"])
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", default=str(REPO / "results" / "profile_fit.md"))
    args = parser.parse_args()

    config = load_config().for_dataset(args.dataset)
    X, Y = random_task(*_shape(config, args.dataset))
    training = config.params.training.model_copy(update={"max_epochs": args.epochs, "patience": args.epochs + 1})
    params = config.params.model_copy(update={"training": training})
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    load = os.getloadavg()[0]
    lines = [f"## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit} {args.label}".rstrip(), "",
             f"{platform.machine()} CPU, {os.cpu_count()} cores, load average {load:.1f} at start; `{args.dataset}`'s "
             f"multi-task shape {X.shape[0]} x {X.shape[1]} -> {Y.shape[1]}, {args.epochs} epochs. Command: "
             f"`python scripts/profile_fit.py --dataset {args.dataset} --epochs {args.epochs} "
             f"--archs {' '.join(args.archs)}`.", ""]
    for arch in args.archs:
        regressor = make_regressor(arch, None, params)
        regressor.fit(X, Y)  # builds and traces
        for cold in (True, False):
            seconds, rows = profile_fit(regressor, X, Y, cold, args.top)
            lines += [f"### `{arch}`, {'cold' if cold else 'warm'} fit: {seconds:.3f} s under the profiler", "",
                      "| function | calls | cumulative s |", "| --- | ---: | ---: |"]
            lines += [f"| `{name}` | {calls} | {cumulative:.3f} |" for name, calls, cumulative in rows]
            lines.append("")
            print(f"{arch} {'cold' if cold else 'warm'}: {seconds:.3f} s", flush=True)
    out = Path(args.out)
    head = "" if out.exists() else (
        "# Profile of a deep model's fit (scripts/profile_fit.py)\n\nThe top entries of cProfile over one "
        "`Regressor.fit`, before and after issue 19's changes, each section one run.\n\n")
    with out.open("a") as handle:
        handle.write(head + "\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
