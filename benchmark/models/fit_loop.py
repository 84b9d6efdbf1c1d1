"""The Keras fit loop of a deep `Regressor` (`benchmark.training`), on its training rows.

`fit_network(regressor, Xs, Ys)`, with Xs and Ys already preprocessed, in this order:

- carves the early-stopping rows out of the training rows (`early_stopping_split`:
  `training.validation_fraction`, permuted with `training.seed`);
- fits the base (`training.base`: `stack` or `ridge`) and, for sequence models, the gene tokens;
  the network learns what the base's out-of-fold predictions leave;
- seeds everything, then makes the tf.data batches (`training_batches`, shuffled with the
  seed every epoch, read from the file per step for a streamed matrix) and the network
  (`benchmark.models.assembly`: built once per shape, reset to its initial state after);
- runs `run_fit_loop`: at most `training.max_epochs` epochs, stopping after
  `training.patience` epochs without a lower `stopping_rmse()` and restoring the best
  weights. `epoch_callback(epoch, val_rmse)` runs after every epoch; whatever it raises
  propagates unchanged.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from benchmark.models.blockwise_fit import blockwise, is_row_view, row_batches
from benchmark.models.residual import fit_base
from benchmark.models.tensorflow_setup import import_keras, seed_everything
from benchmark.models.tokens import fit_token_assignment

EpochCallback = Callable[[int, float], None]
VAL_RMSE = "val_rmse"


def fit_network(regressor, Xs, Ys: np.ndarray, epoch_callback: Optional[EpochCallback] = None) -> None:
    """Fit a deep `regressor`'s base, tokens and network on preprocessed rows `Xs`, `Ys`
    (standardised targets); sets its `base`, `assignment`, `model` and `epochs_trained`."""
    seed, training = int(regressor.training["seed"]), regressor.training
    # The early-stopping rows come from the rows passed to fit, never from those scored.
    stop, fit = early_stopping_split(len(Xs), training["validation_fraction"], seed, regressor.arch)
    targets = Ys  # the network's: what the base leaves, with the base's out-of-fold predictions
    based = training.get("base", "none") != "none"
    if based:
        regressor.base, base_oof = fit_base(training["base"], Xs, Ys, seed)
        targets = (Ys - base_oof).astype(np.float32)
    if regressor.is_sequence:
        regressor.assignment = fit_token_assignment(Xs, regressor.hp["steps"], regressor.hp.get("tokens", "modules"),
                                                    ordered=regressor.preprocessor.pca_components_ is None)
    seed_everything(seed)  # before the batches and the network: both draw from the seeds
    batches = training_batches(Xs[fit], targets[fit], regressor.batch_size, seed, regressor.members)
    hp = {**regressor.hp, "learning_rate": regressor.learning_rate}
    regressor.model = regressor.assembly.ready(regressor.arch, hp, Xs.shape[1], Ys.shape[1], regressor.members,
                                               zero_init=based,
                                               assignment=regressor.assignment)
    y_scale = np.asarray(regressor.preprocessor.y_scale_, dtype=np.float64)
    rmse = stopping_rmse(regressor.model, Xs[stop], targets[stop], y_scale, regressor.batch_size, regressor.members)
    regressor.epochs_trained = run_fit_loop(regressor.model, batches, rmse, training["max_epochs"],
                                            training["patience"], epoch_callback)


def early_stopping_split(n: int, fraction: float, seed: int, arch: str) -> tuple[np.ndarray, np.ndarray]:
    """`(stop, fit)`: sorted positions of the early-stopping rows (`fraction` of n, at
    least 1 and at most n - 1) and of the rows the network trains on."""
    if n < 2:
        raise ValueError(f"{arch}: need at least 2 training samples to carve an early-stopping set, got {n}")
    n_stop = min(max(int(round(fraction * n)), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:n_stop]), np.sort(order[n_stop:])


def training_batches(X, targets: np.ndarray, batch_size: int, seed: int, members: int):
    """A tf.data pipeline of shuffled `(features, targets)` batches; with several ensemble
    members the targets repeat once per member, `(batch, members * n_targets)`."""
    tf, _ = import_keras()
    if is_row_view(X):  # batches read from the memory-mapped matrix per step
        batches = row_batches(X, targets, batch_size, seed=seed)
    else:
        batches = (
            tf.data.Dataset.from_tensor_slices((X, targets))
            .shuffle(len(X), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size)
        )
    if members > 1:  # every member is trained on the same targets
        batches = batches.map(lambda x, y: (x, tf.tile(y, [1, members])))
    return batches


def predict_keras(model, Xs: np.ndarray, batch_size: int) -> np.ndarray:
    """`model`'s outputs for the rows of `Xs` (an array), in batches of at least 256.

    Each batch goes straight to the model's traced predict function (`predict_on_batch`):
    the batches, and so the outputs, are exactly `model.predict`'s, without the data
    adapter and iterator `predict` builds per call (2-3x its time on an early-stopping set
    of 84 rows, which is predicted after every epoch; results/profile_fit.md).
    """
    size = max(int(batch_size), 256)
    if len(Xs) <= size:
        return np.asarray(model.predict_on_batch(Xs))
    batches = [model.predict_on_batch(Xs[start:start + size]) for start in range(0, len(Xs), size)]
    if isinstance(batches[0], (list, tuple)):  # several outputs: (outputs, n, ...), as predict's
        return np.asarray([np.concatenate([np.asarray(batch[i]) for batch in batches]) for i in range(len(batches[0]))])
    return np.concatenate([np.asarray(batch) for batch in batches])


def ensemble_mean(outputs: np.ndarray, members: int) -> np.ndarray:
    """The members' mean prediction, `(n, n_targets)`, from the model's `(n, members * n_targets)`."""
    return np.asarray(outputs, dtype=np.float64).reshape(len(outputs), members, -1).mean(axis=1)


def stopping_rmse(model, X_stop, targets_stop: np.ndarray, y_scale: np.ndarray, batch_size: int,
                  members: int) -> Callable[[], float]:
    """A function giving the RMSE `model`'s ensemble mean leaves on the early-stopping rows
    (whose base predictions are out-of-fold), in the targets' original units: standardised
    residuals times `y_scale`, (n_targets,)."""

    def rmse() -> float:
        predicted = blockwise(lambda block: predict_keras(model, block, batch_size), X_stop)
        error = (targets_stop - ensemble_mean(predicted, members)) * y_scale
        return float(np.sqrt(np.mean(np.square(error))))

    return rmse


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


def run_fit_loop(model, batches, stopping_rmse: Callable[[], float], max_epochs: int, patience: int,
                 epoch_callback: Optional[EpochCallback] = None) -> int:
    """Train `model` (compiled) on `batches`, early-stopped on `stopping_rmse()`; the
    number of epochs trained."""
    _, keras = import_keras()
    history = model.fit(
        batches,
        epochs=int(max_epochs),
        callbacks=_stopping_callbacks(keras, stopping_rmse, int(patience), epoch_callback),
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=0,
    )
    return len(history.history["loss"])

