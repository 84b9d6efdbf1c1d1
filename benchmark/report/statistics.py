"""Paired comparison of a model against a reference: the verdict's Bayesian correlated t-test
over the scored CV resamples, the paired bootstrap of the held-out RMSE difference, the
per-gene win rate, and the frequentist corrected t-test with its Holm adjustment (shown,
deciding no wording).

Pure functions of numbers (numpy and scipy only: no TensorFlow, no MLflow, no files), so
promotion's gate (`benchmark.promotion_gate`) calls the same `bayesian_correlated_ttest` and
`verdict` as the report.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    import pandas as pd

VERDICTS = ("better", "equivalent", "worse", "undecided")
BOOTSTRAP_RESAMPLES = 2000  # B of the held-out paired bootstrap; a constant, so reruns agree
BOOTSTRAP_LEVEL = 0.95
_BOOTSTRAP_BLOCK = 250  # resamples drawn at a time: bounds the (block, n_test) index array


def _no_spread(d: np.ndarray) -> bool:
    """Differences equal up to float rounding (0.55 - 0.50 vs 0.53 - 0.48) have no variance:
    a t statistic or posterior scale from a rounding residue would be noise, not evidence."""
    return bool(np.ptp(d) <= 16 * np.finfo(np.float64).eps * max(float(np.abs(d).max()), np.finfo(np.float64).tiny))


@dataclass(frozen=True)
class BayesianTTest:
    """Posterior of the mean difference (model − reference) from the correlated t-test.

    `p_better` = P(mean difference < −rope), `p_equivalent` = P(−rope ≤ · ≤ rope),
    `p_worse` = P(· > rope), for an error metric (RMSE: negative = the model errs less).
    All three are None when fewer than two resamples make the posterior undefined.
    `location`, `scale`, `df`: the Student t posterior (scale 0: a point mass at `location`).
    `rope`: the absolute half-width used, in the metric's units; `rho`: the correlation.
    """

    p_better: Optional[float]
    p_equivalent: Optional[float]
    p_worse: Optional[float]
    location: float
    scale: Optional[float]
    df: int
    n: int
    rho: float
    rope: float


def bayesian_correlated_ttest(differences: Sequence[float], rho: float, rope: float) -> BayesianTTest:
    """Bayesian correlated t-test (Corani & Benavoli 2015; Benavoli et al. 2017, JMLR 18:77).

    `differences`: (n,) paired per-resample score differences, model − reference, over the
    same scored CV resamples (all repeats x folds), in the metric's units (RMSE: negative =
    model better). `rho`: the correlation between resamples that share training samples,
    n_test / n_total of a fold (1/k for k-fold CV), 0 <= rho < 1. `rope`: the absolute
    half-width of the region of practical equivalence, in the same units (>= 0).

    The posterior of the mean difference is Student t with df = n − 1, location mean(d) and
    scale sqrt((1/n + rho/(1 − rho)) · var(d, ddof=1)): the variance widened for the
    overlap of training sets, as Nadeau & Bengio's correction does. Where the differences
    do not vary the posterior is a point mass at mean(d); with n < 2 it is undefined.
    """
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"rho must lie in [0, 1), got {rho!r}")
    if not rope >= 0.0:
        raise ValueError(f"rope must be >= 0, got {rope!r}")
    n = int(d.size)
    location = float(d.mean()) if n else math.nan
    if n < 2:
        return BayesianTTest(None, None, None, location, None, max(n - 1, 0), n, float(rho), float(rope))
    if _no_spread(d):
        better, worse = float(location < -rope), float(location > rope)
        return BayesianTTest(better, 1.0 - better - worse, worse, location, 0.0, n - 1, n, float(rho), float(rope))
    scale = math.sqrt((1.0 / n + rho / (1.0 - rho)) * float(d.var(ddof=1)))
    posterior = stats.t(df=n - 1, loc=location, scale=scale)
    better = float(posterior.cdf(-rope))
    worse = float(posterior.sf(rope))
    # The remainder, not cdf(rope) - cdf(-rope), so the three sum to 1 (as baycomp's do); an
    # empty rope holds no mass at all, not a rounding residue.
    equivalent = 0.0 if rope == 0 else max(0.0, 1.0 - better - worse)
    return BayesianTTest(better, equivalent, worse, location, scale, n - 1, n, float(rho), float(rope))


def verdict(result: BayesianTTest, confidence: float) -> str:
    """`better`, `equivalent` or `worse` where that posterior probability is >= `confidence`
    (0.5 < confidence < 1, so at most one can qualify); `undecided` otherwise or where the
    test is undefined (fewer than two resamples)."""
    for name, p in (("better", result.p_better), ("equivalent", result.p_equivalent), ("worse", result.p_worse)):
        if p is not None and p >= confidence:
            return name
    return "undecided"


def rho_from_sizes(n_train: Sequence[int], n_val: Sequence[int]) -> float:
    """rho = n_test / n_total of a fold, n_val / (n_val + n_train), averaged over the folds."""
    n_train, n_val = np.asarray(n_train, dtype=np.float64), np.asarray(n_val, dtype=np.float64)
    return float(np.mean(n_val / (n_val + n_train)))


@dataclass(frozen=True)
class PairedBootstrap:
    """The held-out RMSE difference (model − reference) and its bootstrap percentile interval."""

    difference: float
    ci95: tuple[float, float]
    resamples: int
    seed: int


def stable_seed(*parts: str) -> int:
    """A seed from names (dataset, task, model, reference): the same on every run and machine,
    different between comparisons, unlike Python's salted `hash`."""
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()[:8], "little")


def paired_bootstrap_rmse(observed: np.ndarray, model: np.ndarray, reference: np.ndarray, seed: int,
                          resamples: int = BOOTSTRAP_RESAMPLES) -> PairedBootstrap:
    """Paired bootstrap over held-out samples of RMSE(model) − RMSE(reference).

    `observed`, `model`, `reference`: (n_samples, n_genes) held-out values and the two
    predictions, in expression units, rows the same samples. RMSE is
    `benchmark.metrics`': sqrt of the mean over every sample x gene entry of the squared
    error. Samples (rows, with all their genes) are drawn with replacement, the same draw
    for both models, `resamples` times from `np.random.default_rng(seed)`; the interval is
    the 2.5th and 97.5th percentile of the resampled differences.
    """
    observed = np.asarray(observed, dtype=np.float64)
    sse_model = np.square(np.asarray(model, dtype=np.float64) - observed).sum(axis=1)
    sse_reference = np.square(np.asarray(reference, dtype=np.float64) - observed).sum(axis=1)
    n, genes = observed.shape
    difference = math.sqrt(sse_model.sum() / (n * genes)) - math.sqrt(sse_reference.sum() / (n * genes))
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, resamples, _BOOTSTRAP_BLOCK):
        rows = rng.integers(0, n, size=(min(_BOOTSTRAP_BLOCK, resamples - start), n))
        draws.append(np.sqrt(sse_model[rows].sum(axis=1) / (n * genes))
                     - np.sqrt(sse_reference[rows].sum(axis=1) / (n * genes)))
    tail = 100 * (1 - BOOTSTRAP_LEVEL) / 2
    low, high = np.percentile(np.concatenate(draws), [tail, 100 - tail])
    return PairedBootstrap(float(difference), (float(low), float(high)), resamples, seed)


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
    if _no_spread(d):  # t undefined, not a huge number divided by a rounding residue
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
    import pandas as pd

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
