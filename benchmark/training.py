"""Fitting one model on one training part: preprocessing, base, tokens, network.

`make_regressor(arch, hp, config)` gives a `Regressor` for any architecture, deep or
baseline, behind one interface:

    regressor = make_regressor("attention_lstm", hp, config).fit(X_train, Y_train)
    Y_pred = regressor.predict(X_val)        # (n, n_targets), original target units
    weights = regressor.attention(X_val)     # (n, steps), or None without attention
    regressor.save(directory); load_regressor(directory)

`fit` fits the in-fold preprocessing (`FoldPreprocessor`) on the rows it is given and
nothing else. Deep models then fit, on those rows only: the base they correct
(`training.base`: `stack` or `ridge`, out-of-fold, `benchmark.models.residual`) and, for sequence
models, the assignment of genes to tokens (`benchmark.models.tokens`). They carve their
early-stopping set out of those rows (`training.validation_fraction`, permuted with
`training.seed`), train `training.ensemble` networks side by side (one Keras model; each
member has its own initial weights and dropout draws and its own loss, so the members
train independently on the same batches; the prediction is their mean) with tf.data
batches, Adam and MSE on standardised targets for at most `training.max_epochs`, stop
after `training.patience` epochs without a lower early-stopping RMSE and restore the best
weights. `epoch_callback(epoch, val_rmse)` (epoch counted from 0; val_rmse the
early-stopping set's RMSE of the full prediction, base plus ensemble mean, in the
targets' original units, as the metrics compute it) runs after every epoch; whatever it
raises (e.g. `optuna.TrialPruned`) propagates out of `fit` unchanged.

The pieces live in `benchmark.models`: `fit_loop` (the Keras fit loop), `assembly` (the
network, built once per shape and reset for every refit), `persistence` (the saved
files), `tensorflow_setup` (importing and seeding TensorFlow). Baselines never import
TensorFlow; deep architectures import it on first use.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from benchmark import BASELINE_ARCHS, DEEP_ARCHS
from benchmark.models.assembly import NetworkAssembly
from benchmark.models.baselines import make_baseline
from benchmark.models.blockwise_fit import blockwise, is_row_view
from benchmark.models.fit_loop import EpochCallback, ensemble_mean, fit_network, predict_keras
from benchmark.models.persistence import read_fitted, read_state, write_regressor
from benchmark.models.preprocessing import FoldPreprocessor
from benchmark.models.tensorflow_setup import limit_threads, seed_everything
from benchmark.models.tokens import n_tokens, token_members
from benchmark.verbosity import quiet_environment

quiet_environment()  # TensorFlow reads TF_CPP_MIN_LOG_LEVEL when it loads

__all__ = ["EpochCallback", "Regressor", "fit_fold", "load_regressor", "make_regressor", "seed_everything"]


def _plain(value: Any) -> Any:
    """NumPy scalars (e.g. from Optuna or a loaded npz) as JSON-friendly Python values."""
    return value.item() if isinstance(value, np.generic) else value


def _as_targets(Y: np.ndarray) -> np.ndarray:
    Y = np.asarray(Y)
    return Y[:, None] if Y.ndim == 1 else Y


def _check_xy(X: np.ndarray, Y: Optional[np.ndarray] = None, n_features: Optional[int] = None):
    X = X if is_row_view(X) else np.asarray(X)  # a RowView (streamed matrix) stays on disk
    if X.ndim != 2:
        raise ValueError(f"X: expected a (n_samples, n_features) array, got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X: the model was fitted on {n_features} features, got {X.shape[1]}")
    if Y is not None and len(Y) != len(X):
        raise ValueError(f"Y: expected {len(X)} rows like X, got {len(Y)}")
    return X


class Regressor:
    """One architecture with its hyperparameters and in-fold preprocessing.

    `hp`: the complete hyperparameters (`models.<arch>.defaults` overlaid with tuned
    values); `batch_size` and `learning_rate` fall back to `training.*`. `training`:
    the `training` section as a dict. After `fit`: `preprocessor`, `model` (a Keras
    model or a baseline), `n_features`, `n_targets`, `epochs_trained` (0 for baselines),
    and `fit_seconds`, the wall time of every `fit` so far (preprocessing, training and,
    in a deep model's first fit, tf.function tracing).
    """

    def __init__(self, arch: str, hp: dict, training: dict, pca_components: Optional[int] = None):
        if arch not in DEEP_ARCHS + BASELINE_ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(DEEP_ARCHS + BASELINE_ARCHS)}")
        self.arch, self.is_deep = arch, arch in DEEP_ARCHS
        self.has_attention = arch.startswith("attention_")
        self.is_sequence = self.is_deep and arch != "dnn"
        self.hp = {key: _plain(value) for key, value in hp.items()}
        self.training = dict(training)
        self.pca_components = pca_components
        self.preprocessor = FoldPreprocessor(pca_components)
        self.model = None
        self.n_features: Optional[int] = None
        self.n_targets: Optional[int] = None
        self.epochs_trained = 0
        self.base = None  # the fitted base (a StackedBase or RidgeBaseline) unless training.base: none
        self.assignment: Optional[np.ndarray] = None  # sequence models: the token of each model input
        self._attention_model = None
        self.assembly = NetworkAssembly()  # the network, reused (reset) across refits
        self.fit_seconds = 0.0

    @property
    def batch_size(self) -> int:
        return int(self.hp.get("batch_size", self.training["batch_size"]))

    @property
    def learning_rate(self) -> float:
        return float(self.hp.get("learning_rate", self.training["learning_rate"]))

    @property
    def threads(self) -> int:
        """Threads of TensorFlow and BLAS while it fits and predicts (`training.threads`; 1
        before it existed): results depend on it in their last digits."""
        return int(self.training.get("threads", 1))

    @property
    def members(self) -> int:
        """Networks in the ensemble (`training.ensemble`; 1 before it existed)."""
        return int(self.training.get("ensemble", 1))

    @property
    def tokens(self) -> Optional[list[np.ndarray]]:
        """For sequence models, the model-input columns each token sums, one array per
        token in sequence order (the feature genes' positions, or PCA components with PCA
        on; empty for a padded token); else None."""
        if not self.is_sequence or self.assignment is None:
            return None
        steps = n_tokens(len(self.assignment), self.hp["steps"], self.hp.get("tokens", "modules"))
        return token_members(self.assignment, steps)

    def fit(self, X: np.ndarray, Y: np.ndarray, epoch_callback: Optional[EpochCallback] = None) -> "Regressor":
        """Fit preprocessing and model on these rows only. X (n, n_features), Y (n, n_targets)."""
        started = time.perf_counter()
        limit_threads(self.threads)
        try:
            Y = _as_targets(Y)
            X = _check_xy(X, Y)
            self.n_features, self.n_targets = X.shape[1], Y.shape[1]
            self.preprocessor = FoldPreprocessor(self.pca_components).fit(X, Y)
            Ys = self.preprocessor.transform_Y(Y)
            if is_row_view(X):  # preprocessed block by block as the model reads it
                Xs = X.map(self.preprocessor.transform_X, n_out=self.preprocessor.n_features_out)
            else:
                Xs = self.preprocessor.transform_X(X)
            self._attention_model = None
            self.base, self.assignment = None, None
            if self.is_deep and is_row_view(X) and self.model is not None:
                self._release_network()
            if self.is_deep:
                fit_network(self, Xs, Ys, epoch_callback)
            else:
                self.model = make_baseline(self.arch, self.hp).fit(Xs, Ys)
                self.epochs_trained = 0
            return self
        finally:
            self.fit_seconds += time.perf_counter() - started

    def _release_network(self) -> None:
        """Drop the previous fit's network (weights, optimizer slots, their initial copies, the
        traced functions) before a streamed fit's base, which is built new after it, from the
        same seeds, so to the same bits (tests/test_training.py). At 10,413 features the base's
        float64 X'X (867 MB) beside what the first fit left (770 MB, of it this network and,
        mostly, TensorFlow's own memory with oneDNN: results/onednn.md) took evaluate's second
        CV fit past a 2 GiB limit (results/scale.md). A streamed fit lasts minutes, so building
        again (seconds) costs little. In-memory fits keep reusing it."""
        from benchmark.models.blockwise_fit import release_memory

        self.model = None
        self.assembly = NetworkAssembly()
        release_memory()

    def _check_fitted(self) -> None:
        if self.model is None:
            raise RuntimeError(f"{self.arch}: call fit (or load_regressor) before predicting")

    def _inputs(self, X: np.ndarray) -> np.ndarray:
        """The model's inputs for rows X (an array): checked and preprocessed."""
        return self.preprocessor.transform_X(_check_xy(X, n_features=self.n_features))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions (n, n_targets) in the original target units (float64). `X` may be a
        `RowView`: predicted block by block."""
        self._check_fitted()
        limit_threads(self.threads)
        if is_row_view(X):
            return blockwise(self.predict, X)
        Xs = self._inputs(X)
        if not self.is_deep:
            return self.preprocessor.inverse_Y(self.model.predict(Xs))
        Ys = ensemble_mean(predict_keras(self.model, Xs, self.batch_size), self.members)
        return self.preprocessor.inverse_Y(Ys if self.base is None else Ys + self.base.predict(Xs))

    def predict_base(self, X: np.ndarray) -> np.ndarray:
        """The fitted base's predictions alone (n, n_targets), original units: what the
        network adds is `predict(X) - predict_base(X)`. Not with `training.base: none`."""
        self._check_fitted()
        if self.base is None:
            raise RuntimeError(f"{self.arch}: no base (training.base is none, or a baseline)")
        if is_row_view(X):
            return blockwise(self.predict_base, X)
        return self.preprocessor.inverse_Y(self.base.predict(self._inputs(X)))

    def attention(self, X: np.ndarray) -> Optional[np.ndarray]:
        """Attention weights (n, steps), each row summing to 1 (the mean over ensemble
        members); None without attention. Token t sums the model-input columns `self.tokens[t]`."""
        self._check_fitted()
        if not self.has_attention:
            return None
        if is_row_view(X):
            return blockwise(self.attention, X)
        from benchmark.models.architectures import attention_model

        if self._attention_model is None:
            self._attention_model = attention_model(self.model)
        return predict_keras(self._attention_model, self._inputs(X), self.batch_size)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `state.json`, `arrays.npz` (no pickle) and, for deep models, `model.keras`
        (`benchmark.models.persistence`)."""
        self._check_fitted()
        return write_regressor(self, directory)


