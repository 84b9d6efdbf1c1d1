"""Every deep architecture builds, trains, predicts and survives a save/load round trip."""

import numpy as np
import pytest

from benchmark import DEEP_ARCHS
from benchmark.config import parse_params
from benchmark.training import load_regressor, make_regressor

TINY_HP = {"layers": 1, "units": 8, "dropout": 0.1, "learning_rate": 0.01, "batch_size": 16,
           "steps": 4, "attention_units": 4}


def tiny_config(**training):
    return parse_params({
        "training": {"max_epochs": 2, "patience": 2, "batch_size": 16, "seed": 0, **training},
        "models": {arch: {"defaults": {k: v for k, v in TINY_HP.items()
                                       if arch != "dnn" or k not in ("steps", "attention_units")}}
                   for arch in DEEP_ARCHS},
    })


def tiny_data(n=40, n_features=10, n_targets=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    Y = (X[:, :n_targets] * 2 + 1 + 0.1 * rng.normal(size=(n, n_targets))).astype(np.float32)
    return X, Y


@pytest.mark.parametrize("arch", DEEP_ARCHS)
def test_deep_arch_trains_predicts_and_round_trips(arch, tmp_path):
    # 10 features summed into 4 tokens (modules fitted on the training rows).
    X, Y = tiny_data()
    calls = []
    regressor = make_regressor(arch, {}, tiny_config()).fit(X, Y, epoch_callback=lambda e, loss: calls.append((e, loss)))
    assert regressor.epochs_trained == 2
    assert [epoch for epoch, _ in calls] == [0, 1]
    assert all(np.isfinite(loss) for _, loss in calls)

    pred = regressor.predict(X[:7])
    assert pred.shape == (7, 3)
    assert np.isfinite(pred).all()

    regressor.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["arrays.npz", "model.keras", "state.json"]
    loaded = load_regressor(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict(X[:7]), pred)
    assert loaded.epochs_trained == 2

    weights = regressor.attention(X[:7])
    if arch.startswith("attention_"):
        assert weights.shape == (7, 4)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(loaded.attention(X[:7]), weights)
    else:
        assert weights is None
    if arch == "dnn":
        assert regressor.tokens is None
    else:
        # Every feature is in exactly one of the 4 tokens, and the saved model keeps them.
        assert len(regressor.tokens) == 4
        assert sorted(np.concatenate(regressor.tokens).tolist()) == list(range(10))
        assert [t.tolist() for t in loaded.tokens] == [t.tolist() for t in regressor.tokens]


@pytest.mark.parametrize("n_features,steps,mode,length", [(12, 4, "modules", 4), (5, 8, "modules", 5),
                                                         (6, 2, "genes", 6)])
def test_sequence_length(n_features, steps, mode, length):
    from benchmark.models.architectures import build_model

    hp = {**TINY_HP, "steps": steps, "tokens": mode}
    model = build_model("attention_lstm", hp, n_features, 2)
    assert tuple(model.get_layer("tokens").output[0].shape) == (None, length, 16)  # token_units' default
    assert model.predict(np.ones((3, n_features), np.float32), verbose=0).shape == (3, 2)


@pytest.mark.parametrize("arch", ["dnn", "attention_gru"])
def test_ensemble_members_side_by_side_and_a_zero_start(arch):
    from benchmark.models.architectures import attention_model, build_model

    hp = {**TINY_HP, "linear": True, "linear_l2": 0.01, "activation": "gelu"}
    model = build_model(arch, hp, 10, 3, members=3, zero_init=True)
    x = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
    # Three members' predictions side by side, all zero before training (a ridge base's start).
    np.testing.assert_array_equal(model.predict(x, verbose=0), np.zeros((4, 9)))
    members = build_model(arch, hp, 10, 3, members=3)
    out = members.predict(x, verbose=0).reshape(4, 3, 3)
    assert not np.allclose(out[:, 0], out[:, 1])  # each member has its own initial weights
    if arch == "attention_gru":
        weights = attention_model(members).predict(x, verbose=0)
        assert weights.shape == (4, 4)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    else:
        assert members.get_layer("m2_linear").kernel.shape == (10, 3)
        assert members.get_layer("m0_dense_0").activation.__name__ == "gelu"


def test_missing_hyperparameter_is_named():
    from benchmark.models.architectures import build_model

    with pytest.raises(ValueError, match="'steps'"):
        build_model("lstm", {"units": 4, "layers": 1, "dropout": 0.0, "learning_rate": 0.01}, 6, 1)


@pytest.mark.parametrize("arch", ["lstm", "attention_lstm"])
def test_a_head_sits_between_the_pooled_state_and_the_targets(arch):
    from benchmark.models.architectures import build_model

    plain = build_model(arch, TINY_HP, 10, 3)
    assert "head" not in [layer.name for layer in plain.layers]
    assert plain.get_layer("targets").kernel.shape == (8, 3)  # reads the 8 recurrent units

    headed = build_model(arch, {**TINY_HP, "head_units": 12, "activation": "tanh"}, 10, 3)
    head = headed.get_layer("head")
    assert head.kernel.shape == (8, 12) and head.activation.__name__ == "tanh"
    assert headed.get_layer("targets").kernel.shape == (12, 3)
    assert headed.count_params() == plain.count_params() + 8 * 12 + 12 + (12 - 8) * 3
    x = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
    assert headed.predict(x, verbose=0).shape == (4, 3)
