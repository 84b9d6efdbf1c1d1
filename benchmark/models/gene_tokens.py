"""Gene tokens: the feature vector read as a sequence of gene-module tokens, padding masked."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import ops  # noqa: E402


@keras.saving.register_keras_serializable(package="genebench")
class GeneTokens(keras.layers.Layer):
    """Embeds each gene and sums the genes of a token: `(batch, n_features) -> (batch, steps, units)`
    tokens and their `(batch, steps)` mask.

    Every gene g has two learned vectors of length `units`: a value embedding `E_g`
    (scaled by the gene's expression x_g) and a gene embedding `B_g` (its identity, present
    whatever its value). Token t sums the genes assigned to it, normalised by its size m_t:

        token_t = sum_{g in t} (x_g * E_g + B_g) / sqrt(max(m_t, 1))

    The assignment of genes to tokens (`assignment`, a non-trainable int32 weight of shape
    `(n_features,)`, fitted outside the model on each fold's training part, see
    `benchmark.models.tokens`) decides which genes share a token and the token order; one
    gene per token gives a sequence of embedded genes. A token no gene is assigned to is
    padding: the mask is False there; passed on as `mask=` it makes recurrent layers skip
    it and attention give it weight 0. (The mask is an output rather than a Keras implicit
    mask: a functional model would keep the implicit mask it computed when it was built,
    from the initial assignment, not the fitted one.)

    Args:
        steps: Sequence length (tokens, padding included).
        units: Embedding width.
        embeddings_initializer: Initializer for `E`. Defaults to `RandomNormal(stddev=0.3)`.

    Output: a list `[tokens, mask]`, `(batch_size, steps, units)` and `(batch_size, steps)` bool.

    Weights: `value_embedding` `(n_features, units)`, `gene_embedding` `(n_features, units)`
    (initialised to zeros), both trainable; `assignment` `(n_features,)`, not trainable,
    initialised to contiguous blocks of `ceil(n_features / steps)` genes.
    """

    def __init__(self, steps, units, embeddings_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if int(steps) < 1 or int(units) < 1:
            raise ValueError(f"steps and units: expected positive integers, got {steps} and {units}")
        self.steps = int(steps)
        self.units = int(units)
        # Small: a token of standardised genes starts with entries of variance about 0.09 (the
        # sum over m genes is divided by sqrt(m)), so the fit grows the embeddings of the genes
        # it reads rather than starting from a random projection of all of them at full scale.
        # Measured at params.yaml's defaults, no tuning (results/importance.md, 2026-12-07):
        # stddev 1 -> 0.3 took attention_lstm's held-out RMSE on `synthetic` from 0.4831 to
        # 0.4642 (single, seed 42) and 0.4532/0.4572 to 0.4325/0.4307 (top 50, seeds 41/43);
        # 0.1 went further (0.4253 top 50, seed 42, against 0.4564 from a patched copy) but
        # flattened the attention of the planted test's model at one training seed of nine,
        # where 0.3 and 1 point at the planted genes at nine of nine.
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer or keras.initializers.RandomNormal(stddev=0.3))

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"GeneTokens expects features of shape (batch_size, n_features), got {input_shape}")
        n_features = int(input_shape[-1])
        if n_features < self.steps:
            raise ValueError(f"GeneTokens: {self.steps} steps need at least as many features, got {n_features}")
        self.value_embedding = self.add_weight(name="value_embedding", shape=(n_features, self.units),
                                               initializer=self.embeddings_initializer, trainable=True)
        self.gene_embedding = self.add_weight(name="gene_embedding", shape=(n_features, self.units),
                                              initializer="zeros", trainable=True)
        width = -(-n_features // self.steps)
        self.assignment = self.add_weight(
            name="assignment", shape=(n_features,), dtype="int32", trainable=False,
            initializer=lambda shape, dtype=None: ops.cast(ops.arange(shape[0]) // width, "int32"),
        )

    def _sizes(self):
        return ops.segment_sum(ops.ones_like(self.assignment, dtype=self.compute_dtype), self.assignment,
                               num_segments=self.steps)

    def call(self, inputs):
        # (batch, genes, 1) * (genes, units) -> (batch, genes, units); then per token a sum
        # over its genes (segment_sum runs along the first axis, so genes go first).
        embedded = ops.expand_dims(inputs, -1) * self.value_embedding + self.gene_embedding
        summed = ops.segment_sum(ops.transpose(embedded, (1, 0, 2)), self.assignment, num_segments=self.steps)
        sizes = self._sizes()
        scale = ops.sqrt(ops.maximum(sizes, 1.0))
        tokens = ops.transpose(summed, (1, 0, 2)) / ops.reshape(scale, (1, self.steps, 1))
        # (1, steps) and (batch, 1) broadcast to (batch, steps) whether or not batch is known.
        mask = ops.logical_and(ops.expand_dims(sizes > 0, 0), ops.ones_like(inputs[:, :1], dtype="bool"))
        return [tokens, mask]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], self.steps, self.units), (input_shape[0], self.steps)]

    def get_config(self):
        return {**super().get_config(), "steps": self.steps, "units": self.units,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer)}
