"""Baselines every architecture is compared against: mean, ridge, k-nearest neighbours.

scikit-learn estimators behind the same `fit(X, Y) -> self` / `predict(X)` interface as
the deep models, with no TensorFlow. Their fitted state exports as plain arrays and
scalars (`get_state()` / `from_state(state)`), so a saved model holds no pickle.

X is (n_samples, n_features) and Y (n_samples, n_targets), both already preprocessed by
the caller (`benchmark.models.preprocessing.FoldPreprocessor`). `fit` also takes X as a
`RowView` of a streamed matrix (`benchmark.data.rows`): ridge then solves its normal
equations summed block by block, kNN searches an incremental PCA space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor, NearestNeighbors

from benchmark.data.rows import is_row_view
from benchmark.models.ridge_loo import DEFAULT_GRID, alpha_grid, fit_ridge_loo

ALPHA_ROWS = 8192  # a streamed matrix chooses its ridge penalty on this many of its rows,
ALPHA_BYTES = 256 << 20  # or fewer: as many as fit these bytes in float64 (3,355 at 10,000 genes)
ALPHA_SEED = 0  # which rows: fixed, so a refit on the same rows chooses the same penalty


class MeanBaseline:
    """Predicts the per-target training mean for every sample (R^2 0 on training data):
    scikit-learn's `DummyRegressor(strategy="mean")` behind the baselines' interface."""

    name = "mean"

    def __init__(self):
        self._dummy = DummyRegressor(strategy="mean")
        self.mean_: np.ndarray | None = None  # (n_targets,), float64

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "MeanBaseline":
        # float64 before the mean, whatever Y's dtype; DummyRegressor averages in Y's own.
        Y = np.asarray(Y, dtype=np.float64)
        self._dummy.fit(X, Y.reshape(len(Y), -1))
        self.mean_ = self._dummy.constant_.reshape(-1)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        # DummyRegressor drops the target axis of a single target: kept, (n, n_targets).
        return np.asarray(self._dummy.predict(X), dtype=np.float64).reshape(len(X), len(self.mean_))

    def get_state(self) -> dict[str, Any]:
        return {"mean": self.mean_}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "MeanBaseline":
        mean = np.asarray(state["mean"], dtype=np.float64).reshape(1, -1)
        # The mean of one row is that row, exactly: the fitted DummyRegressor of the saved mean.
        return cls().fit(np.zeros((1, 1)), mean)


class RidgeBaseline:
    """Linear regression with an L2 penalty (the D-GEX comparison point).

    `alpha`: a fixed penalty (a number, or one per target); None chooses it in closed form
    on the rows `fit` is given, by efficient leave-one-out over `alpha_grid(alpha_low,
    alpha_high, alpha_count)` (`benchmark.models.ridge_loo`, the deep models' base's solver),
    one penalty for all targets or, with `per_target`, one each. After `fit`, `alpha_`
    holds the penalties used, (n_targets,).
    """

    name = "ridge"

    def __init__(self, alpha=None, alpha_low: float = DEFAULT_GRID[0], alpha_high: float = DEFAULT_GRID[1],
                 alpha_count: int = DEFAULT_GRID[2], per_target: bool = False):
        self.alpha = None if alpha is None else np.asarray(alpha, dtype=np.float64)
        self.alphas = alpha_grid(float(alpha_low), float(alpha_high), int(alpha_count))
        self.per_target = bool(per_target)
        self.alpha_: np.ndarray | None = None  # (n_targets,)
        self.coef_: np.ndarray | None = None  # (n_targets, n_features)
        self.intercept_: np.ndarray | None = None  # (n_targets,)

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "RidgeBaseline":
        """`X` may be a `RowView`: then ridge comes from normal equations summed block by block."""
        Y = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
        if is_row_view(X):
            return self._fit_streamed(X, Y)
        X = np.asarray(X, dtype=np.float64)
        if self.alpha is None:
            fit = fit_ridge_loo(X, Y, self.alphas, self.per_target)
            self.alpha_, self.coef_, self.intercept_ = fit.alpha, fit.coef, fit.intercept
            return self
        self.alpha_ = np.broadcast_to(self.alpha, (Y.shape[1],)).copy()
        alpha = self.alpha_ if self.alpha.ndim else float(self.alpha)
        ridge = Ridge(alpha=alpha).fit(X, Y)
        self.coef_ = np.atleast_2d(ridge.coef_)
        self.intercept_ = np.atleast_1d(ridge.intercept_)
        return self

    def _fit_streamed(self, X, Y: np.ndarray) -> "RidgeBaseline":
        """What sklearn's Ridge solves, from float64 normal equations summed block by block
        (`benchmark.models.blockwise_fit`) in one pass over the rows, whatever the number of
        distinct penalties: each is solved in the lower triangle of the one p x p array
        (`solve_ridge`). A penalty left to choose is chosen by leave-one-out on a seeded
        sample of `ALPHA_ROWS` rows, or as many as `ALPHA_BYTES` hold at this width (the
        whole grid at the cost of one in-memory fit)."""
        from benchmark.models.blockwise_fit import normal_equations

        alpha = self.streamed_alpha(X, Y)
        return self.fit_normal_equations(normal_equations(X, Y), alpha)

    def streamed_alpha(self, X, Y: np.ndarray):
        """The penalty a streamed fit uses: `alpha` if fixed, else chosen by leave-one-out on
        the seeded row sample (see `_fit_streamed`)."""
        if self.alpha is not None:
            return self.alpha
        sample = max(1, min(ALPHA_ROWS, ALPHA_BYTES // (8 * X.shape[1])))
        rows = np.sort(np.random.default_rng(ALPHA_SEED).permutation(len(X))[:sample])
        return fit_ridge_loo(X.read(rows).astype(np.float64), np.asarray(Y)[rows], self.alphas, self.per_target,
                             overwrite_x=True).alpha

    def fit_normal_equations(self, equations, alpha=None) -> "RidgeBaseline":
        """Ridge with penalty `alpha` (default: the fixed `alpha`) from the float64 sums of
        `blockwise_fit.normal_equations` (or `without_rows`), each distinct penalty solved
        in the lower triangle of their X'X, whose upper triangle is left as it was."""
        from benchmark.models.blockwise_fit import solve_ridge_penalties

        n, x_sum, y_sum, XtX, XtY = equations
        alpha = self.alpha if alpha is None else alpha
        self.alpha_ = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (len(y_sum),)).copy()
        self.coef_, self.intercept_ = solve_ridge_penalties(n, x_sum, y_sum, XtX, XtY, self.alpha_)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        # Ridge.predict is exactly X @ coef.T + intercept; from loaded state we have no
        # estimator, so both paths use the same expression.
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_

    def get_state(self) -> dict[str, Any]:
        return {"alpha": self.alpha_, "coef": self.coef_, "intercept": self.intercept_}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "RidgeBaseline":
        model = cls(alpha=np.asarray(state["alpha"], dtype=np.float64))
        model.alpha_ = np.atleast_1d(model.alpha)
        model.coef_ = np.asarray(state["coef"], dtype=np.float64)
        model.intercept_ = np.asarray(state["intercept"], dtype=np.float64)
        return model


