"""Matrix-level checks shared by `data import`, `data validate` and `prepare`.

Readers turn a file into a `Dataset` (parse errors are theirs); these checks decide
whether that matrix can carry the benchmark protocol. Each failure is a `UserError`
whose one line names the source and the offending row, column or params key.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from benchmark.config import Config
from benchmark.data.canonical import Dataset
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


def check_values(ds: Dataset, source: str) -> None:
    """Finite numbers, unique non-empty ids, a non-empty matrix."""
    X = np.asarray(ds.X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise UserError(f"{source}: the matrix is empty (no samples or no genes)")
    for kind, ids in (("gene", ds.genes), ("sample", ds.samples)):
        blank = next((pos for pos, i in enumerate(ids) if not str(i).strip()), None)
        if blank is not None:
            raise UserError(f"{source}: {kind} id number {blank + 1} is empty")
        dup = _first_duplicate(list(ids))
        if dup is not None:
            raise UserError(f"{source}: duplicate {kind} id {dup!r}")
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        what = "a missing value (NaN, NA or empty cell)" if np.isnan(X[row, col]) else "an infinite value"
        raise UserError(
            f"{source}: {what} at sample {ds.samples[row]!r}, gene {ds.genes[col]!r} "
            f"(row {row + 1}, column {col + 1}); impute or drop it before importing"
        )


def check_transform(X: np.ndarray, transform: str, source: str, samples: list[str], genes: list[str],
                    key: str = "transform") -> None:
    if transform == "log1p":
        neg = np.asarray(X) < 0
        if neg.any():
            row, col = map(int, np.argwhere(neg)[0])
            raise UserError(
                f"{source}: {key} is log1p but the matrix has negative values "
                f"(first at sample {samples[row]!r}, gene {genes[col]!r}); is it already log-scaled?"
            )


def apply_transform(X: np.ndarray, transform: str) -> np.ndarray:
    """A dataset's `datasets.<name>.transform` of params.yaml, as float32."""
    X = np.asarray(X, dtype=np.float32)
    if transform == "log1p":
        return np.log1p(X)
    return X


def check_protocol(ds: Dataset, config: Config, source: str) -> None:
    """Enough samples for the split and folds, enough variable genes for the targets."""
    split, top_k = config.params.split, config.params.task.top_k
    n_samples, n_genes = ds.X.shape
    need = min_samples(split.test_size, split.folds)
    if n_samples < need:
        raise UserError(
            f"{source}: {n_samples} samples are too few for split.test_size={split.test_size:g} "
            f"and split.folds={split.folds} (need at least {need})"
        )
    check_transform(ds.X, config.transform, source, ds.samples, ds.genes, key=f"datasets.{config.dataset}.transform")
    X = apply_transform(ds.X, config.transform)
    variable = int((np.var(X, axis=0) > 0).sum())
    if variable < top_k + 1:
        raise UserError(
            f"{source}: only {variable} of {n_genes} genes vary across samples; "
            f"task.top_k={top_k} needs at least {top_k + 1} (targets plus one feature)"
        )
    single = config.params.task.single_gene
    if single is not None and single not in ds.genes:
        raise UserError(f"{config.path.name}: task.single_gene {single!r} is not a gene of {source}")


def check_dataset(ds: Dataset, config: Config, source: str) -> None:
    check_values(ds, source)
    check_protocol(ds, config, source)
