"""Fitting one model on one training part: preprocessing, fit loop, seeds, saving.

`make_regressor(arch, hp, config)` gives a `Regressor` for any architecture, deep or
baseline, behind one interface:

    regressor = make_regressor("attention_lstm", hp, config).fit(X_train, Y_train)
    Y_pred = regressor.predict(X_val)        # (n, n_targets), original target units
    weights = regressor.attention(X_val)     # (n, steps), or None without attention
    regressor.save(directory); load_regressor(directory)

`fit` fits the in-fold preprocessing (`FoldPreprocessor`) on the rows it is given and
nothing else. Deep models then fit, on those rows only: the ridge base they correct
(`training.base: ridge`, out-of-fold, `benchmark.models.residual`) and, for sequence
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

Baselines never import TensorFlow; deep architectures import it on first use.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from benchmark import BASELINE_ARCHS, DEEP_ARCHS
from benchmark.models.baselines import BASELINES, make_baseline
from benchmark.models.preprocessing import FoldPreprocessor
from benchmark.models.residual import fit_ridge_base
from benchmark.models.tokens import fit_token_assignment, n_tokens, token_members
from benchmark.streaming import blockwise, is_row_view, row_batches
from benchmark.verbosity import quiet_environment, verbose

quiet_environment()  # TensorFlow reads TF_CPP_MIN_LOG_LEVEL when it loads

STATE_FILE = "state.json"
ARRAYS_FILE = "arrays.npz"
MODEL_FILE = "model.keras"
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # 1: before the ridge base, gene tokens and ensembles (none of them used)

EpochCallback = Callable[[int, float], None]


_TF_READY = False
# Lines TensorFlow 2.21's C++ side writes to fd 2 while it loads and first probes devices,
# before any setting is read (TF_CPP_MIN_LOG_LEVEL does not reach absl's pre-init log):
# absl's "All log messages before absl::InitializeLog()" notice, oneDNN's and the CUDA
# stubs' notes on a machine without a GPU. One copy per process, 36 processes per repro.
_STARTUP_CHATTER = re.compile(r"absl::InitializeLog|oneDNN custom operations|Could not find cuda drivers|"
                              r"failed call to cuInit|cpu_feature_guard|TF_ENABLE_ONEDNN_OPTS")


@contextlib.contextmanager
def _without_startup_chatter():
    """Capture fd 2 for the block and replay every line but `_STARTUP_CHATTER`'s."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not _STARTUP_CHATTER.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def _import_keras():
    """Import and set up TensorFlow and Keras (only deep architectures get here)."""
    global _TF_READY
    # TensorFlow's C++ log lines, read when it loads; a user's own setting (or --verbose) wins.
    quiet_environment()
    if _TF_READY:
        import tensorflow as tf
        import keras

        return tf, keras
    # The import and the first device probe, their start-up lines dropped unless verbose.
    with contextlib.nullcontext() if verbose() else _without_startup_chatter():
        import tensorflow as tf
        import keras

        gpus = tf.config.list_physical_devices("GPU")
    if not _TF_READY:
        # Every new model traces new tf.functions; across a study that warning is noise.
        tf.get_logger().setLevel("ERROR")
        if not gpus:
            # Grappler's graph rewrites are made for large graphs and accelerators. For the
            # small recurrent models here on a 2-core CPU, skipping them made refits up to
            # 13% faster, first fits within 0.3 s either way, with bit-identical predictions
            # (scripts/bench_overheads.py, results/overheads.md).
            tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
        _TF_READY = True
    return tf, keras


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TensorFlow ops deterministic.

    Safe to call repeatedly. With op determinism on, the same parameters on the same
    machine (and TensorFlow build) give bit-identical weights and predictions.
    """
    tf, keras = _import_keras()
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


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


VAL_RMSE = "val_rmse"


def _stopping_callbacks(keras, val_rmse: Callable[[], float], patience: int,
                        epoch_callback: Optional[EpochCallback]) -> list:
    """Keras callbacks, in order: put `val_rmse()` into the epoch's logs, stop early on it
    (restoring the best weights), then `epoch_callback(epoch, val_rmse)`."""

    class StoppingRMSE(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs[VAL_RMSE] = val_rmse()  # Keras hands every callback the same logs dict

    class EpochHook(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            epoch_callback(int(epoch), float(logs[VAL_RMSE]))

    callbacks = [StoppingRMSE(),
                 keras.callbacks.EarlyStopping(monitor=VAL_RMSE, mode="min", patience=patience,
                                               restore_best_weights=True)]
    return callbacks + ([EpochHook()] if epoch_callback is not None else [])


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
        self.arch = arch
        self.hp = {key: _plain(value) for key, value in hp.items()}
        self.training = dict(training)
        self.pca_components = pca_components
        self.preprocessor = FoldPreprocessor(pca_components)
        self.model = None
        self.n_features: Optional[int] = None
        self.n_targets: Optional[int] = None
        self.epochs_trained = 0
        self.base = None  # the fitted ridge base (a RidgeBaseline) with training.base: ridge
        self.assignment: Optional[np.ndarray] = None  # sequence models: the token of each model input
        self._attention_model = None
        self._initial_state: Optional[list] = None  # see _ready_model
        self._built_for: Optional[tuple[int, int]] = None
        self.fit_seconds = 0.0

    @property
    def is_deep(self) -> bool:
        return self.arch in DEEP_ARCHS

    @property
    def has_attention(self) -> bool:
        return self.arch.startswith("attention_")

    @property
    def batch_size(self) -> int:
        return int(self.hp.get("batch_size", self.training["batch_size"]))

    @property
    def learning_rate(self) -> float:
        return float(self.hp.get("learning_rate", self.training["learning_rate"]))

    @property
    def members(self) -> int:
        """Networks in the ensemble (`training.ensemble`; 1 before it existed)."""
        return int(self.training.get("ensemble", 1))

    @property
    def is_sequence(self) -> bool:
        return self.is_deep and self.arch != "dnn"

    @property
    def tokens(self) -> Optional[list[np.ndarray]]:
        """For sequence models, the model-input columns each token sums, one array per
        token in sequence order (the feature genes' positions, or PCA components with PCA
        on; empty for a padded token); else None."""
        if not self.is_sequence or self.assignment is None:
            return None
        steps = n_tokens(len(self.assignment), self.hp["steps"], self.hp.get("tokens", "modules"))
        return token_members(self.assignment, steps)

    # -- fitting ---------------------------------------------------------------------

    def fit(self, X: np.ndarray, Y: np.ndarray, epoch_callback: Optional[EpochCallback] = None) -> "Regressor":
        """Fit preprocessing and model on these rows only. X (n, n_features), Y (n, n_targets)."""
        started = time.perf_counter()
        try:
            return self._fit(X, Y, epoch_callback)
        finally:
            self.fit_seconds += time.perf_counter() - started

    def _fit(self, X: np.ndarray, Y: np.ndarray, epoch_callback: Optional[EpochCallback]) -> "Regressor":
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
        if self.is_deep:
            self._fit_deep(Xs, Ys, epoch_callback)
        else:
            self.model = make_baseline(self.arch, self.hp).fit(Xs, Ys)
            self.epochs_trained = 0
        return self

    def _fit_deep(self, Xs: np.ndarray, Ys: np.ndarray, epoch_callback: Optional[EpochCallback]) -> None:
        tf, keras = _import_keras()

        seed = int(self.training["seed"])
        n = len(Xs)
        if n < 2:
            raise ValueError(f"{self.arch}: need at least 2 training samples to carve an early-stopping set, got {n}")
        # The early-stopping rows come from the training part passed to fit, never from
        # the rows being scored.
        n_stop = min(max(int(round(self.training["validation_fraction"] * n)), 1), n - 1)
        order = np.random.default_rng(seed).permutation(n)
        stop, fit = np.sort(order[:n_stop]), np.sort(order[n_stop:])

        # The network's targets: what the base leaves, with the base's out-of-fold predictions.
        targets = Ys
        if self.training.get("base", "none") == "ridge":
            self.base, base_oof = fit_ridge_base(Xs, Ys, seed)
            targets = (Ys - base_oof).astype(np.float32)
        if self.is_sequence:
            self.assignment = fit_token_assignment(Xs, self.hp["steps"], self.hp.get("tokens", "modules"),
                                                   ordered=self.preprocessor.pca_components_ is None)

        seed_everything(seed)
        batch_size = self.batch_size
        members = self.members
        if is_row_view(Xs):  # batches read from the memory-mapped matrix per step
            train_data = row_batches(Xs[fit], targets[fit], batch_size, seed=seed)
        else:
            train_data = (
                tf.data.Dataset.from_tensor_slices((Xs[fit], targets[fit]))
                .shuffle(len(fit), seed=seed, reshuffle_each_iteration=True)
                .batch(batch_size)
            )
        if members > 1:  # every member is trained on the same targets
            train_data = train_data.map(lambda x, y: (x, tf.tile(y, [1, members])))

        self._ready_model(Xs.shape[1], Ys.shape[1])
        if self.assignment is not None:
            from benchmark.models.architectures import set_token_assignment

            set_token_assignment(self.model, self.assignment)
        y_scale = np.asarray(self.preprocessor.y_scale_, dtype=np.float64)

        def stopping_rmse() -> float:
            # The residual the ensemble mean leaves on the early-stopping rows (whose base
            # predictions are out-of-fold), in the targets' original units.
            predicted = blockwise(lambda block: self._predict_keras(self.model, block), Xs[stop])
            error = (targets[stop] - self._ensemble_mean(predicted)) * y_scale
            return float(np.sqrt(np.mean(np.square(error))))

        callbacks = _stopping_callbacks(keras, stopping_rmse, int(self.training["patience"]), epoch_callback)
        history = self.model.fit(
            train_data,
            epochs=int(self.training["max_epochs"]),
            callbacks=callbacks,
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            verbose=0,
        )
        self.epochs_trained = len(history.history["loss"])

    def _ready_model(self, n_features: int, n_targets: int) -> None:
        """A freshly initialised model in `self.model`, built once per shape.

        The first fit builds and compiles the model and its optimizer and keeps every
        variable's initial value (weights, dropout seed state, optimizer slots). A later
        fit of the same Regressor on the same shapes (the next CV fold, the refit)
        restores those values instead of building again, so it starts from exactly the
        state a new model would have (same seed, same values) while the traced training
        and prediction functions are reused: tracing costs seconds per model on a CPU.
        """
        shape = (n_features, n_targets)
        if self._initial_state is not None and self._built_for == shape:  # set only with self.model
            for variable, value in zip(self._state_variables(), self._initial_state):
                variable.assign(value)
            return
        from benchmark.models.architectures import build_model

        hp = {**self.hp, "learning_rate": self.learning_rate}
        self.model = build_model(self.arch, hp, n_features, n_targets, members=self.members,
                                 zero_init=self.training.get("base", "none") == "ridge")
        self.model.optimizer.build(self.model.trainable_variables)
        self._initial_state = [variable.numpy() for variable in self._state_variables()]
        self._built_for = shape

    def _state_variables(self) -> list:
        return list(self.model.variables) + list(self.model.optimizer.variables)

    # -- prediction ------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if self.model is None:
            raise RuntimeError(f"{self.arch}: call fit (or load_regressor) before predicting")

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions (n, n_targets) in the original target units (float64).

        `X` may be a `RowView`: predicted block by block."""
        self._check_fitted()
        if is_row_view(X):
            return blockwise(self.predict, X)
        Xs = self.preprocessor.transform_X(_check_xy(X, n_features=self.n_features))
        if self.is_deep:
            Ys = self._ensemble_mean(self._predict_keras(self.model, Xs))
            if self.base is not None:
                Ys = Ys + self.base.predict(Xs)
        else:
            Ys = self.model.predict(Xs)
        return self.preprocessor.inverse_Y(Ys)

    def predict_base(self, X: np.ndarray) -> np.ndarray:
        """The fitted base's predictions alone (n, n_targets), original units: what the
        network adds is `predict(X) - predict_base(X)`. Only with `training.base: ridge`."""
        self._check_fitted()
        if self.base is None:
            raise RuntimeError(f"{self.arch}: no base (training.base is none, or a baseline)")
        if is_row_view(X):
            return blockwise(self.predict_base, X)
        Xs = self.preprocessor.transform_X(_check_xy(X, n_features=self.n_features))
        return self.preprocessor.inverse_Y(self.base.predict(Xs))

    def _ensemble_mean(self, outputs: np.ndarray) -> np.ndarray:
        """The members' mean prediction, `(n, n_targets)`, from the model's `(n, members * n_targets)`."""
        return np.asarray(outputs, dtype=np.float64).reshape(len(outputs), self.members, -1).mean(axis=1)

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
        Xs = self.preprocessor.transform_X(_check_xy(X, n_features=self.n_features))
        return self._predict_keras(self._attention_model, Xs)

    def _predict_keras(self, model, Xs: np.ndarray) -> np.ndarray:
        tf, _ = _import_keras()
        # A tf.data input rather than a NumPy array: Keras's array adapter inserts a map
        # that, with op determinism on, logs a spurious TensorFlow error line per call.
        batches = tf.data.Dataset.from_tensor_slices(Xs).batch(max(self.batch_size, 256))
        return np.asarray(model.predict(batches, verbose=0))

    # -- saving ----------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `state.json`, `arrays.npz` (no pickle) and, for deep models, `model.keras`."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"preprocessing/{k}": np.asarray(v) for k, v in self.preprocessor.get_state().items()}
        if not self.is_deep:
            arrays.update({f"baseline/{k}": np.asarray(v) for k, v in self.model.get_state().items()})
        if self.base is not None:
            arrays.update({f"base/{k}": np.asarray(v) for k, v in self.base.get_state().items()})
        if self.assignment is not None:
            arrays["tokens/assignment"] = np.asarray(self.assignment)
        np.savez(directory / ARRAYS_FILE, allow_pickle=False, **arrays)
        if self.is_deep:
            self.model.save(directory / MODEL_FILE)
        state = {
            "format": FORMAT_VERSION,
            "arch": self.arch,
            "hp": self.hp,
            "training": self.training,
            "pca_components": self.pca_components,
            "n_features": self.n_features,
            "n_targets": self.n_targets,
            "epochs_trained": self.epochs_trained,
        }
        (directory / STATE_FILE).write_text(json.dumps(state, sort_keys=True, indent=2) + "\n")
        return directory