class KnnBaseline:
    """Mean of the `k` nearest training samples (Euclidean), in the standardised genes or
    in an in-fold PCA space of `components` dimensions (0: the genes themselves).

    `k` None searches the whole range 1..`k_max` (clipped to n - 1) and both weightings
    (`uniform`, `distance`: sklearn's 1/distance) by leave-one-out on the rows `fit` is
    given: every training sample predicted from its neighbours among the others, one
    neighbour search for every k at once. A fixed `k` uses `weights` as given. The fitted
    state is the (projected) training set; loading refits the cheap, deterministic
    neighbour index on it. A streamed matrix (`X` a `RowView`) is always projected, by an
    IncrementalPCA fitted block by block (`components`, or `STREAMED_COMPONENTS` when 0):
    the state is then n x components scores rather than the matrix.
    """

    name = "knn"
    STREAMED_COMPONENTS = 50
    WEIGHTS = ("uniform", "distance")

    def __init__(self, k: int | None = None, components: int = 0, weights: str = "uniform", k_max: int = 100):
        if k is not None and int(k) < 1:
            raise ValueError(f"k: expected a positive number of neighbours, got {k}")
        if weights not in self.WEIGHTS:
            raise ValueError(f"weights: expected one of {', '.join(self.WEIGHTS)}, got {weights!r}")
        if int(components) < 0 or int(k_max) < 1:
            raise ValueError(f"components must be >= 0 and k_max >= 1, got {components} and {k_max}")
        self.k, self.components, self.weights, self.k_max = (None if k is None else int(k)), int(components), weights, int(k_max)
        self.k_: int | None = None  # the neighbours and weighting used (chosen when k is None)
        self.weights_: str = weights
        self.X_: np.ndarray | None = None
        self.Y_: np.ndarray | None = None
        self.pca_mean_: np.ndarray | None = None  # projected fits only: X -> (X - mean) @ components.T
        self.pca_components_: np.ndarray | None = None
        self._knn: KNeighborsRegressor | None = None
        # After a fit that chose k: each training sample's k_ nearest other samples (distances,
        # indices), from the search that chose k, kept for `leave_one_out_predictions`, which
        # takes them instead of searching again (at 85,000 rows that search was 43% of the
        # stacked base's time, results/scale.md).
        self.loo_search_: tuple[np.ndarray, np.ndarray] | None = None

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "KnnBaseline":
        self.pca_mean_ = self.pca_components_ = self.loo_search_ = None
        if is_row_view(X):
            from benchmark.models.blockwise_fit import blockwise, fit_pca

            pca = fit_pca(X, min(self.components or self.STREAMED_COMPONENTS, *X.shape))
            self.pca_mean_, self.pca_components_ = pca.mean_, pca.components_
            X = blockwise(self._project, X)
        elif self.components:
            # The full LAPACK solver is deterministic; randomized SVD would depend on a seed.
            pca = PCA(n_components=min(self.components, *np.shape(X)), svd_solver="full").fit(X)
            self.pca_mean_, self.pca_components_ = pca.mean_, pca.components_
            X = self._project(X)
        self.X_ = np.asarray(X, dtype=np.float64)
        self.Y_ = np.asarray(Y, dtype=np.float64).reshape(len(self.X_), -1)
        if self.k is None:
            search = other_neighbours(self.X_, self.k_max)
            self.k_, self.weights_ = leave_one_out_neighbours(self.X_, self.Y_, self.k_max, search)
            self.loo_search_ = tuple(np.ascontiguousarray(a[:, :self.k_]) for a in search)
        else:
            self.k_, self.weights_ = min(self.k, len(self.X_)), self.weights
        self._knn = KNeighborsRegressor(n_neighbors=self.k_, weights=self.weights_).fit(self.X_, self.Y_)
        return self

    def _project(self, X: np.ndarray) -> np.ndarray:
        if self.pca_components_ is None:
            return X
        return (np.asarray(X, dtype=np.float64) - self.pca_mean_) @ self.pca_components_.T

    def predict(self, X: np.ndarray) -> np.ndarray:
        Z = self._project(np.asarray(X, dtype=np.float64))
        return np.asarray(self._knn.predict(Z)).reshape(len(X), -1)

    def get_state(self) -> dict[str, Any]:
        state = {"k": self.k_, "weights": self.weights_, "X": self.X_, "Y": self.Y_}
        if self.pca_components_ is not None:
            state.update(pca_mean=self.pca_mean_, pca_components=self.pca_components_)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "KnnBaseline":
        weights = str(state["weights"]) if "weights" in state else "uniform"
        model = cls(k=int(state["k"]), weights=weights).fit(state["X"], state["Y"])
        if "pca_components" in state:
            model.pca_mean_ = np.asarray(state["pca_mean"], dtype=np.float64)
            model.pca_components_ = np.asarray(state["pca_components"], dtype=np.float64)
        return model


