"""Time one `run` stage with its tasks one after the other and side by side.

    python scripts/bench_run_jobs.py [--dataset cbmc] [--arch attention_lstm] [--out results/parallel-tasks.md]

In a fresh clone of HEAD with the bundled data bootstrapped and prepared, runs
`genebench run --dataset D --arch A` three times from empty stores (no study to resume):

- `--jobs 1` with `training.threads: 2`: the tasks one after the other, each fit on both
  cores (what `run` did before the tasks ran side by side);
- `--jobs 1` with `training.threads: 1`;
- `--jobs 2` with `training.threads: 1` (the default on a 2-core machine).

Records the wall times and whether the two `threads: 1` runs wrote the same metrics
(every field but the MLflow run id) and tuning results (best parameters and value), and
appends a table to the results file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STORES = ("optuna.db", "mlflow.db", "mlruns", "artifacts/tuning", "artifacts/evaluation", "metrics")


def _outputs(clone: Path, dataset: str, arch: str) -> dict:
    found = {}
    for task in ("single", "multi"):
        metrics = json.loads((clone / "metrics" / dataset / task / f"{arch}.json").read_text())
        metrics.pop("mlflow_run_id", None)
        tuned = json.loads((clone / "artifacts" / "tuning" / dataset / task / f"{arch}.json").read_text())
        found[task] = [metrics, tuned["best_params"], tuned["best_value"]]
    return found


def _timed_run(clone: Path, env: dict, dataset: str, arch: str, jobs: int, threads: int) -> float:
    for name in STORES:
        path = clone / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["training"]["threads"] = threads
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.perf_counter()
    subprocess.run(["genebench", "run", "--dataset", dataset, "--arch", arch, "--jobs", str(jobs)], cwd=clone,
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cbmc")
    parser.add_argument("--arch", default="attention_lstm")
    parser.add_argument("--out", default=str(REPO / "results" / "parallel-tasks.md"))
    args = parser.parse_args()

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               GENEBENCH_WORKER="0")
    env.pop("MLFLOW_TRACKING_URI", None)
    tmp = Path(tempfile.mkdtemp(prefix="genebench-jobs-"))
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env["PYTHONPATH"] = str(clone)
    subprocess.run(["genebench", "data", "bootstrap", "--dataset", args.dataset], cwd=clone, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["genebench", "prepare", "--dataset", args.dataset], cwd=clone, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    load = os.getloadavg()[0]
    trials = yaml.safe_load((clone / "params.yaml").read_text())["tuning"]["n_trials"]
    rows = []
    outputs = {}
    for jobs, threads in ((1, 2), (1, 1), (2, 1)):
        seconds = _timed_run(clone, env, args.dataset, args.arch, jobs, threads)
        outputs[(jobs, threads)] = _outputs(clone, args.dataset, args.arch)
        rows.append((jobs, threads, seconds))
        print(f"--jobs {jobs}, threads {threads}: {seconds:.1f} s", flush=True)
    same = outputs[(1, 1)] == outputs[(2, 1)]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    base = rows[0][2]
    table = "".join(f"| `--jobs {jobs}` | {threads} | {seconds:.1f} s | {base / seconds:.2f}x |\n"
                    for jobs, threads, seconds in rows)
    section = (f"\n## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}: "
               f"`run --dataset {args.dataset} --arch {args.arch}`\n\n"
               f"{os.cpu_count()}-core {platform.machine()} CPU, load average {load:.1f} at the start; "
               f"`tuning.n_trials` {trials}, params.yaml otherwise; each run from empty stores "
               f"(`python scripts/bench_run_jobs.py --dataset {args.dataset} --arch {args.arch}`).\n\n"
               "| tasks | `training.threads` | wall time | speed against the first row |\n|---|---:|---:|---:|\n"
               + table + "\n"
               + ("The two `threads: 1` runs wrote the same metrics and tuning results, bit for bit.\n" if same else
                  "**The two `threads: 1` runs wrote different metrics or tuning results.**\n"))
    out = Path(args.out)
    if not out.exists():
        out.write_text("# One `run` stage, its tasks one after the other and side by side "
                       "(scripts/bench_run_jobs.py)\n")
    out.write_text(out.read_text() + section)
    print(section)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
