"""Time `dvc repro` from a fresh clone: full run stage by stage, then a no-op rerun.

    python scripts/bench_pipeline.py [--params configs/smoke.yaml] [--out results/pipeline.md]

Clones the repository (HEAD) into a temporary directory, optionally copies a params file
over params.yaml and bootstraps the bundled data. The first run reproduces the stages one
at a time (`dvc repro -s NAME`, in dvc.yaml order, which is topological here) so each
stage's wall time is known; their sum is the first `dvc repro`. The second is a plain
`dvc repro` with nothing changed. Appends the times, date and machine to the results file
and writes the per-stage times beside it (`<out stem>-stages-<params stem>.csv`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True)
    return time.perf_counter() - start


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
    bootstrap = run(["genebench", "data", "bootstrap"], clone, env)
    stages = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=clone, env=env, check=True,
                            capture_output=True, text=True).stdout.split()
    timings = {}
    for stage in stages:
        timings[stage] = run(["dvc", "repro", "-s", stage], clone, env)
        print(f"{stage}: {timings[stage]:.1f} s", flush=True)
    full = sum(timings.values())
    noop = run(["dvc", "repro"], clone, env)
    line = (f"| {dt.date.today().isoformat()} | {args.params or 'params.yaml'} | {os.cpu_count()}-core "
            f"{platform.machine()} CPU | {bootstrap:.1f} s | {full / 60:.1f} min | {noop:.1f} s |\n")
    out = Path(args.out)
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("# `dvc repro` wall times (scripts/bench_pipeline.py)\n\n"
                       "| date | params | machine | bootstrap | first repro | no-op repro |\n"
                       "|---|---|---|---|---|---|\n")
    with out.open("a") as fh:
        fh.write(line)
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
