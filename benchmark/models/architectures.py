"""Keras builders for the deep architectures (imports TensorFlow).

Every model takes the preprocessed feature vector, shape `(batch, n_features)`, and
returns standardised targets (or, on a ridge base, their residual): `(batch, n_targets)`,
or `(batch, members * n_targets)` for an ensemble of `members` networks side by side
(member i's predictions are columns `i*n_targets .. (i+1)*n_targets - 1`; the prediction
is their mean). It is compiled with Adam and MSE. Only built-in layers and the registered
`AdditiveAttention` and `GeneTokens` are used (no `Lambda`), so a saved `.keras` file
loads with `safe_mode=True`.

Hyperparameters (`hp`, the `models.<arch>.defaults` of params.yaml overlaid with tuned
values):

- `dnn` (wide and deep): `layers` blocks of Dense(`units`, `activation`) + Dropout(`dropout`)
  (D-GEX's shape: every hidden layer equally wide); with `linear: true` a linear path
  from the features to the targets is added beside the stack (trained jointly, L2
  penalty `linear_l2`); `learning_rate`.
- `lstm`, `gru`: `GeneTokens` embeds the genes (`token_units` wide, default 16) and sums
  them into `steps` tokens (`tokens: modules`, modules of co-expressed genes, the default;
  `tokens: genes`, one gene per token and `steps` ignored); the assignment is fitted per
  fold and set with `set_token_assignment`; `layers` stacked recurrent layers of `units` units,
  dropout after each; padded tokens are masked; `learning_rate`.
- `attention_lstm`, `attention_gru`: the same stack returning every hidden state,
  pooled by `AdditiveAttention(attention_units)`; `attention_model` exposes its weights.
- Every sequence model: `head_units` > 0 puts a Dense(`head_units`, `activation`, relu by
  default) + Dropout(`dropout`) head between the pooled state (the attention's context, or
  the last hidden state) and the output layer; 0 or absent: the output layer reads the
  pooled state directly. (The output layer is linear, so without a head a target is a
  weighted sum of hidden units: on `synthetic` top 50, whose targets are products of
  programme pairs, a 1,024-unit head took attention_lstm's CV RMSE at its defaults from
  0.5194 to 0.4868, level with the dnn's 0.4858.)

`zero_init=True` (a model that corrects a ridge base) starts the output layers at zero, so
the untrained model predicts exactly the base.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmark.models.attention import AdditiveAttention  # noqa: E402
from benchmark.models.gene_tokens import GeneTokens  # noqa: E402
from benchmark.models.tokens import n_tokens  # noqa: E402

RECURRENT = {
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
    "attention_lstm": keras.layers.LSTM,
    "attention_gru": keras.layers.GRU,
}
_SEQUENCE_HP = ("steps", "units", "layers", "dropout", "learning_rate")
REQUIRED_HP = {
    "dnn": ("layers", "units", "dropout", "learning_rate"),
    "lstm": _SEQUENCE_HP,
    "gru": _SEQUENCE_HP,
    "attention_lstm": _SEQUENCE_HP + ("attention_units",),
    "attention_gru": _SEQUENCE_HP + ("attention_units",),
}
ATTENTION_LAYER = "attention"
DEFAULT_TOKEN_UNITS = 16  # `token_units` where hp leaves it out
TOKENS_LAYER = "tokens"


def _name(base: str, member: int, members: int) -> str:
    """Layer names as before for a single network; `m<i>_` prefixes inside an ensemble."""
    return base if members == 1 else f"m{member}_{base}"


def build_model(arch: str, hp: dict, n_features: int, n_targets: int, members: int = 1,
                zero_init: bool = False) -> keras.Model:
    """A compiled Keras model for `arch`: `(batch, n_features) -> (batch, members * n_targets)`."""
    if arch not in REQUIRED_HP:
        raise ValueError(f"unknown deep architecture {arch!r}; expected one of {', '.join(REQUIRED_HP)}")
    missing = [key for key in REQUIRED_HP[arch] if key not in hp]
    if missing:
        raise ValueError(f"models.{arch}: hyperparameter {missing[0]!r} is missing (set it in defaults)")
    if int(members) < 1:
        raise ValueError(f"training.ensemble: expected at least 1 member, got {members}")

    output_init = "zeros" if zero_init else "glorot_uniform"
    features = keras.Input(shape=(n_features,), name="features")
    outputs = []
    for member in range(int(members)):
        name = lambda base: _name(base, member, int(members))  # noqa: E731
        if arch == "dnn":
            outputs.append(_wide_and_deep(hp, features, n_targets, output_init, name))
        else:
            x = _recurrent_stack(arch, hp, features, n_features, name)
            outputs.append(keras.layers.Dense(n_targets, kernel_initializer=output_init, name=name("targets"))(x))
    targets = outputs[0] if len(outputs) == 1 else keras.layers.Concatenate(name="targets")(outputs)

    model = keras.Model(features, targets, name=arch)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(hp["learning_rate"])), loss="mse")
    return model


def _wide_and_deep(hp: dict, features, n_targets: int, output_init: str, name):
    x = features
    for i in range(int(hp["layers"])):
        x = keras.layers.Dense(int(hp["units"]), activation=str(hp.get("activation", "relu")), name=name(f"dense_{i}"))(x)
        x = keras.layers.Dropout(float(hp["dropout"]), name=name(f"dropout_{i}"))(x)
    deep = keras.layers.Dense(n_targets, kernel_initializer=output_init, name=name("deep"))(x)
    if not hp.get("linear", False):
        return deep
    wide = keras.layers.Dense(n_targets, kernel_initializer=output_init, name=name("linear"),
                              kernel_regularizer=keras.regularizers.L2(float(hp.get("linear_l2", 0.0))))(features)
    return keras.layers.Add(name=name("wide_and_deep"))([deep, wide])


def _recurrent_stack(arch: str, hp: dict, features, n_features: int, name):
    steps = n_tokens(n_features, hp["steps"], hp.get("tokens", "modules"))
    x, mask = GeneTokens(steps, int(hp.get("token_units", DEFAULT_TOKEN_UNITS)), name=name(TOKENS_LAYER))(features)
    attention = arch.startswith("attention_")
    n_layers = int(hp["layers"])
    for i in range(n_layers):
        last = i == n_layers - 1
        x = RECURRENT[arch](int(hp["units"]), return_sequences=attention or not last,
                            name=name(f"recurrent_{i}"))(x, mask=mask)
        x = keras.layers.Dropout(float(hp["dropout"]), name=name(f"dropout_{i}"))(x)
    if attention:
        x, _weights = AdditiveAttention(int(hp["attention_units"]), name=name(ATTENTION_LAYER))(x, mask=mask)
    if int(hp.get("head_units", 0)) > 0:
        x = keras.layers.Dense(int(hp["head_units"]), activation=str(hp.get("activation", "relu")), name=name("head"))(x)
        x = keras.layers.Dropout(float(hp["dropout"]), name=name("head_dropout"))(x)
    return x


def set_token_assignment(model: keras.Model, assignment: np.ndarray) -> None:
    """Assign genes to tokens in every `GeneTokens` layer of `model` (every ensemble member)."""
    for layer in model.layers:
        if isinstance(layer, GeneTokens):
            layer.assignment.assign(np.asarray(assignment, dtype=np.int32))


def _attention_layers(model: keras.Model) -> list:
    return [layer for layer in model.layers if isinstance(layer, AdditiveAttention)]


def has_attention(model: keras.Model) -> bool:
    return bool(_attention_layers(model))


def attention_model(model: keras.Model) -> keras.Model:
    """A model sharing `model`'s layers that outputs the attention weights, `(batch, steps)`
    (the mean over ensemble members; each row still sums to 1)."""
    layers = _attention_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no attention layer")
    weights = [layer.output[1] for layer in layers]
    output = weights[0] if len(weights) == 1 else keras.layers.Average(name="mean_attention")(weights)
    return keras.Model(model.inputs, output, name=f"{model.name}_attention")
