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
from benchmark.data.matrix_blocks import MatrixScan
from benchmark.errors import UserError


def _first_duplicate(ids: list[str]) -> str | None:
    counts = Counter(ids)
    return next((i for i in ids if counts[i] > 1), None)


# Fewest samples in the held-out split and in every CV fold. Below it a score is noise: a
# 10-sample matrix once gave 2 held-out samples and a ridge R^2 of -80,203.
MIN_SAMPLES_PER_PART = 10


def split_sizes(n_samples: int, test_size: float, folds: int) -> tuple[int, int, int]:
    """(n_test, n_dev, smallest fold) of `n_samples` under `split.test_size` and `split.folds`.

    n_test is sklearn's `train_test_split` rule, ceil(test_size * n); the development
    samples are the rest, and KFold's smallest fold holds n_dev // folds of them.
    """
    n_test = int(np.ceil(test_size * n_samples))
    n_dev = n_samples - n_test
    return n_test, n_dev, n_dev // folds


def min_samples(test_size: float, folds: int, minimum: int | None = None) -> int:
    """Fewest samples whose held-out split and every CV fold hold at least `minimum` samples
    (default `MIN_SAMPLES_PER_PART`)."""
    minimum = MIN_SAMPLES_PER_PART if minimum is None else minimum
    n = minimum
    while min(split_sizes(n, test_size, folds)[::2]) < minimum:
        n += 1
    return n


def check_split_sizes(n_samples: int, config: Config, source: str, minimum: int | None = None) -> None:
    """UserError unless the held-out split and every CV fold of `n_samples` hold `minimum`
    samples (default `MIN_SAMPLES_PER_PART`, read when called).

    The message names the numbers and the params keys (`split.test_size`, `split.folds`).
    """
    minimum = MIN_SAMPLES_PER_PART if minimum is None else minimum
    split = config.params.split
    n_test, n_dev, fold = split_sizes(n_samples, split.test_size, split.folds)
    if n_test >= minimum and fold >= minimum:
        return
    short = []
    if n_test < minimum:
        short.append(f"{n_test} held-out samples (split.test_size={split.test_size:g})")
    if fold < minimum:
        short.append(f"CV folds of {fold} ({n_dev} development samples / split.folds={split.folds})")
    raise UserError(
        f"{source}: {n_samples} samples are too few: they leave {' and '.join(short)}, and each needs at least "
        f"{minimum}; this split needs at least {min_samples(split.test_size, split.folds, minimum)} samples "
        f"(or change split.test_size and split.folds in {config.path.name})"
    )


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


def check_scanned(scan: MatrixScan, samples: list[str], genes: list[str], config: Config, source: str,
                  transform_source: str | None = None) -> None:
    """Every matrix-level check, from a scan of the matrix and its ids.

    In this order, the first failure raised: an empty matrix; empty or duplicate gene and
    sample ids; a non-finite value; fewer than `MIN_SAMPLES_PER_PART` samples in the
    held-out split or a CV fold; negative values under log1p; too few genes that vary for
    the targets; `task.single_gene` absent. `transform_source`: where the user set the
    transform, as the message names it (`--transform log1p`); default
    `datasets.<name>.transform in params.yaml is log1p`.
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
    top_k = config.params.task.top_k
    check_split_sizes(len(samples), config, source)
    if scan.first_negative is not None:
        row, col = scan.first_negative
        said = transform_source or f"datasets.{config.dataset}.transform in {config.path.name} is log1p"
        raise UserError(
            f"{source}: {said}, but the matrix has negative values "
            f"(first at sample {samples[row]!r}, gene {genes[col]!r}); is it already log-scaled? "
            "(then its transform is none)"
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