def other_neighbours(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`(distances, indices)`, (n, min(k, n - 1)): each sample's nearest *other* samples in
    increasing distance (sklearn's `kneighbors()` without a query leaves the sample out)."""
    return NearestNeighbors(n_neighbors=min(int(k), len(X) - 1)).fit(X).kneighbors()


def leave_one_out_neighbours(X: np.ndarray, Y: np.ndarray, k_max: int,
                             search: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[int, str]:
    """`(k, weights)` with the lowest leave-one-out mean squared error over k = 1..k_max
    (clipped to n - 1) and both weightings; ties go to the smaller k, then `uniform`.

    One search of the k_max nearest *other* samples of each training sample
    (`other_neighbours`, or `search` if it was made already); the prediction for every k is
    then a running (weighted) sum over the sorted neighbours. A zero distance is
    weighted as the smallest positive double's inverse, where sklearn would use only the
    zero-distance neighbours: the same prediction up to that limit.
    """
    n = len(X)
    if n < 2:
        return 1, "uniform"
    k_max = min(int(k_max), n - 1)
    distances, neighbours = other_neighbours(X, k_max) if search is None else search
    distances, neighbours = distances[:, :k_max], neighbours[:, :k_max]
    inverse = 1.0 / np.maximum(distances, np.finfo(np.float64).tiny)
    best = (np.inf, 1, "uniform")
    for weights in KnnBaseline.WEIGHTS:
        total = np.zeros_like(Y)
        weight = np.zeros((n, 1))
        for j in range(k_max):
            w = np.ones((n, 1)) if weights == "uniform" else inverse[:, j:j + 1]
            total += w * Y[neighbours[:, j]]
            weight += w
            error = float(np.mean(np.square(Y - total / weight)))
            if error < best[0]:
                best = (error, j + 1, weights)
    return best[1], best[2]


def leave_one_out_predictions(knn: KnnBaseline) -> np.ndarray:
    """(n, n_targets): each of a fitted `knn`'s training samples predicted from its `k_`
    nearest *other* training samples, with its weighting (the fit's leave-one-out).

    A fit that chose k hands over the neighbours of that search (`loo_search_`, released
    here): no second search. With a fixed k they are searched now."""
    X, Y = knn.X_, knn.Y_
    if len(X) < 2:
        return Y.copy()
    if knn.loo_search_ is not None:
        (distances, neighbours), knn.loo_search_ = knn.loo_search_, None
    else:
        distances, neighbours = other_neighbours(X, knn.k_)
    weights = (np.ones_like(distances) if knn.weights_ == "uniform"
               else 1.0 / np.maximum(distances, np.finfo(np.float64).tiny))
    # One neighbour rank at a time, as leave_one_out_neighbours scores k: memory stays at a
    # few (n, n_targets) arrays. `Y[neighbours]` at once is (n, k, n_targets), 1.2 GB for
    # 80,000 samples, k 37 and 50 targets, which alone broke a 2 GiB limit (results/scale.md).
    total = np.zeros_like(Y)
    for j in range(neighbours.shape[1]):
        total += weights[:, j:j + 1] * Y[neighbours[:, j]]
    return total / weights.sum(axis=1, keepdims=True)


BASELINES = {"mean": MeanBaseline, "ridge": RidgeBaseline, "knn": KnnBaseline}


def make_baseline(arch: str, hp: dict[str, Any]):
    """The baseline `arch` with its hyperparameters from `hp` (`models.<arch>.defaults`
    overlaid with tuned values; a key the baseline does not take is an error)."""
    if arch not in BASELINES:
        raise ValueError(f"unknown baseline {arch!r}; expected one of {', '.join(BASELINES)}")
    import inspect

    accepted = set(inspect.signature(BASELINES[arch]).parameters)
    unknown = sorted(set(hp) - accepted)
    if unknown:
        raise ValueError(f"models.{arch}: {unknown[0]!r} is not a hyperparameter of {arch} "
                         f"(known: {', '.join(sorted(accepted)) or 'none'})")
    return BASELINES[arch](**hp)
