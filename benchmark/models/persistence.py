"""A fitted `Regressor` (`benchmark.training`) as plain files, and back; no pickle.

    directory/state.json   architecture, hyperparameters, `training`, shapes, epochs
    directory/arrays.npz   preprocessing/*, baseline/* or base/*, tokens/assignment
    directory/model.keras  deep models only: the Keras network

`write_regressor(regressor, directory)` writes them; `read_state(directory)` reads and
checks `state.json`, from which `benchmark.training.load_regressor` makes the Regressor
that `read_fitted(regressor, directory, state)` then fills in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from benchmark.models.baselines import BASELINES
from benchmark.models.residual import base_from_state
from benchmark.models.preprocessing import FoldPreprocessor

STATE_FILE = "state.json"
ARRAYS_FILE = "arrays.npz"
MODEL_FILE = "model.keras"
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # 1: before the ridge base, gene tokens and ensembles (none of them used)


def write_regressor(regressor, directory: str | os.PathLike) -> Path:
    """Write `regressor` (fitted) into `directory`, created if need be; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f"preprocessing/{k}": np.asarray(v) for k, v in regressor.preprocessor.get_state().items()}
    if not regressor.is_deep:
        arrays.update({f"baseline/{k}": np.asarray(v) for k, v in regressor.model.get_state().items()})
    if regressor.base is not None:
        arrays.update({f"base/{k}": np.asarray(v) for k, v in regressor.base.get_state().items()})
    if regressor.assignment is not None:
        arrays["tokens/assignment"] = np.asarray(regressor.assignment)
    np.savez(directory / ARRAYS_FILE, allow_pickle=False, **arrays)
    if regressor.is_deep:
        regressor.model.save(directory / MODEL_FILE)
    state = {
        "format": FORMAT_VERSION,
        "arch": regressor.arch,
        "hp": regressor.hp,
        "training": regressor.training,
        "pca_components": regressor.pca_components,
        "n_features": regressor.n_features,
        "n_targets": regressor.n_targets,
        "epochs_trained": regressor.epochs_trained,
    }
    (directory / STATE_FILE).write_text(json.dumps(state, sort_keys=True, indent=2) + "\n")
    return directory


def read_state(directory: str | os.PathLike) -> dict:
    """`state.json` of a saved Regressor, in a format this version reads."""
    path = Path(directory) / STATE_FILE
    state = json.loads(path.read_text())
    if state.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{path}: unsupported format {state.get('format')!r}")
    return state


def read_fitted(regressor, directory: str | os.PathLike, state: dict) -> None:
    """Set the fitted state saved in `directory` on `regressor`, made from `state`'s
    architecture, hyperparameters and `training`."""
    directory = Path(directory)
    regressor.n_features, regressor.n_targets = state["n_features"], state["n_targets"]
    regressor.epochs_trained = state["epochs_trained"]
    with np.load(directory / ARRAYS_FILE, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    part = lambda prefix: {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(prefix + "/")}  # noqa: E731
    regressor.preprocessor = FoldPreprocessor.from_state(part("preprocessing"), state["pca_components"])
    if part("base"):
        regressor.base = base_from_state(part("base"))
    if "tokens/assignment" in arrays:
        regressor.assignment = arrays["tokens/assignment"]
    if regressor.is_deep:
        from benchmark.models.tensorflow_setup import import_keras

        _, keras = import_keras()
        import benchmark.models.attention  # noqa: F401  (registers genebench>AdditiveAttention)
        import benchmark.models.gene_tokens  # noqa: F401  (registers genebench>GeneTokens)

        # Inference only: the optimizer state is not needed (compile=False).
        regressor.model = keras.saving.load_model(directory / MODEL_FILE, compile=False, safe_mode=True)
    else:
        regressor.model = BASELINES[regressor.arch].from_state(part("baseline"))
