"""A closed-form ridge base that the deep models correct (`training.base: ridge`).

The network learns what ridge leaves: its training targets are `Y - base_oof(X)`, where
`base_oof` are out-of-fold ridge predictions on the training part (K folds inside it,
`BASE_FOLDS`), and its predictions are `base(X) + network(X)` with `base` refitted on the
whole training part. Out-of-fold, because a ridge fitted on the same rows leaves residuals
that are too small where it overfits (most genes when features outnumber samples): a network
trained on those would learn to add too little. Ridge's penalty is chosen on the training
part too, by efficient leave-one-out over `BASE_ALPHAS` (scikit-learn's `RidgeCV`). Every
deep architecture gets the same base, and `ridge` stays a baseline of its own.

No TensorFlow; X and Y are the fold's preprocessed (standardised) features and targets.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold

from benchmark.models.baselines import RidgeBaseline
from benchmark.streaming import blockwise, is_row_view

BASES = ("none", "ridge")
BASE_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))  # 0.1 .. 1e5, half a decade apart
BASE_FOLDS = 5
ALPHA_ROWS = 8192  # a streamed matrix chooses alpha on this many of its rows (seeded)


def _choose_alpha(Xs, Y: np.ndarray, seed: int) -> float:
    """Ridge's penalty by efficient leave-one-out; on a streamed matrix (a `RowView`), on a
    seeded sample of `ALPHA_ROWS` of its rows, so memory stays bounded."""
    if is_row_view(Xs):
        rows = np.sort(np.random.default_rng(int(seed)).permutation(len(Xs))[:ALPHA_ROWS])
        X, Y = Xs.read(rows).astype(np.float64), Y[rows]
    else:
        X = np.asarray(Xs, dtype=np.float64)
    return float(RidgeCV(alphas=BASE_ALPHAS).fit(X, Y).alpha_)


def fit_ridge_base(Xs, Ys: np.ndarray, seed: int) -> tuple[RidgeBaseline, np.ndarray]:
    """`(base, oof)`: the ridge refitted on all rows, and out-of-fold predictions `(n, n_targets)`.

    `Xs` may be a `RowView` (ridge then solves normal equations summed block by block).
    Deterministic: the folds are shuffled with `seed`.
    """
    Y = np.asarray(Ys, dtype=np.float64)
    alpha = _choose_alpha(Xs, Y, seed)
    oof = np.empty_like(Y)
    folds = KFold(n_splits=min(BASE_FOLDS, len(Y)), shuffle=True, random_state=int(seed))
    for train, held in folds.split(np.zeros((len(Y), 1))):
        ridge = RidgeBaseline(alpha).fit(Xs[train], Y[train])
        oof[held] = blockwise(ridge.predict, Xs[held])
    return RidgeBaseline(alpha).fit(Xs, Y), oof
