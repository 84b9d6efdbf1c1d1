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
    # 10 features in 4 steps: tokens of 3 values, the last padded with 2 zeros.
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
        assert [t.tolist() for t in regressor.tokens] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    else:
        assert weights is None


@pytest.mark.parametrize("n_features,steps,width", [(12, 4, 3), (10, 4, 3), (5, 8, 1)])
def test_sequence_tokens_padding(n_features, steps, width):
    from benchmark.models.architectures import build_model

    hp = {**TINY_HP, "steps": steps}
    model = build_model("attention_lstm", hp, n_features, 2)
    assert tuple(model.get_layer("tokens").output.shape) == (None, min(steps, n_features), width)
    assert model.predict(np.ones((3, n_features), np.float32), verbose=0).shape == (3, 2)


def test_missing_hyperparameter_is_named():
    from benchmark.models.architectures import build_model

    with pytest.raises(ValueError, match="'steps'"):
        build_model("lstm", {"units": 4, "layers": 1, "dropout": 0.0, "learning_rate": 0.01}, 6, 1)
