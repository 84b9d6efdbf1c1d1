"""The additive attention layer, tested the way Keras tests its own attention layers."""

import keras
import numpy as np
import pytest

from benchmark.models.attention import AdditiveAttention


def test_output_shapes():
    layer = AdditiveAttention(units=5)
    context, weights = layer(np.random.default_rng(0).normal(size=(2, 7, 3)).astype("float32"))
    assert tuple(context.shape) == (2, 3)
    assert tuple(weights.shape) == (2, 7)
    np.testing.assert_allclose(np.asarray(weights).sum(axis=1), 1.0, rtol=1e-6)
    assert layer.compute_output_shape((None, 7, 3)) == [(None, 3), (None, 7)]


def test_weight_counts_and_shapes():
    layer = AdditiveAttention(units=5)
    layer.build((None, 7, 3))
    assert len(layer.trainable_weights) == 3
    assert len(layer.non_trainable_weights) == 0
    assert [tuple(w.shape) for w in layer.weights] == [(3, 5), (5,), (5,)]  # W, b, v


def test_symbolic_shapes_in_a_functional_model():
    hidden = keras.Input(shape=(4, 6))
    context, weights = AdditiveAttention(units=2)(hidden)
    assert tuple(context.shape) == (None, 6)
    assert tuple(weights.shape) == (None, 4)


def test_config_round_trip():
    layer = AdditiveAttention(units=9, name="pool")
    clone = AdditiveAttention.from_config(layer.get_config())
    assert clone.units == 9 and clone.name == "pool"
    # Registered under the package name the saved files refer to.
    assert keras.saving.get_registered_name(AdditiveAttention) == "genebench>AdditiveAttention"
    assert keras.saving.get_registered_object("genebench>AdditiveAttention") is AdditiveAttention


def test_keras_file_round_trip_gives_identical_outputs(tmp_path):
    inputs = keras.Input(shape=(5, 3))
    context, weights = AdditiveAttention(units=4, name="attention")(inputs)
    model = keras.Model(inputs, [context, weights])
    x = np.random.default_rng(1).normal(size=(3, 5, 3)).astype("float32")
    before = model.predict(x, verbose=0)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    after = loaded.predict(x, verbose=0)

    assert isinstance(loaded.get_layer("attention"), AdditiveAttention)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_correctness_against_hand_computed_numbers():
    # One sample, two steps of 2-dim hidden states: h_1 = [1, 0], h_2 = [0, 2].
    hidden = np.array([[[1.0, 0.0], [0.0, 2.0]]], dtype="float32")
    layer = AdditiveAttention(units=2)
    layer.build(hidden.shape)
    # W = identity, b = 0, v = [1, 1], so score_t = tanh(h_t1) + tanh(h_t2).
    layer.set_weights([np.eye(2, dtype="float32"), np.zeros(2, "float32"), np.ones(2, "float32")])
    context, weights = layer(hidden)

    # score_1 = tanh(1) + tanh(0) = 0.761594
    # score_2 = tanh(0) + tanh(2) = 0.964028
    # weight_1 = 1 / (1 + exp(0.964028 - 0.761594)) = 1 / (1 + 1.224377) = 0.449564
    # weight_2 = 1 - 0.449564 = 0.550436
    np.testing.assert_allclose(weights, [[0.449564, 0.550436]], atol=1e-5)
    # context = 0.449564 * [1, 0] + 0.550436 * [0, 2] = [0.449564, 1.100872]
    np.testing.assert_allclose(context, [[0.449564, 1.100872]], atol=1e-5)


def test_mask_gives_masked_steps_zero_weight():
    hidden = np.array([[[1.0, 0.0], [0.0, 2.0]]], dtype="float32")
    layer = AdditiveAttention(units=2)
    context, weights = layer(hidden, mask=np.array([[True, False]]))
    np.testing.assert_allclose(weights, [[1.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(context, [[1.0, 0.0]], atol=1e-6)


def test_rejects_input_that_is_not_a_sequence():
    with pytest.raises(ValueError, match="batch_size, steps, dim"):
        AdditiveAttention(units=2)(np.zeros((2, 3), dtype="float32"))
