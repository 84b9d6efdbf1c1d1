"""The closed-form base that the deep models correct (`training.base`: `stack`, `ridge` or `none`).

The network learns what ridge leaves: its training targets are `Y - base_oof(X)`, where
`base_oof` are out-of-fold ridge predictions on the training part, and its predictions are
`base(X) + network(X)` with `base` fitted on the whole training part. Out-of-fold, because
a ridge fitted on the same rows leaves residuals that are too small where it overfits (most
genes when features outnumber samples): a network trained on those would learn to add too
little. The base is the `ridge` baseline's own model and solver
(`benchmark.models.ridge_loo`): penalties chosen per target by efficient leave-one-out over
the default grid (1e-3..1e7, 161 values), whose leave-one-out predictions are the
out-of-fold predictions. On a streamed matrix (a `RowView`) they come from `BASE_FOLDS`
seeded folds of ridge on normal equations summed block by block (each fold's as all rows'
less the fold's, up to `FOLD_GRAM_BYTES` of X'X), with the penalties chosen on a seeded
sample of rows (`RidgeBaseline`'s streamed fit). Every deep architecture gets
the same base; the evaluate stage scores it alone too (the ablation).

`training.base: stack` adds the `knn` baseline's model beside the ridge (in-fold PCA to
`KNN_COMPONENTS` dimensions, k and weighting by leave-one-out) and blends the two per
target gene: `w * ridge + (1 - w) * knn`, with `w` in [0, 1] the least-squares weight of
their out-of-fold predictions (ridge's leave-one-out or K-fold ones, kNN's leave-one-out).
The network then learns what neither a linear nor a neighbourhood model finds. Measured on
the bundled datasets' held-out splits (deep features, the default split), the stack's RMSE
is below both of its members' on all eight (dataset, task) pairs: pbmc68k multi 0.7180
(ridge 0.7673, kNN 0.7314), zeisel multi 0.5339 (0.5386, 0.6092), cbmc multi 0.4591
(0.5065, 0.4692), synthetic multi 0.6590 (0.7575, 0.6709).

No TensorFlow; X and Y are the fold's preprocessed (standardised) features and targets.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold

from benchmark.models.baselines import KnnBaseline, RidgeBaseline, leave_one_out_predictions
from benchmark.models.blockwise_fit import blockwise, is_row_view, normal_equations, without_rows
from benchmark.models.fit_cache import FIT_CACHE
from benchmark.models.ridge_loo import DEFAULT_GRID, alpha_grid, fit_ridge_loo

BASES = ("none", "ridge", "stack")
BASE_FOLDS = 5
FOLD_GRAM_BYTES = 256 << 20  # a streamed base's folds subtract from all rows' X'X up to this size (5,792 features)
PER_TARGET = True  # one penalty per target gene: lower leave-one-out and held-out error on the bundled data
KNN_COMPONENTS = 10  # the knn baseline's default space (params.yaml models.knn.defaults.components)


class StackedBase:
    """`w * ridge(X) + (1 - w) * knn(X)`, one weight `w` in [0, 1] per target gene."""

    def __init__(self, ridge: RidgeBaseline, knn: KnnBaseline, weight: np.ndarray):
        self.ridge, self.knn, self.weight = ridge, knn, np.asarray(weight, dtype=np.float64)

    def predict(self, X) -> np.ndarray:
        return self.weight * self.ridge.predict(X) + (1.0 - self.weight) * self.knn.predict(X)

    def get_state(self) -> dict:
        return {"weight": self.weight, **{f"ridge/{k}": v for k, v in self.ridge.get_state().items()},
                **{f"knn/{k}": v for k, v in self.knn.get_state().items()}}

    @classmethod
    def from_state(cls, state: dict) -> "StackedBase":
        part = lambda prefix: {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(prefix + "/")}  # noqa: E731
        return cls(RidgeBaseline.from_state(part("ridge")), KnnBaseline.from_state(part("knn")), state["weight"])


def base_from_state(state: dict):
    """The saved base: a `StackedBase` (its state has a `weight`) or a `RidgeBaseline`."""
    return StackedBase.from_state(state) if "weight" in state else RidgeBaseline.from_state(state)


def fit_base(kind: str, Xs, Ys: np.ndarray, seed: int):
    """`(base, oof)` for `training.base` = `kind` (`ridge` or `stack`); see the module docstring.
    Computed once per process for the same rows (`benchmark.models.fit_cache`): every trial of
    a study fits on the same tuning fold. The result is shared: never modify it."""
    return FIT_CACHE.get_or_fit(("base", kind, int(seed)), (Xs, Ys), lambda: _fit_base(kind, Xs, Ys, seed))


def _fit_base(kind: str, Xs, Ys: np.ndarray, seed: int):
    if kind == "ridge":
        return fit_ridge_base(Xs, Ys, seed)
    if kind == "stack":
        return fit_stacked_base(Xs, Ys, seed)
    raise ValueError(f"training.base: expected one of {', '.join(BASES[1:])} to fit a base, got {kind!r}")


def fit_stacked_base(Xs, Ys: np.ndarray, seed: int) -> tuple[StackedBase, np.ndarray]:
    """`(base, oof)`: ridge and kNN on all rows, blended per target by the least-squares
    weight of their out-of-fold predictions; `oof` the blend of those predictions."""
    Y = np.asarray(Ys, dtype=np.float64)
    ridge, ridge_oof = fit_ridge_base(Xs, Y, seed)
    knn = KnnBaseline(components=KNN_COMPONENTS).fit(Xs, Y)
    knn_oof = leave_one_out_predictions(knn)
    gap = ridge_oof - knn_oof
    weight = np.clip(np.sum((Y - knn_oof) * gap, axis=0) / np.maximum(np.sum(gap * gap, axis=0), 1e-12), 0.0, 1.0)
    return StackedBase(ridge, knn, weight), weight * ridge_oof + (1.0 - weight) * knn_oof


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
    base = RidgeBaseline(per_target=PER_TARGET)
    alpha = base.streamed_alpha(Xs, Y)
    equations = normal_equations(Xs, Y)
    base.fit_normal_equations(equations, alpha)
    # A fold's training sums are all rows' less the fold's (`without_rows`: one pass over
    # the rows for all folds, not K - 1) where a second X'X fits FOLD_GRAM_BYTES; else
    # each fold's are summed over its training rows, one X'X alive at a time.
    work = np.empty_like(equations[3]) if equations[3].nbytes <= FOLD_GRAM_BYTES else None
    if work is None:
        del equations
    oof = np.empty_like(Y)
    folds = KFold(n_splits=min(BASE_FOLDS, len(Y)), shuffle=True, random_state=int(seed))
    for train, held in folds.split(np.zeros((len(Y), 1))):
        if work is None:
            ridge = RidgeBaseline(base.alpha_).fit(Xs[train], Y[train])
        else:
            ridge = RidgeBaseline(base.alpha_).fit_normal_equations(without_rows(equations, Xs[held], Y[held], work))
        oof[held] = blockwise(ridge.predict, Xs[held])
    return base, oof
