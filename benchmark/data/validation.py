"""Matrix-level checks shared by `data import`, `data validate` and `prepare`.

Readers turn a file into blocks of rows (parse errors are theirs); a `MatrixScan` of
those blocks keeps what the checks need, so no check holds the matrix; these checks
decide whether it can carry the benchmark protocol. Each failure is a `UserError` whose
one line names the source and the offending row, column or params key.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from benchmark.config import Config
from benchmark.data.canonical import Dataset
from benchmark.data.streaming import MatrixScan
from benchmark.errors import UserError


def _first_duplicate(ids: list[str]) -> str | None:
    counts = Counter(ids)
    return next((i for i in ids if counts[i] > 1), None)


def min_samples(test_size: float, folds: int) -> int:
    """Fewest samples that leave >= 1 held-out sample and >= 2 per validation fold."""
    n = 2
    while True:
        n_test = int(np.ceil(test_size * n))
        n_dev = n - n_test
        if n_test >= 1 and n_dev >= 2 * folds:
            return n
        n += 1


def scan_dataset(ds: Dataset, transform: str) -> MatrixScan:
    """`MatrixScan` of `ds.X` (samples as rows), read in blocks: a memory-mapped matrix is never copied whole."""
    from benchmark.data.rows import rows_per_block

    X = ds.X
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {X.shape}")
    scan = MatrixScan(X.shape[1], genes_are_rows=False, transform=transform)
    step = rows_per_block(2 * X.shape[1])
    for start in range(0, X.shape[0], step):
        scan.update(np.asarray(X[start:start + step]))
    return scan


def check_scanned(scan: MatrixScan, samples: list[str], genes: list[str], config: Config, source: str) -> None:
    """Every matrix-level check, from a scan of the matrix and its ids.

    In this order, the first failure raised: an empty matrix; empty or duplicate gene and
    sample ids; a non-finite value; too few samples for the split and folds; negative
    values under log1p; too few genes that vary for the targets; `task.single_gene` absent.
    """
    if not samples or not genes:
        raise UserError(f"{source}: the matrix is empty (no samples or no genes)")
    for kind, ids in (("gene", genes), ("sample", samples)):
        blank = next((pos for pos, i in enumerate(ids) if not str(i).strip()), None)
        if blank is not None:
            raise UserError(f"{source}: {kind} id number {blank + 1} is empty")
        dup = _first_duplicate(list(ids))
        if dup is not None:
            raise UserError(f"{source}: duplicate {kind} id {dup!r}")
    if scan.first_nonfinite is not None:
        row, col, is_nan = scan.first_nonfinite
        what = "a missing value (NaN, NA or empty cell)" if is_nan else "an infinite value"
        raise UserError(
            f"{source}: {what} at sample {samples[row]!r}, gene {genes[col]!r} "
            f"(row {row + 1}, column {col + 1}); impute or drop it before importing"
        )
    split, top_k = config.params.split, config.params.task.top_k
    need = min_samples(split.test_size, split.folds)
    if len(samples) < need:
        raise UserError(
            f"{source}: {len(samples)} samples are too few for split.test_size={split.test_size:g} "
            f"and split.folds={split.folds} (need at least {need})"
        )
    if scan.first_negative is not None:
        row, col = scan.first_negative
        raise UserError(
            f"{source}: datasets.{config.dataset}.transform is log1p but the matrix has negative values "
            f"(first at sample {samples[row]!r}, gene {genes[col]!r}); is it already log-scaled?"
        )
    variable = int((scan.gene_variance > 0).sum())
    if variable < top_k + 1:
        raise UserError(
            f"{source}: only {variable} of {len(genes)} genes vary across samples; "
            f"task.top_k={top_k} needs at least {top_k + 1} (targets plus one feature)"
        )
    single = config.params.task.single_gene
    if single is not None and single not in set(genes):
        raise UserError(f"{config.path.name}: task.single_gene {single!r} is not a gene of {source}")


def apply_transform(X: np.ndarray, transform: str) -> np.ndarray:
    """A dataset's `datasets.<name>.transform` of params.yaml, as float32."""
    X = np.asarray(X, dtype=np.float32)
    if transform == "log1p":
        return np.log1p(X)
    return X


def check_dataset(ds: Dataset, config: Config, source: str) -> MatrixScan:
    """Every check of `check_scanned` on a whole `Dataset` (read in blocks); returns the scan."""
    if ds.X.ndim != 2 or 0 in ds.X.shape:
        raise UserError(f"{source}: the matrix is empty (no samples or no genes)")
    scan = scan_dataset(ds, config.transform)
    check_scanned(scan, list(ds.samples), list(ds.genes), config, source)
    return scan