def load_regressor(directory: str | os.PathLike) -> Regressor:
    """A fitted `Regressor` from a directory written by `Regressor.save`."""
    state = read_state(directory)
    regressor = Regressor(state["arch"], state["hp"], state["training"], state["pca_components"])
    limit_threads(regressor.threads)  # before its Keras model loads: TensorFlow takes it once
    read_fitted(regressor, directory, state)
    return regressor


def make_regressor(arch: str, hp: Optional[dict], config) -> Regressor:
    """A `Regressor` for `arch` with `hp` overlaid on `models.<arch>.defaults`.

    `config`: a `benchmark.config.Config` (or its `Params`); reads `training.*` and
    `features.pca_components`.
    """
    params = getattr(config, "params", config)
    full_hp = {**params.model(arch).defaults, **(hp or {})}
    return Regressor(arch, full_hp, params.training.model_dump(), params.features.pca_components)


def fit_fold(
    arch: str,
    hp: Optional[dict],
    config,
    X: np.ndarray,
    Y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    epoch_callback: Optional[EpochCallback] = None,
    regressor: Optional[Regressor] = None,
) -> tuple[Regressor, np.ndarray]:
    """Fit on rows `train` of X, Y and predict rows `val`: `(regressor, Y_pred_val)`.

    Nothing is fitted on `val` rows: preprocessing and the early-stopping set both come
    from `train`. `regressor`: refit this one (made by `make_regressor(arch, hp, config)`)
    rather than a new one; across folds a deep model then reuses its traced functions
    and starts each fold from the same initial state.
    """
    Y = _as_targets(Y)
    train, val = np.asarray(train), np.asarray(val)
    overlap = np.intersect1d(train, val)
    if overlap.size:
        raise ValueError(f"fold: {overlap.size} rows are in both the training and the validation part")
    if regressor is None:
        regressor = make_regressor(arch, hp, config)
    regressor.fit(X[train], Y[train], epoch_callback)
    return regressor, regressor.predict(X[val])
