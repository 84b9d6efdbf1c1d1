"""Additive (Bahdanau) attention pooling over recurrent hidden states."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import ops  # noqa: E402


@keras.saving.register_keras_serializable(package="genebench")
class AdditiveAttention(keras.layers.Layer):
    """Additive attention pooling, a.k.a. Bahdanau-style attention, over time steps.

    Scores each step of a sequence of hidden states with a small learned network and
    returns the score-weighted sum of the states. Unlike `keras.layers.AdditiveAttention`
    there is no query: the learned vector `v` plays its part, so the layer pools a
    sequence into one vector and says how much each step (token) contributed.

    The calculation follows the steps:
    1. Score each step: `score_t = v . tanh(h_t W + b)`, shape `(batch_size, steps)`.
    2. Weights: softmax of the scores over steps (masked steps get weight 0), shape
        `(batch_size, steps)`; each row sums to 1.
    3. Context: `sum_t weights_t * h_t`, shape `(batch_size, dim)`.

    Args:
        units: Width of the scoring network (the columns of `W`).
        kernel_initializer: Initializer for `W` and `v`. Defaults to `"glorot_uniform"`.
        bias_initializer: Initializer for `b`. Defaults to `"zeros"`.

    Call arguments:
        inputs: Hidden states of shape `(batch_size, steps, dim)`.
        mask: Optional boolean tensor of shape `(batch_size, steps)`; steps where it is
            `False` receive zero weight. At least one step per row must be unmasked.

    Output:
        A list `[context, weights]`: the context vector of shape `(batch_size, dim)` and
        the attention weights of shape `(batch_size, steps)`.

    Weights: `W` of shape `(dim, units)`, `b` of shape `(units,)`, `v` of shape
    `(units,)`, all trainable.
    """

    def __init__(
        self,
        units,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(units) < 1:
            raise ValueError(f"units: expected a positive integer, got {units}")
        self.units = int(units)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                "AdditiveAttention expects hidden states of shape (batch_size, steps, dim), "
                f"got {input_shape}"
            )
        dim = input_shape[-1]
        self.W = self.add_weight(
            name="W", shape=(dim, self.units), initializer=self.kernel_initializer, trainable=True
        )
        self.b = self.add_weight(
            name="b", shape=(self.units,), initializer=self.bias_initializer, trainable=True
        )
        self.v = self.add_weight(
            name="v", shape=(self.units,), initializer=self.kernel_initializer, trainable=True
        )

    def call(self, inputs, mask=None):
        # (batch, steps, dim) @ (dim, units) -> (batch, steps, units) -> . v -> (batch, steps)
        scores = ops.matmul(ops.tanh(ops.matmul(inputs, self.W) + self.b), self.v)
        if mask is not None:
            # A large negative score (not -inf) keeps the softmax finite; it underflows to 0.
            scores = ops.where(ops.cast(mask, "bool"), scores, ops.full_like(scores, -1e9))
        weights = ops.softmax(scores, axis=-1)
        context = ops.sum(ops.expand_dims(weights, -1) * inputs, axis=1)
        return [context, weights]

    def compute_mask(self, inputs, mask=None):
        # Both outputs have lost the steps they were masked along.
        return [None, None]

    def compute_output_shape(self, input_shape):
        batch_size, steps, dim = input_shape
        return [(batch_size, dim), (batch_size, steps)]

    def get_config(self):
        base_config = super().get_config()
        config = {
            "units": self.units,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
        return {**base_config, **config}
