"""In-fold preprocessing: feature scaling, optional PCA, target standardisation.

A `FoldPreprocessor` is fitted on the training part of one fold only and then applied to
that fold's validation rows (or the held-out split). scikit-learn fits it; the fitted
state is kept as plain arrays so it saves without pickle (`get_state` / `from_state`),
and the transforms are the same arithmetic sklearn applies (`(X - mean) / scale`,
`(X - pca_mean) @ components.T`).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from benchmark.data.rows import is_row_view


class FoldPreprocessor:
    """Standardise features (then optional PCA) and targets using one fold's training rows.

    `pca_components`: keep this many principal components of the standardised features,
    clipped to min(n_samples, n_features) of the training part; None keeps the features.
    Zero-variance features and targets are centred and divided by 1 (sklearn's rule).
    Arrays out are float32, (n_samples, n_features_out) and (n_samples, n_targets).
    """

    def __init__(self, pca_components: Optional[int] = None):
        self.pca_components = pca_components
        self.x_mean_ = self.x_scale_ = None
        self.y_mean_ = self.y_scale_ = None
        self.pca_mean_ = self.pca_components_ = None  # components_: (n_components, n_features)

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "FoldPreprocessor":
        """`X` may be a `RowView` (a streamed matrix): scaler and PCA then fit block by
        block (`benchmark.models.blockwise_fit`), the PCA incrementally."""
        y_scaler = StandardScaler().fit(np.asarray(Y, dtype=np.float64))
        self.y_mean_, self.y_scale_ = y_scaler.mean_, y_scaler.scale_
        if is_row_view(X):
            self._fit_features_streamed(X)
            return self
        X = np.asarray(X, dtype=np.float64)
        x_scaler = StandardScaler().fit(X)
        self.x_mean_, self.x_scale_ = x_scaler.mean_, x_scaler.scale_
        if self.pca_components is not None:
            n_components = min(int(self.pca_components), *X.shape)
            # The full LAPACK solver is deterministic; randomized SVD would depend on a seed.
            pca = PCA(n_components=n_components, svd_solver="full").fit(x_scaler.transform(X))
            self.pca_mean_, self.pca_components_ = pca.mean_, pca.components_
        return self

    def _fit_features_streamed(self, X) -> None:
        from benchmark.models.blockwise_fit import fit_pca, fit_scaler

        x_scaler = fit_scaler(X)
        self.x_mean_, self.x_scale_ = x_scaler.mean_, x_scaler.scale_
        if self.pca_components is not None:
            n_components = min(int(self.pca_components), *X.shape)
            scaled = X.map(lambda block: ((block - self.x_mean_) / self.x_scale_).astype(np.float32))
            pca = fit_pca(scaled, n_components)
            self.pca_mean_, self.pca_components_ = pca.mean_, pca.components_

    @property
    def n_features_out(self) -> int:
        return len(self.pca_components_) if self.pca_components_ is not None else len(self.x_mean_)

    def transform_X(self, X: np.ndarray) -> np.ndarray:
        # One float64 copy, centred and scaled in place: the same values as (X - mean) / scale,
        # with one (rows, genes) float64 temporary fewer at its peak (1.5 float64 blocks
        # against 2.0, tests/test_memory_bounds.py).
        Z = np.array(X, dtype=np.float64)
        Z -= self.x_mean_
        Z /= self.x_scale_
        if self.pca_components_ is not None:
            Z = (Z - self.pca_mean_) @ self.pca_components_.T
        return Z.astype(np.float32)

    def transform_Y(self, Y: np.ndarray) -> np.ndarray:
        return ((np.asarray(Y, dtype=np.float64) - self.y_mean_) / self.y_scale_).astype(np.float32)

    def inverse_Y(self, Y_scaled: np.ndarray) -> np.ndarray:
        """Back to the original target units; float64 so metrics see no extra rounding."""
        return np.asarray(Y_scaled, dtype=np.float64) * self.y_scale_ + self.y_mean_

    def get_state(self) -> dict[str, Any]:
        state = {
            "x_mean": self.x_mean_, "x_scale": self.x_scale_,
            "y_mean": self.y_mean_, "y_scale": self.y_scale_,
        }
        if self.pca_components_ is not None:
            state.update(pca_mean=self.pca_mean_, pca_components=self.pca_components_)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], pca_components: Optional[int] = None) -> "FoldPreprocessor":
        pre = cls(pca_components=pca_components)
        pre.x_mean_, pre.x_scale_ = np.asarray(state["x_mean"]), np.asarray(state["x_scale"])
        pre.y_mean_, pre.y_scale_ = np.asarray(state["y_mean"]), np.asarray(state["y_scale"])
        if "pca_components" in state:
            pre.pca_mean_ = np.asarray(state["pca_mean"])
            pre.pca_components_ = np.asarray(state["pca_components"])
        return pre

