"""A closed-form ridge base that the deep models correct (`training.base: ridge`).

The network learns what ridge leaves: its training targets are `Y - base_oof(X)`, where
`base_oof` are out-of-fold ridge predictions on the training part, and its predictions are
`base(X) + network(X)` with `base` fitted on the whole training part. Out-of-fold, because
a ridge fitted on the same rows leaves residuals that are too small where it overfits (most
genes when features outnumber samples): a network trained on those would learn to add too
little. In memory the out-of-fold predictions are leave-one-out, in closed form from one
eigendecomposition of the centred features' Gram matrix (ridge's exact identity: the
left-out residual of row i is `e_i / (1 - h_i)`, h the leverage), and the penalty is the one of `BASE_ALPHAS` with the
lowest leave-one-out error. On a streamed matrix (a `RowView`) they come from `BASE_FOLDS`
seeded folds of ridge on normal equations summed block by block, with the penalty chosen on
a seeded sample of `ALPHA_ROWS` rows. Every deep architecture gets the same base, and
`ridge` stays a baseline of its own.

No TensorFlow; X and Y are the fold's preprocessed (standardised) features and targets.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold

from benchmark.models.baselines import RidgeBaseline
from benchmark.streaming import blockwise, is_row_view

BASES = ("none", "ridge")
BASE_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))  # 0.1 .. 1e5, half a decade apart
BASE_FOLDS = 5
ALPHA_ROWS = 8192  # a streamed matrix chooses alpha on this many of its rows (seeded)


def _leave_one_out(X: np.ndarray, Y: np.ndarray) -> tuple[RidgeBaseline, np.ndarray]:
    """Ridge with the best of `BASE_ALPHAS` by leave-one-out error, and its leave-one-out
    predictions `(n, n_targets)` (float64 arrays in and out).

    One eigendecomposition of the smaller Gram matrix of the centred X (n x n or p x p;
    several times faster than an SVD of X here) gives, for every alpha, the fitted values
    `Z diag(1/(w + alpha)) Z' Y` and the leverages `sum_j Z_ij^2 / (w_j + alpha)`, where
    `Z Z' = X X'` column by column: Z = U sqrt(w) from X X' = U diag(w) U', or Z = X V from
    X' X = V diag(w) V'.
    """
    x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - x_mean, Y - y_mean
    wide = len(X) <= X.shape[1]
    w, E = np.linalg.eigh(Xc @ Xc.T if wide else Xc.T @ Xc)
    w = np.clip(w, 0.0, None)
    Z = E * np.sqrt(w) if wide else Xc @ E
    ZtY, Z2 = Z.T @ Yc, np.square(Z)
    best = None
    for alpha in BASE_ALPHAS:
        inverse = 1.0 / (w + alpha)
        residual = Yc - Z @ (inverse[:, None] * ZtY)
        leverage = Z2 @ inverse + 1.0 / len(X)  # the intercept's share included
        loo_residual = residual / np.maximum(1.0 - leverage, 1e-12)[:, None]
        error = float(np.mean(np.square(loo_residual)))
        if best is None or error < best[0]:
            best = (error, alpha, loo_residual)
    _, alpha, loo_residual = best
    # (X'X + a I)^-1 X'Y = X'(XX' + a I)^-1 Y (wide) = V diag(1/(w + a)) V'X'Y (tall)
    if wide:
        coef = (Xc.T @ (E @ ((E.T @ Yc) / (w + alpha)[:, None]))).T
    else:
        coef = (E @ (ZtY / (w + alpha)[:, None])).T
    base = RidgeBaseline.from_state({"alpha": alpha, "coef": coef, "intercept": y_mean - coef @ x_mean})
    return base, Y - loo_residual


def fit_ridge_base(Xs, Ys: np.ndarray, seed: int) -> tuple[RidgeBaseline, np.ndarray]:
    """`(base, oof)`: the ridge fitted on all rows, and out-of-fold predictions `(n, n_targets)`.

    `Xs` may be a `RowView` (then K seeded folds of ridge on normal equations summed block
    by block); an array gets exact leave-one-out predictions. Deterministic.
    """
    Y = np.asarray(Ys, dtype=np.float64)
    if not is_row_view(Xs):
        return _leave_one_out(np.asarray(Xs, dtype=np.float64), Y)
    rows = np.sort(np.random.default_rng(int(seed)).permutation(len(Xs))[:ALPHA_ROWS])
    alpha = _leave_one_out(Xs.read(rows).astype(np.float64), Y[rows])[0].alpha
    oof = np.empty_like(Y)
    folds = KFold(n_splits=min(BASE_FOLDS, len(Y)), shuffle=True, random_state=int(seed))
    for train, held in folds.split(np.zeros((len(Y), 1))):
        ridge = RidgeBaseline(alpha).fit(Xs[train], Y[train])
        oof[held] = blockwise(ridge.predict, Xs[held])
    return RidgeBaseline(alpha).fit(Xs, Y), oof
