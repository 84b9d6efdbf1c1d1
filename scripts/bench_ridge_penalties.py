"""A streamed ridge's solve with a penalty per target: one Cholesky factor per penalty against
one per group of close penalties (`blockwise_fit.solve_ridge_penalties`).

    python scripts/bench_ridge_penalties.py [--features 10413] [--rows 12000] [--out results/ridge-penalties.json]

Sums the float64 normal equations (`blockwise_fit.normal_equations`, block by block) of a
seeded low-rank-plus-noise float32 matrix (`--rows` x `--features`, 50 targets read from
the same 20 programmes) and solves them, on one thread, for 50
targets whose penalties are the 17 distinct values a per-target leave-one-out search chose
on `data synth`'s 12,000 x 10,463 multi task (865.96 to 11,547.8, spread over the targets in
turn): first one `solve_ridge` per distinct penalty (what `fit_normal_equations` did before),
then `solve_ridge_penalties`. Prints and writes both times and the largest difference of the
coefficients relative to the largest coefficient.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The penalties chosen on data synth's 12,000 x 10,463 multi task (results/scale.md).
MEASURED = [865.96432336, 1154.78198469, 1333.52143216, 1539.92652606, 1778.27941004, 2053.52502646,
            2371.37370566, 3162.27766017, 3651.74127255, 4216.96503429, 4869.67525166, 5623.4132519,
            6493.81631576, 7498.94209332, 8659.6432336, 10000.0, 11547.81984689]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=10413)
    parser.add_argument("--rows", type=int, default=12000)
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from threadpoolctl import threadpool_limits

    from benchmark.data.rows import RowView
    from benchmark.models import blockwise_fit

    rng = np.random.default_rng(0)
    p, k = args.features, args.targets
    block = rng.normal(size=(args.rows, 20)) @ rng.normal(size=(20, p + k)) + rng.normal(size=(args.rows, p + k))
    X, Y = block[:, :p].astype(np.float32), block[:, p:].copy()
    del block
    with threadpool_limits(1):
        started = time.perf_counter()  # the sums block by block, as a streamed fit makes them
        n, x_sum, y_sum, XtX, XtY = blockwise_fit.normal_equations(RowView(X, rows=np.arange(args.rows)), Y)
        sums_seconds = time.perf_counter() - started
        alphas = np.array([MEASURED[t % len(MEASURED)] for t in range(k)])

        started = time.perf_counter()
        direct = np.empty((k, p))
        for alpha in np.unique(alphas):
            targets = np.flatnonzero(alphas == alpha)
            direct[targets] = blockwise_fit.solve_ridge(n, x_sum, y_sum[targets], XtX, XtY[:, targets],
                                                        alpha=float(alpha))[0]
        direct_seconds = time.perf_counter() - started

        started = time.perf_counter()
        grouped, _ = blockwise_fit.solve_ridge_penalties(n, x_sum, y_sum, XtX, XtY, alphas)
        grouped_seconds = time.perf_counter() - started

    result = {
        "features": p, "rows": args.rows, "targets": k, "distinct_penalties": int(len(np.unique(alphas))),
        "threads": 1, "normal_equations_s": round(sums_seconds, 1),
        "one_factor_per_penalty_s": round(direct_seconds, 1), "solve_ridge_penalties_s": round(grouped_seconds, 1),
        "speedup": round(direct_seconds / grouped_seconds, 2),
        "max_relative_difference": float(np.max(np.abs(grouped - direct)) / np.max(np.abs(direct))),
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
