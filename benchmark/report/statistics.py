"""Paired comparison of a model against a baseline: over CV folds and over held-out genes,
and the Holm adjustment of the p-values of several models compared with the same baseline."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class CorrectedTTest:
    """Nadeau & Bengio's corrected resampled t-test on per-fold score differences.

    `mean_difference`: mean over folds of (model - baseline); for RMSE negative means the
    model is better. `t` and `p_value` are None when the differences do not vary (the test
    is undefined) or there are fewer than two folds.
    """

    mean_difference: float
    t: Optional[float]
    df: int
    p_value: Optional[float]
    folds: int
    test_train_ratio: float


def corrected_resampled_ttest(differences: Sequence[float], test_train_ratio: float) -> CorrectedTTest:
    """Two-sided corrected resampled t-test (Nadeau & Bengio 2003, Machine Learning 52:239).

    `differences`: one score difference per fold, the same folds for both models.
    `test_train_ratio`: n_test / n_train of a fold. The plain paired t-test treats the k
    folds as independent, but their training sets overlap, which makes it far too
    liberal; the correction inflates the variance term from 1/k to 1/k + n_test/n_train:

        t = mean(d) / sqrt((1/k + n_test/n_train) * var(d, ddof=1)),  df = k - 1.
    """
    d = np.asarray(differences, dtype=np.float64)
    k = int(d.size)
    mean = float(d.mean()) if k else math.nan
    if k < 2:
        return CorrectedTTest(mean, None, max(k - 1, 0), None, k, test_train_ratio)
    # Differences equal up to rounding (e.g. 0.55-0.5 vs 0.53-0.48) have no spread: t is
    # undefined, not a huge number divided by a rounding residue.
    if np.ptp(d) <= 16 * np.finfo(np.float64).eps * max(float(np.abs(d).max()), np.finfo(np.float64).tiny):
        return CorrectedTTest(mean, None, k - 1, None, k, test_train_ratio)
    variance = float(d.var(ddof=1))
    scale = math.sqrt((1.0 / k + test_train_ratio) * variance)
    t = mean / scale
    p = float(2.0 * stats.t.sf(abs(t), df=k - 1))
    return CorrectedTTest(mean, float(t), k - 1, p, k, test_train_ratio)


def cv_test_train_ratio(n_dev: int, k: int) -> float:
    """n_test / n_train of one K-fold split over n_dev samples: (n_dev/k) / (n_dev - n_dev/k)."""
    n_val = n_dev / k
    return n_val / (n_dev - n_val)


@dataclass(frozen=True)
class WinRate:
    """Fraction of target genes where the model's held-out RMSE is strictly below the baseline's."""

    wins: int
    genes: int

    @property
    def rate(self) -> float:
        return self.wins / self.genes


def per_gene_win_rate(model_rmse: pd.Series, baseline_rmse: pd.Series) -> WinRate:
    """`model_rmse`, `baseline_rmse`: per-gene held-out RMSE indexed by gene id (same genes)."""
    joined = pd.concat({"model": model_rmse, "baseline": baseline_rmse}, axis=1, join="inner")
    return WinRate(wins=int((joined["model"] < joined["baseline"]).sum()), genes=int(len(joined)))


def holm_adjusted(p_values: Mapping[str, Optional[float]]) -> dict[str, Optional[float]]:
    """Holm's step-down adjustment (Holm 1979) of one family of p-values, by the same keys.

    `p_values`: e.g. architecture -> raw p of its test against the best baseline, for one
    (dataset, task). Sorted ascending, the i-th of m defined p-values (i from 0) becomes
    max over j <= i of min(1, (m - j) * p_(j)), which bounds the family-wise error rate
    without assuming the tests independent. A None p (undefined test) stays None and is
    not counted in m: a test that could not be run cannot produce a false positive.
    """
    from statsmodels.stats.multitest import multipletests

    defined = {key: float(p) for key, p in p_values.items() if p is not None}
    adjusted: dict[str, Optional[float]] = {key: None for key in p_values}
    if defined:
        _, corrected, _, _ = multipletests(list(defined.values()), method="holm")
        adjusted.update({key: float(p) for key, p in zip(defined, corrected)})
    return adjusted
