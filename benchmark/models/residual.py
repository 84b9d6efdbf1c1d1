"""A closed-form ridge base that the deep models correct (`training.base: ridge`).

The network learns what ridge leaves: its training targets are `Y - base_oof(X)`, where
`base_oof` are out-of-fold ridge predictions on the training part, and its predictions are
`base(X) + network(X)` with `base` fitted on the whole training part. Out-of-fold, because
a ridge fitted on the same rows leaves residuals that are too small where it overfits (most
genes when features outnumber samples): a network trained on those would learn to add too
little. The base is the `ridge` baseline's own model and solver
(`benchmark.models.ridge_loo`): penalties chosen per target by efficient leave-one-out over
the default grid (1e-3..1e7, 161 values), whose leave-one-out predictions are the
out-of-fold predictions. On a streamed matrix (a `RowView`) they come from `BASE_FOLDS`
seeded folds of ridge on normal equations summed block by block, with the penalties chosen
on a seeded sample of rows (`RidgeBaseline`'s streamed fit). Every deep architecture gets
the same base; the evaluate stage scores it alone too (the ablation).

No TensorFlow; X and Y are the fold's preprocessed (standardised) features and targets.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold

from benchmark.models.baselines import RidgeBaseline
from benchmark.models.ridge_loo import DEFAULT_GRID, alpha_grid, fit_ridge_loo
from benchmark.models.blockwise_fit import blockwise, is_row_view

BASES = ("none", "ridge")
BASE_FOLDS = 5
PER_TARGET = True  # one penalty per target gene: lower leave-one-out and held-out error on the bundled data


def fit_ridge_base(Xs, Ys: np.ndarray, seed: int) -> tuple[RidgeBaseline, np.ndarray]:
    """`(base, oof)`: the ridge fitted on all rows, and out-of-fold predictions `(n, n_targets)`.

    `Xs` may be a `RowView` (then K seeded folds of ridge on normal equations summed block
    by block); an array gets exact leave-one-out predictions. Deterministic.
    """
    Y = np.asarray(Ys, dtype=np.float64)
    if not is_row_view(Xs):
        fit = fit_ridge_loo(np.asarray(Xs, dtype=np.float64), Y, alpha_grid(*DEFAULT_GRID), PER_TARGET)
        base = RidgeBaseline.from_state({"alpha": fit.alpha, "coef": fit.coef, "intercept": fit.intercept})
        return base, fit.loo
    base = RidgeBaseline(per_target=PER_TARGET).fit(Xs, Y)
    oof = np.empty_like(Y)
    folds = KFold(n_splits=min(BASE_FOLDS, len(Y)), shuffle=True, random_state=int(seed))
    for train, held in folds.split(np.zeros((len(Y), 1))):
        ridge = RidgeBaseline(base.alpha_).fit(Xs[train], Y[train])
        oof[held] = blockwise(ridge.predict, Xs[held])
    return base, oof