def load_regressor(directory: str | os.PathLike) -> Regressor:
    """A fitted `Regressor` from a directory written by `Regressor.save`."""
    directory = Path(directory)
    state = json.loads((directory / STATE_FILE).read_text())
    if state.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{directory / STATE_FILE}: unsupported format {state.get('format')!r}")
    regressor = Regressor(state["arch"], state["hp"], state["training"], state["pca_components"])
    regressor.n_features, regressor.n_targets = state["n_features"], state["n_targets"]
    regressor.epochs_trained = state["epochs_trained"]
    with np.load(directory / ARRAYS_FILE, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    part = lambda prefix: {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + "/")}  # noqa: E731
    regressor.preprocessor = FoldPreprocessor.from_state(part("preprocessing"), state["pca_components"])
    if part("base"):
        regressor.base = BASELINES["ridge"].from_state(part("base"))
    if "tokens/assignment" in arrays:
        regressor.assignment = arrays["tokens/assignment"]
    if regressor.is_deep:
        _, keras = _import_keras()
        import benchmark.models.attention  # noqa: F401  (registers genebench>AdditiveAttention)
        import benchmark.models.gene_tokens  # noqa: F401  (registers genebench>GeneTokens)

        # Inference only: the optimizer state is not needed (compile=False).
        regressor.model = keras.saving.load_model(directory / MODEL_FILE, compile=False, safe_mode=True)
    else:
        regressor.model = BASELINES[regressor.arch].from_state(part("baseline"))
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
