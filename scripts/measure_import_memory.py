"""Peak memory of `genebench data import` of a GEO series matrix, for results/memory_import.md.

    python scripts/measure_import_memory.py --genes 10000 --samples 1000 [--code DIR] [--keep FILE]

Writes a synthetic GEO series matrix (`GSE..._series_matrix.txt`: metadata lines, then a
genes x samples table, values with 6 significant digits) block by block, makes a fresh
project (params.yaml of this checkout, `dvc init --no-scm`) in a temporary directory, and
runs `genebench data import FILE --name geo` there in a child process: the code of
`--code` (a checkout's root; default this one) first on PYTHONPATH. The child reports its
own peak RSS (`getrusage(RUSAGE_SELF)`, in MiB): the import itself, not the `dvc add`
subprocess (whose RUSAGE_CHILDREN figure Linux takes from the forked image before exec,
i.e. the import's own RSS at that moment, so it is not reported).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# Runs in the child: the CLI's own entry point, then its peak RSS.
CHILD = """
import json, resource, sys
from benchmark.cli import main
rc = main(sys.argv[1:])
self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("MEASURED " + json.dumps({"rc": rc, "import_peak_mib": round(self_kib / 1024, 1)}))
"""


def write_series_matrix(path: Path, genes: int, samples: int, seed: int = 0, block: int = 1000) -> None:
    """A GEO series matrix of `genes` x `samples` log-expression-like values, written a block of genes at a time."""
    rng = np.random.default_rng(seed)
    gsm = [f"GSM{1000000 + s}" for s in range(samples)]
    quoted = lambda values: "\t".join(f'"{v}"' for v in values)  # noqa: E731
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("\n".join([
            '!Series_title\t"genebench memory check"', '!Series_geo_accession\t"GSE000001"',
            "!Sample_geo_accession\t" + quoted(gsm),
            "!Sample_data_processing\t" + quoted("RMA, log2" for _ in gsm),
            "!series_matrix_table_begin", '"ID_REF"\t' + quoted(gsm)]) + "\n")
        for g0 in range(0, genes, block):
            values = rng.gamma(4.0, 1.5, size=(min(block, genes - g0), samples)).astype(np.float32)
            fmt = "\t".join(["%s", *["%.6g"] * samples])
            fh.write("\n".join(fmt % (f'"{g0 + k + 1}_at"', *row) for k, row in enumerate(values.tolist())) + "\n")
        fh.write("!series_matrix_table_end\n")


def make_project(root: Path) -> None:
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=root, check=True)


def measure(matrix: Path, code: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="genebench-memory-") as tmp:
        root = Path(tmp)
        make_project(root)
        env = dict(os.environ, PYTHONPATH=str(code), GENEBENCH_ROOT=str(root), DVC_NO_ANALYTICS="1")
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", CHILD, "data", "import", str(matrix), "--name", "geo"],
                                cwd=root, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    lines = [line for line in result.stdout.splitlines() if line.startswith("MEASURED ")]
    figures = json.loads(lines[-1][len("MEASURED "):]) if lines else {}
    if result.returncode != 0 or figures.get("rc") != 0:
        sys.exit(f"import failed (exit {figures.get('rc', result.returncode)}): {result.stderr.strip()[-2000:]}")
    return {**figures, "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--genes", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--code", type=Path, default=REPO, help="root of the checkout whose code imports")
    parser.add_argument("--keep", type=Path, default=None, help="write (or reuse) the matrix here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genebench-geo-") as tmp:
        matrix = args.keep or Path(tmp) / "GSE000001_series_matrix.txt"
        if not matrix.exists():
            write_series_matrix(matrix, args.genes, args.samples)
        figures = measure(matrix, args.code.resolve())
        figures.update(file_mib=round(matrix.stat().st_size / 2**20, 1), genes=args.genes, samples=args.samples,
                       code=str(args.code))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
