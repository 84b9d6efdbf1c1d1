"""Ridge with its penalty chosen in closed form: efficient leave-one-out over a log grid.

One solver serves the `ridge` baseline and the base every deep model corrects
(`benchmark.models.residual`), so the two are one model. It is what scikit-learn's
`RidgeCV` (efficient leave-one-out) computes, written out so that the leave-one-out
predictions at the chosen penalty come back too (the deep models' base needs them), and
so that one eigendecomposition serves the whole grid:

    Xc = X - mean(X), Yc = Y - mean(Y)            (the intercept is not penalised)
    Xc Xc' = U diag(w) U'  (n <= p)  or  Xc' Xc = V diag(w) V'  (n > p)
    Z = U sqrt(w) (n <= p) or Xc V (n > p), so that Z Z' = Xc Xc'
    fitted(alpha) = Z diag(1 / (w + alpha)) Z' Yc
    leverage_i(alpha) = sum_j Z_ij^2 / (w_j + alpha) + 1/n
    loo residual_i = (Yc_i - fitted_i) / (1 - leverage_i)

The criterion is the mean squared leave-one-out residual, over rows and (unless
`per_target`) over targets, as `RidgeCV(alphas, alpha_per_target=...)` minimises it.
Ties go to the larger penalty (the simpler model). No TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_GRID = (1e-3, 1e7, 161)  # low, high, count: 16 values a decade, RidgeCV's reference grid
_ALPHA_CHUNK_BYTES = 32 << 20  # the residuals of several penalties are computed in one product


def alpha_grid(low: float, high: float, count: int) -> np.ndarray:
    """`count` penalties spaced evenly in log between `low` and `high` (both included)."""
    if not (0 < low <= high) or count < 1:
        raise ValueError(f"alpha grid: expected 0 < low <= high and count >= 1, got {low}, {high}, {count}")
    return np.logspace(np.log10(low), np.log10(high), int(count)) if count > 1 else np.array([float(low)])


@dataclass(frozen=True)
class RidgeFit:
    """`alpha` (n_targets,) chosen per target (all equal unless `per_target`), `coef`
    (n_targets, n_features), `intercept` (n_targets,), `loo` (n, n_targets) the leave-one-out
    predictions at the chosen penalties, `loo_mse` the criterion's value there."""

    alpha: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    loo: np.ndarray
    loo_mse: float


def fit_ridge_loo(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, per_target: bool = False,
                  overwrite_x: bool = False) -> RidgeFit:
    """Ridge on `X` (n, p) and `Y` (n, k), float64, with the penalty of `alphas` (or, with
    `per_target`, one per target) that has the lowest leave-one-out error.

    `overwrite_x`: `X` (a float64 array the caller no longer needs) is centred in place
    and, where n > p, overwritten by the rotated rows `Z = Xc E` a block of rows at a time,
    so that no second (n, p) array is made: at 8,192 x 3,950 (a streamed fit's penalty
    sample) the peak above the input is 511 MiB, against 758 MiB without it (1,146 MiB
    before the copy was dropped once Z was made).
    """
    Y = np.asarray(Y, dtype=np.float64)
    n, k = Y.shape
    alphas = np.sort(np.asarray(alphas, dtype=np.float64))
    if overwrite_x and isinstance(X, np.ndarray) and X.dtype == np.float64 and X.flags.writeable:
        x_mean = X.mean(axis=0)
        Xc = X
        Xc -= x_mean
    else:
        X = np.asarray(X, dtype=np.float64)
        x_mean = X.mean(axis=0)
        Xc, overwrite_x = X - x_mean, False
    y_mean = Y.mean(axis=0)
    Yc = Y - y_mean
    wide = n <= Xc.shape[1]
    w, E = np.linalg.eigh(Xc @ Xc.T if wide else Xc.T @ Xc)
    w = np.clip(w, 0.0, None)
    if wide:
        Z = E * np.sqrt(w)
    elif overwrite_x:  # E is (p, p): Z has Xc's shape and takes its place
        step = max(1, (32 << 20) // (8 * Xc.shape[1]))
        for start in range(0, n, step):
            Xc[start:start + step] = Xc[start:start + step] @ E
        Z = Xc
    else:
        Z = Xc @ E
        del Xc  # only the wide case needs the centred rows again (its coef)
    ZtY, Z2 = Z.T @ Yc, np.square(Z)

    # errors[a, t]: mean over rows of the squared leave-one-out residual of target t at alphas[a].
    errors = np.empty((len(alphas), k))
    chunk = max(1, _ALPHA_CHUNK_BYTES // max(8 * n * k, 1))
    for start in range(0, len(alphas), chunk):
        block = alphas[start:start + chunk]
        inverse = 1.0 / (w[None, :] + block[:, None])  # (a, m)
        # fitted for every penalty of the block in one product: (n, m) @ (m, a * k)
        scaled = (inverse[:, :, None] * ZtY[None, :, :]).transpose(1, 0, 2).reshape(len(w), -1)
        residual = Yc[:, None, :] - (Z @ scaled).reshape(n, len(block), k)
        leverage = Z2 @ inverse.T + 1.0 / n  # (n, a)
        loo = residual / np.maximum(1.0 - leverage, 1e-12)[:, :, None]
        errors[start:start + len(block)] = np.mean(np.square(loo), axis=0)
    # Ties (and a flat criterion) go to the largest penalty: search from the top of the grid.
    if per_target:
        best = len(alphas) - 1 - np.argmin(errors[::-1], axis=0)
    else:
        best = np.full(k, len(alphas) - 1 - int(np.argmin(errors.mean(axis=1)[::-1])))
    chosen = alphas[best]

    inverse = 1.0 / (w[:, None] + chosen[None, :])  # (m, k): each target its own penalty
    if wide:  # (X'X + a I)^-1 X'Y = X'(XX' + a I)^-1 Y
        coef = (Xc.T @ (E @ ((E.T @ Yc) * inverse))).T
    else:
        coef = (E @ (ZtY * inverse)).T
    residual = Yc - Z @ (ZtY * inverse)
    leverage = Z2 @ inverse + 1.0 / n
    loo_residual = residual / np.maximum(1.0 - leverage, 1e-12)
    return RidgeFit(alpha=chosen, coef=coef, intercept=y_mean - coef @ x_mean, loo=Y - loo_residual,
                    loo_mse=float(np.mean(np.square(loo_residual))))
