"""Regression metrics for gene-expression predictions (no TensorFlow).

Conventions, for `y_true` and `y_pred` of shape (n_samples, n_targets):

- `mse`: mean over all entries of the squared error, which equals the mean over genes
  of the per-gene MSE (every gene has the same n). scikit-learn's
  `mean_squared_error(..., multioutput="uniform_average")`.
- `rmse`: `sqrt(mse)`, the root of the pooled MSE (so `rmse**2 == mse` always). It is
  *not* the mean of the per-gene RMSEs; those are reported in `per_gene["rmse"]`.
- `mae`: mean over all entries of the absolute error (= mean over genes of per-gene MAE).
- `r2`: mean over genes of the per-gene coefficient of determination
  (`r2_score(..., multioutput="raw_values")`, then the mean).
- `pearson`: mean of the per-gene Pearson r (`scipy.stats.pearsonr`) over the genes where
  r is defined. r is undefined when a gene's prediction or truth is constant on the
  scored samples (or n < 2). Such genes do not enter the mean (counting them as r = 0
  would be a choice the data do not make), so a model that predicts a constant for its
  hard genes is scored on its easy ones only: `pearson_undefined` counts them, to be read
  beside `pearson`. When no gene is defined `pearson` is `None` (JSON null), never NaN.
- `pearson_undefined`: the number of target genes (an int, 0 to n_targets) whose r is
  undefined. It is a count, not a metric of `METRICS`: it has no mean over folds.
- `rmse_scaled`, `mae_scaled`: RMSE and MAE after min-max scaling truth and prediction
  per gene with the *training-fold* range, `(y - y_min) / (y_max - y_min)` (a gene whose
  training range is zero is divided by 1). This is the [0, 1] convention of the seed's
  reported figures. Predictions are not clipped, so held-out values may fall outside
  [0, 1].

All values are plain Python floats (or None; `pearson_undefined` an int), ready for JSON and MLflow.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional

import numpy as np
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

METRICS = ("rmse", "mae", "mse", "r2", "pearson")
SCALED_METRICS = ("rmse_scaled", "mae_scaled")


def _as_2d(name: str, values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a (n_samples, n_targets) array, got shape {array.shape}")
    return array


def per_gene_pearson(y_true: np.ndarray, y_pred: np.ndarray) -> list[Optional[float]]:
    """Pearson r of each target column; None where it is undefined (constant column, n < 2)."""
    y_true = _as_2d("y_true", y_true)
    y_pred = _as_2d("y_pred", y_pred)
    r = np.full(y_true.shape[1], np.nan)
    if len(y_true) >= 2:
        # Constant columns are left out up front: pearsonr would warn and return NaN for them.
        defined = (np.ptp(y_true, axis=0) > 0) & (np.ptp(y_pred, axis=0) > 0)
        if defined.any():
            # One call for every gene (a column each); each r equals a per-column pearsonr's, bit for bit.
            r[defined] = pearsonr(y_true[:, defined], y_pred[:, defined], axis=0).statistic
    return [None if math.isnan(value) else float(value) for value in r]


def minmax_scale(y: np.ndarray, y_min: np.ndarray, y_max: np.ndarray) -> np.ndarray:
    """Scale each column by the given (training-fold) range; a zero range divides by 1."""
    y_min = np.asarray(y_min, dtype=np.float64).reshape(-1)
    span = np.asarray(y_max, dtype=np.float64).reshape(-1) - y_min
    span = np.where(span > 0, span, 1.0)
    return (y - y_min) / span


def regression_metrics(y_true, y_pred, y_min, y_max) -> dict:
    """Metrics of predictions `y_pred` against `y_true`, both (n_samples, n_targets).

    `y_min`, `y_max`: (n_targets,) per-gene minimum and maximum of the training part of
    the fold, used only for `rmse_scaled` and `mae_scaled`. See the module docstring for
    the exact definitions. Returns `{"rmse", "mae", "mse", "r2", "pearson",
    "rmse_scaled", "mae_scaled": float | None, "pearson_undefined": int,
    "per_gene": {"r2": [...], "rmse": [...]}}`.
    """
    y_true = _as_2d("y_true", y_true)
    y_pred = _as_2d("y_pred", y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_pred: expected shape {y_true.shape} like y_true, got {y_pred.shape}")
    n_targets = y_true.shape[1]
    for name, bound in (("y_min", y_min), ("y_max", y_max)):
        if np.asarray(bound).size != n_targets:
            raise ValueError(f"{name}: expected {n_targets} values (one per target), got {np.asarray(bound).size}")

    mse = float(mean_squared_error(y_true, y_pred))
    gene_mse = mean_squared_error(y_true, y_pred, multioutput="raw_values")
    gene_r2 = r2_score(y_true, y_pred, multioutput="raw_values") if len(y_true) >= 2 else np.full(n_targets, np.nan)
    gene_pearson = per_gene_pearson(y_true, y_pred)
    pearson = [r for r in gene_pearson if r is not None]

    scaled_true = minmax_scale(y_true, y_min, y_max)
    scaled_pred = minmax_scale(y_pred, y_min, y_max)
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": _finite_mean(gene_r2),
        "pearson": float(np.mean(pearson)) if pearson else None,
        "pearson_undefined": len(gene_pearson) - len(pearson),
        "rmse_scaled": math.sqrt(float(mean_squared_error(scaled_true, scaled_pred))),
        "mae_scaled": float(mean_absolute_error(scaled_true, scaled_pred)),
        "per_gene": {
            "r2": [_finite_or_none(v) for v in gene_r2],
            "rmse": [float(math.sqrt(v)) for v in gene_mse],
        },
    }


def _finite_or_none(value) -> Optional[float]:
    value = float(value)
    return value if math.isfinite(value) else None


def _finite_mean(values: Iterable) -> Optional[float]:
    finite = [float(v) for v in values if math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else None


def fold_summary(fold_metrics: Iterable[Mapping]) -> dict[str, Optional[dict]]:
    """Mean and standard deviation across folds of every scalar metric.

    `fold_metrics`: one `regression_metrics` dict per fold (`per_gene` is ignored).
    Returns `{metric: {"mean": float, "std": float | None}}`. `std` is the sample
    standard deviation (ddof=1, the estimate the corrected resampled t-test uses; it is
    None with a single value). Folds where a metric is None (e.g. an undefined Pearson r)
    are skipped; a metric that is None in every fold maps to None.
    """
    fold_metrics = list(fold_metrics)
    names: list[str] = []
    for metrics in fold_metrics:
        names += [k for k, v in metrics.items() if k not in names and not isinstance(v, Mapping)]
    summary: dict[str, Optional[dict]] = {}
    for name in names:
        values = [float(m[name]) for m in fold_metrics if m.get(name) is not None]
        if not values:
            summary[name] = None
            continue
        summary[name] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        }
    return summary
