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
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor

from benchmark.data.rows import is_row_view


class MeanBaseline:
    """Predicts the per-target training mean for every sample (R^2 0 on training data)."""

    name = "mean"

    def __init__(self):
        self.mean_: np.ndarray | None = None

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "MeanBaseline":
        self.mean_ = np.asarray(Y, dtype=np.float64).mean(axis=0)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.tile(self.mean_, (len(X), 1))

    def get_state(self) -> dict[str, Any]:
        return {"mean": self.mean_}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "MeanBaseline":
        model = cls()
        model.mean_ = np.asarray(state["mean"], dtype=np.float64)
        return model


class RidgeBaseline:
    """Linear regression with an L2 penalty `alpha` (the D-GEX comparison point)."""

    name = "ridge"

    def __init__(self, alpha: float = 1.0):
        self.alpha = float(alpha)
        self.coef_: np.ndarray | None = None  # (n_targets, n_features)
        self.intercept_: np.ndarray | None = None  # (n_targets,)

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "RidgeBaseline":
        """`X` may be a `RowView`: then ridge comes from normal equations summed block by block."""
        if is_row_view(X):
            return self._fit_streamed(X, Y)
        ridge = Ridge(alpha=self.alpha).fit(X, np.asarray(Y, dtype=np.float64))
        self.coef_ = np.atleast_2d(ridge.coef_)
        self.intercept_ = np.atleast_1d(ridge.intercept_)
        return self

    def _fit_streamed(self, X, Y: np.ndarray) -> "RidgeBaseline":
        """What sklearn's Ridge solves, from float64 normal equations summed block by block
        (`benchmark.streaming`). Memory: one p x p array, whatever the number of rows."""
        from benchmark.streaming import normal_equations, solve_ridge

        sums = normal_equations(X, np.asarray(Y, dtype=np.float64).reshape(len(X), -1))
        self.coef_, self.intercept_ = solve_ridge(*sums, alpha=self.alpha)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        # Ridge.predict is exactly X @ coef.T + intercept; from loaded state we have no
        # estimator, so both paths use the same expression.
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_

    def get_state(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "coef": self.coef_, "intercept": self.intercept_}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "RidgeBaseline":
        model = cls(alpha=float(state["alpha"]))
        model.coef_ = np.asarray(state["coef"], dtype=np.float64)
        model.intercept_ = np.asarray(state["intercept"], dtype=np.float64)
        return model


class KnnBaseline:
    """Mean of the `k` nearest training samples (Euclidean, uniform weights).

    `k` is clipped to the number of training samples. The fitted state is the training
    set itself; loading refits the (cheap, deterministic) neighbour index on it. On a
    streamed matrix (`X` a `RowView`) the neighbours are searched in an in-fold
    IncrementalPCA space of `STREAMED_COMPONENTS` dimensions (fitted block by block), so the
    state is n x 50 scores rather than the matrix: an approximation of the exact search.
    """

    name = "knn"
    STREAMED_COMPONENTS = 50

    def __init__(self, k: int = 5):
        if int(k) < 1:
            raise ValueError(f"k: expected a positive number of neighbours, got {k}")
        self.k = int(k)
        self.X_: np.ndarray | None = None
        self.Y_: np.ndarray | None = None
        self.pca_mean_: np.ndarray | None = None  # streamed fits only: X -> (X - mean) @ components.T
        self.pca_components_: np.ndarray | None = None
        self._knn: KNeighborsRegressor | None = None

    @property
    def k_used(self) -> int:
        return min(self.k, len(self.X_))

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "KnnBaseline":
        if is_row_view(X):
            from benchmark.streaming import blockwise, fit_pca

            pca = fit_pca(X, min(self.STREAMED_COMPONENTS, *X.shape))
            self.pca_mean_, self.pca_components_ = pca.mean_, pca.components_
            X = blockwise(self._project, X)
        self.X_ = np.asarray(X, dtype=np.float64)
        self.Y_ = np.asarray(Y, dtype=np.float64)
        self._knn = KNeighborsRegressor(n_neighbors=self.k_used).fit(self.X_, self.Y_)
        return self

    def _project(self, X: np.ndarray) -> np.ndarray:
        if self.pca_components_ is None:
            return X
        return (np.asarray(X, dtype=np.float64) - self.pca_mean_) @ self.pca_components_.T

    def predict(self, X: np.ndarray) -> np.ndarray:
        Z = self._project(np.asarray(X, dtype=np.float64))
        return np.asarray(self._knn.predict(Z)).reshape(len(X), -1)

    def get_state(self) -> dict[str, Any]:
        state = {"k": self.k, "X": self.X_, "Y": self.Y_}
        if self.pca_components_ is not None:
            state.update(pca_mean=self.pca_mean_, pca_components=self.pca_components_)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "KnnBaseline":
        model = cls(k=int(state["k"])).fit(state["X"], state["Y"])
        if "pca_components" in state:
            model.pca_mean_ = np.asarray(state["pca_mean"], dtype=np.float64)
            model.pca_components_ = np.asarray(state["pca_components"], dtype=np.float64)
        return model


BASELINES = {"mean": MeanBaseline, "ridge": RidgeBaseline, "knn": KnnBaseline}


def make_baseline(arch: str, hp: dict[str, Any]):
    """The baseline `arch` with its hyperparameters from `hp` (alpha for ridge, k for knn)."""
    if arch not in BASELINES:
        raise ValueError(f"unknown baseline {arch!r}; expected one of {', '.join(BASELINES)}")
    required = {"mean": (), "ridge": ("alpha",), "knn": ("k",)}[arch]
    missing = [key for key in required if key not in hp]
    if missing:
        raise ValueError(f"models.{arch}: hyperparameter {missing[0]!r} is missing (set it in defaults)")
    return BASELINES[arch](**{key: hp[key] for key in required})
