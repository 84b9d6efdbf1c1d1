"""Keras builders for the deep architectures (imports TensorFlow).

Every model takes the preprocessed feature vector, shape `(batch, n_features)`, and
returns standardised targets, `(batch, n_targets)`; it is compiled with Adam and MSE.
Only built-in layers and the registered `AdditiveAttention` are used (no `Lambda`), so
a saved `.keras` file loads with `safe_mode=True`.

Hyperparameters (`hp`, the `models.<arch>.defaults` of params.yaml overlaid with tuned
values):

- `dnn`: `layers` Dense+ReLU+Dropout blocks; the first has `units` units and each next
  one half the previous (at least 8); `dropout`; `learning_rate`.
- `lstm`, `gru`: the features read as `steps` tokens of `ceil(n_features / steps)`
  values, zero-padded at the end inside the model (`sequence_layout`); `layers` stacked
  recurrent layers of `units` units, dropout after each; `learning_rate`.
- `attention_lstm`, `attention_gru`: the same stack returning every hidden state,
  pooled by `AdditiveAttention(attention_units)`; `attention_model` exposes its weights.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from benchmark.models.attention import AdditiveAttention  # noqa: E402
from benchmark.models.preprocessing import sequence_layout  # noqa: E402

RECURRENT = {
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
    "attention_lstm": keras.layers.LSTM,
    "attention_gru": keras.layers.GRU,
}
REQUIRED_HP = {
    "dnn": ("layers", "units", "dropout", "learning_rate"),
    "lstm": ("steps", "units", "layers", "dropout", "learning_rate"),
    "gru": ("steps", "units", "layers", "dropout", "learning_rate"),
    "attention_lstm": ("steps", "units", "layers", "attention_units", "dropout", "learning_rate"),
    "attention_gru": ("steps", "units", "layers", "attention_units", "dropout", "learning_rate"),
}
ATTENTION_LAYER = "attention"


def build_model(arch: str, hp: dict, n_features: int, n_targets: int) -> keras.Model:
    """A compiled Keras model for `arch`: `(batch, n_features) -> (batch, n_targets)`."""
    if arch not in REQUIRED_HP:
        raise ValueError(f"unknown deep architecture {arch!r}; expected one of {', '.join(REQUIRED_HP)}")
    missing = [key for key in REQUIRED_HP[arch] if key not in hp]
    if missing:
        raise ValueError(f"models.{arch}: hyperparameter {missing[0]!r} is missing (set it in defaults)")

    features = keras.Input(shape=(n_features,), name="features")
    if arch == "dnn":
        x = features
        for i in range(int(hp["layers"])):
            x = keras.layers.Dense(max(int(hp["units"]) // 2**i, 8), activation="relu", name=f"dense_{i}")(x)
            x = keras.layers.Dropout(float(hp["dropout"]), name=f"dropout_{i}")(x)
    else:
        x = _recurrent_stack(arch, hp, features, n_features)
    targets = keras.layers.Dense(n_targets, name="targets")(x)

    model = keras.Model(features, targets, name=arch)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(hp["learning_rate"])), loss="mse")
    return model


def _recurrent_stack(arch: str, hp: dict, features, n_features: int):
    steps, width = sequence_layout(n_features, hp["steps"])
    x = features
    if steps * width != n_features:
        # Reshape to (n_features, 1) so the built-in 1-D padding can append zero features.
        x = keras.layers.Reshape((n_features, 1), name="as_column")(x)
        x = keras.layers.ZeroPadding1D(padding=(0, steps * width - n_features), name="pad")(x)
    x = keras.layers.Reshape((steps, width), name="tokens")(x)

    attention = arch.startswith("attention_")
    n_layers = int(hp["layers"])
    for i in range(n_layers):
        last = i == n_layers - 1
        x = RECURRENT[arch](int(hp["units"]), return_sequences=attention or not last, name=f"recurrent_{i}")(x)
        x = keras.layers.Dropout(float(hp["dropout"]), name=f"dropout_{i}")(x)
    if attention:
        x, _weights = AdditiveAttention(int(hp["attention_units"]), name=ATTENTION_LAYER)(x)
    return x


def has_attention(model: keras.Model) -> bool:
    return any(layer.name == ATTENTION_LAYER for layer in model.layers)


def attention_model(model: keras.Model) -> keras.Model:
    """A model sharing `model`'s layers that outputs the attention weights, `(batch, steps)`."""
    if not has_attention(model):
        raise ValueError(f"model {model.name!r} has no attention layer")
    weights = model.get_layer(ATTENTION_LAYER).output[1]
    return keras.Model(model.inputs, weights, name=f"{model.name}_attention")
