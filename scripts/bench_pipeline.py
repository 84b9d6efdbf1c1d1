"""Time `dvc repro` from a fresh clone: the whole first run, each stage in it, then a no-op rerun.

    python scripts/bench_pipeline.py [--params configs/smoke.yaml] [--out results/pipeline.md]

Clones the repository (HEAD) into a temporary directory, optionally copies a params file
over params.yaml and bootstraps the bundled data. The first run is one plain `dvc repro`
(what a user types); each stage's time is read off its output, from the stage's
"Running stage" line to the next one (so it includes DVC's own work between stages). The
second is a plain `dvc repro` with nothing changed. Time spent fitting models is the sum
of the `fit_seconds` that tune (per trial, in `artifacts/tuning/**.json`) and evaluate
(`artifacts/evaluation/**/run.json`) record: the wall time of every `Regressor.fit`,
which includes a deep model's tf.function tracing on its first fit. A `run` stage runs
its two tasks side by side (benchmark/run_stage.py), so its fits can add up to more
than its wall time: the share outside fitting is taken of process time, each stage's
wall time plus, for a `run` stage, the time its second task ran beside the first (the
tasks' tuning `trial_seconds` and evaluate `seconds`, less the longer task's). Everything else (imports,
data loading, predictions, MLflow logging, DVC) is "outside fitting".
Appends the times, date, machine and load average to the results file and writes the
per-stage times beside it (`<out stem>-stages-<params stem>.csv`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"^Running stage '([^']+)'")


def run(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True)
    return time.perf_counter() - start


def repro_by_stage(clone: Path, env: dict) -> dict[str, float]:
    """One `dvc repro`, echoed as it runs; seconds per stage from its "Running stage" lines."""
    marks: list[tuple[str, float]] = [("(dvc start-up)", time.perf_counter())]
    proc = subprocess.Popen(["dvc", "repro"], cwd=clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in proc.stdout:
        sys.stdout.write(line)
        match = STAGE_LINE.match(line)
        if match:
            marks.append((match.group(1), time.perf_counter()))
    if proc.wait() != 0:
        raise SystemExit(f"dvc repro failed with exit code {proc.returncode}")
    marks.append(("", time.perf_counter()))
    timings = {name: marks[i + 1][1] - start for i, (name, start) in enumerate(marks[:-1])}
    for name, seconds in timings.items():
        print(f"{name}: {seconds:.1f} s")
    return timings


def side_by_side_seconds(clone: Path) -> float:
    """Seconds the tasks of `run` stages ran beside one another: per (dataset, arch), the
    tasks' tuning and evaluate wall times summed, less the longest."""
    per_task: dict[tuple[str, str], list[float]] = {}
    for path in (clone / "artifacts" / "tuning").glob("*/*/*.json"):  # <dataset>/<task>/<arch>.json
        dataset, task, arch = path.parent.parent.name, path.parent.name, path.stem
        seconds = json.loads(path.read_text()).get("trial_seconds") or 0.0
        record = clone / "artifacts" / "evaluation" / dataset / task / arch / "run.json"
        if record.exists():
            seconds += json.loads(record.read_text()).get("seconds") or 0.0
        per_task.setdefault((dataset, arch), []).append(seconds)
    return sum(sum(times) - max(times) for times in per_task.values())


def fit_seconds(clone: Path) -> float:
    """Seconds spent in `Regressor.fit` over the whole run, as tune and evaluate record them."""
    tuned = sum(json.loads(p.read_text()).get("fit_seconds") or 0.0
                for p in (clone / "artifacts" / "tuning").rglob("*.json"))
    evaluated = sum(json.loads(p.read_text()).get("fit_seconds") or 0.0
                    for p in (clone / "artifacts" / "evaluation").rglob("run.json"))
    return tuned + evaluated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=None, help="params file to use instead of params.yaml")
    parser.add_argument("--out", default=str(REPO / "results" / "pipeline.md"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone")
    args = parser.parse_args()

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    tmp = Path(tempfile.mkdtemp(prefix="genebench-bench-"))
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    if args.params:
        shutil.copy(REPO / args.params, clone / "params.yaml")
        subprocess.run(["git", "commit", "-qam", "bench params"], cwd=clone, check=True)
    # The clone's own package, not the editable install's checkout (which may move on).
    env["PYTHONPATH"] = str(clone)
    bootstrap = run(["genebench", "data", "bootstrap"], clone, env)
    load = os.getloadavg()[0]
    timings = repro_by_stage(clone, env)
    full = sum(timings.values())
    fitting = fit_seconds(clone)
    process = full + side_by_side_seconds(clone)
    noop = run(["dvc", "repro"], clone, env)
    line = (f"| {dt.date.today().isoformat()} | {args.params or 'params.yaml'} | {os.cpu_count()}-core "
            f"{platform.machine()} CPU | {load:.1f} | {bootstrap:.1f} s | {full / 60:.1f} min | "
            f"{fitting / 60:.1f} min of {process / 60:.1f} min process time "
            f"({100 * (1 - fitting / process):.0f}% outside) | {noop:.1f} s |\n")
    out = Path(args.out)
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("# `dvc repro` wall times (scripts/bench_pipeline.py)\n\n"
                       "| date | params | machine | load average at start | bootstrap | first repro | fitting "
                       "(share outside it) | no-op repro |\n|---|---|---|---|---|---|---|---|\n")
    # The new row goes at the end of the file's first table (notes follow it), not of the file.
    lines = out.read_text().splitlines(keepends=True)
    first = next((i for i, text in enumerate(lines) if text.startswith("|")), len(lines))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    if end == len(lines) and lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    out.write_text("".join(lines[:end] + [line] + lines[end:]))
    stem = Path(args.params or "params.yaml").stem
    out.with_name(f"{out.stem}-stages-{stem}.csv").write_text(
        "stage,seconds\n" + "".join(f"{k},{v:.1f}\n" for k, v in timings.items()))
    print(line, end="")
    if args.keep:
        print(f"clone kept at {clone}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
