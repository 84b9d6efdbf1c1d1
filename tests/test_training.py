"""The fit loop: leakage-free preprocessing, baselines vs deep models, determinism, saving."""

import subprocess
import sys
import textwrap

import numpy as np
import optuna
import pytest

from benchmark.config import parse_params
from benchmark.metrics import regression_metrics
from benchmark.training import fit_fold, load_regressor, make_regressor

DEEP_HP = {"layers": 1, "units": 16, "dropout": 0.0, "learning_rate": 0.01, "batch_size": 16,
           "steps": 4, "attention_units": 4}


def config(pca_components=None, **training):
    deep = ("dnn", "lstm", "gru", "attention_lstm", "attention_gru")
    return parse_params({
        "training": {"max_epochs": 3, "patience": 3, "batch_size": 16, "seed": 0, **training},
        "features": {"pca_components": pca_components},
        "models": {"ridge": {"defaults": {"alpha": 1.0}}, "knn": {"defaults": {"k": 5}},
                   **{arch: {"defaults": dict(DEEP_HP)} for arch in deep}},
    })


def linear_data(n=240, n_features=30, n_targets=4, rank=4, noise=0.05, seed=0):
    """Features and targets both linear in a few latent factors, plus a little noise."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, rank))
    X = Z @ rng.normal(size=(rank, n_features)) + noise * rng.normal(size=(n, n_features))
    Y = 5.0 + Z @ rng.normal(size=(rank, n_targets)) + noise * rng.normal(size=(n, n_targets))
    return X.astype(np.float32), Y.astype(np.float32)


def split(n, n_val, seed=0):
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def r2_on_fold(arch, X, Y, train, val, cfg, hp=None):
    _, pred = fit_fold(arch, hp, cfg, X, Y, train, val)
    return regression_metrics(Y[val], pred, Y[train].min(0), Y[train].max(0))["r2"]


def test_baselines_do_not_import_tensorflow():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import benchmark.training as training
        from benchmark.config import parse_params
        X = np.random.default_rng(0).normal(size=(20, 4)); Y = X[:, :2]
        for arch, hp in (("mean", {}), ("ridge", {"alpha": 1.0}), ("knn", {"k": 3})):
            training.make_regressor(arch, hp, parse_params({})).fit(X, Y).predict(X)
        import benchmark.metrics, benchmark.models
        print("tensorflow" in sys.modules, "keras" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_linear_structure_ridge_strong_mean_flat():
    X, Y = linear_data()
    train, val = split(len(X), 60)
    cfg = config(max_epochs=15, patience=5)
    assert r2_on_fold("ridge", X, Y, train, val, cfg) > 0.9
    assert r2_on_fold("mean", X, Y, train, val, cfg) <= 0.01


def test_a_trained_network_beats_its_own_base_where_the_signal_is_an_interaction():
    """Targets are products of feature pairs: ridge (the base) cannot carry them, so what the
    dnn predicts beyond its base must lower the error well below the base alone. With the
    network removed (its output is the base's) the two would be equal."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(800, 8)).astype(np.float32)
    Y = np.stack([X[:, 0] * X[:, 1], X[:, 2] * X[:, 3]], axis=1) + 0.1 * rng.normal(size=(800, 2))
    train, val = split(len(X), 200)
    hp = {"layers": 2, "units": 64, "dropout": 0.0, "learning_rate": 0.003}
    cfg = config(max_epochs=40, patience=8, batch_size=32, base="ridge")
    regressor = make_regressor("dnn", hp, cfg).fit(X[train], Y[train])
    rmse = lambda predicted: float(np.sqrt(np.mean((Y[val] - predicted) ** 2)))  # noqa: E731
    network, base = rmse(regressor.predict(X[val])), rmse(regressor.predict_base(X[val]))
    assert base > 0.9  # ridge explains almost nothing of a product of independent features
    assert network < 0.6 * base, (network, base)


@pytest.mark.parametrize("per_target", [False, True])
def test_ridge_baseline_is_ridgecv_on_the_same_grid(per_target):
    """The ridge baseline chooses its penalty as sklearn's RidgeCV does (efficient
    leave-one-out over the same grid): the same penalties, coefficients and predictions."""
    from sklearn.linear_model import RidgeCV

    from benchmark.models.baselines import RidgeBaseline
    from benchmark.models.ridge_loo import alpha_grid

    for n, p in ((40, 60), (80, 12)):  # wide (Gram matrix) and tall (covariance) solves
        X, Y = (a.astype(np.float64) for a in linear_data(n=n, n_features=p, n_targets=3, noise=0.8, seed=n))
        ours = RidgeBaseline(per_target=per_target).fit(X, Y)
        reference = RidgeCV(alphas=alpha_grid(1e-3, 1e7, 161), alpha_per_target=per_target).fit(X, Y)
        np.testing.assert_allclose(ours.alpha_, np.broadcast_to(reference.alpha_, (3,)), rtol=1e-12)
        np.testing.assert_allclose(ours.coef_, reference.coef_, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(ours.predict(X), reference.predict(X), rtol=1e-6, atol=1e-9)


def test_knn_chooses_k_and_weighting_by_leave_one_out():
    """k = None searches k = 1..k_max and both weightings: the choice has the lowest
    brute-force leave-one-out error of all of them (each sample predicted by the others)."""
    from sklearn.neighbors import KNeighborsRegressor

    from benchmark.models.baselines import KnnBaseline

    X, Y = (a.astype(np.float64) for a in linear_data(n=60, n_features=5, n_targets=2, noise=0.5))
    model = KnnBaseline(k=None, k_max=20).fit(X, Y)

    def loo(k, weights):
        errors = [KNeighborsRegressor(n_neighbors=k, weights=weights).fit(np.delete(X, i, 0), np.delete(Y, i, 0))
                  .predict(X[i:i + 1])[0] - Y[i] for i in range(len(X))]
        return float(np.mean(np.square(errors)))

    best = min((loo(k, w), k, w) for w in ("uniform", "distance") for k in range(1, 21))
    assert (model.k_, model.weights_) == (best[1], best[2])



@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_leave_one_out_predictions_are_each_sample_predicted_by_the_others(weights):
    """The stacked base's kNN out-of-fold predictions: each training sample predicted by a
    kNN fitted on all the other samples, with the fitted k and weighting."""
    from sklearn.neighbors import KNeighborsRegressor

    from benchmark.models.baselines import KnnBaseline, leave_one_out_predictions

    X, Y = (a.astype(np.float64) for a in linear_data(n=50, n_features=4, n_targets=3, noise=0.5))
    model = KnnBaseline(k=6, weights=weights).fit(X, Y)
    brute = np.array([KNeighborsRegressor(n_neighbors=6, weights=weights).fit(np.delete(X, i, 0), np.delete(Y, i, 0))
                      .predict(X[i:i + 1])[0] for i in range(len(X))])
    np.testing.assert_allclose(leave_one_out_predictions(model), brute, rtol=1e-10, atol=1e-12)


def test_knn_leave_one_out_predictions_with_a_chosen_k_reuse_the_search_that_chose_it():
    """With k chosen by leave-one-out, the out-of-fold predictions come from that search's
    neighbours (no second search) and are still each sample predicted by all the others."""
    from sklearn.neighbors import KNeighborsRegressor

    from benchmark.models.baselines import KnnBaseline, leave_one_out_predictions

    X, Y = (a.astype(np.float64) for a in linear_data(n=300, n_features=4, n_targets=3, noise=0.5))
    model = KnnBaseline(k_max=30).fit(X, Y)
    assert model.loo_search_[1].shape == (len(X), model.k_)
    brute = np.array([KNeighborsRegressor(n_neighbors=model.k_, weights=model.weights_)
                      .fit(np.delete(X, i, 0), np.delete(Y, i, 0)).predict(X[i:i + 1])[0] for i in range(len(X))])
    np.testing.assert_allclose(leave_one_out_predictions(model), brute, rtol=1e-10, atol=1e-12)
    assert model.loo_search_ is None  # handed over, not kept with the model
    np.testing.assert_allclose(leave_one_out_predictions(model), brute, rtol=1e-10, atol=1e-12)  # searched again

@pytest.mark.parametrize("arch", ["mean", "ridge", "knn", "dnn"])
def test_nothing_is_fitted_on_rows_outside_the_training_part(arch):
    X, Y = linear_data(n=80)
    train, val = split(len(X), 20)
    # Two versions of the data that differ only in the validation rows, one with huge
    # outliers there: anything fitted on them would change.
    X_out, Y_out = X.copy(), Y.copy()
    X_out[val] = 1e4 + 1e3 * np.arange(len(val))[:, None]
    Y_out[val] = -1e4
    probe = np.random.default_rng(5).normal(size=(6, X.shape[1])).astype(np.float32)

    runs = []
    for X_, Y_ in ((X, Y), (X_out, Y_out)):
        losses = []
        regressor, _ = fit_fold(arch, None, config(), X_, Y_, train, val,
                                epoch_callback=lambda epoch, loss: losses.append(loss))
        runs.append((regressor, losses))
        pre = regressor.preprocessor
        np.testing.assert_allclose(pre.x_mean_, X[train].astype(np.float64).mean(0), rtol=1e-6)
        np.testing.assert_allclose(pre.y_mean_, Y[train].astype(np.float64).mean(0), rtol=1e-6)
        np.testing.assert_allclose(pre.y_scale_, Y[train].astype(np.float64).std(0), rtol=1e-6)

    (first, losses_a), (second, losses_b) = runs
    np.testing.assert_array_equal(first.predict(probe), second.predict(probe))
    # The early-stopping set is carved from the training rows: its losses are unchanged.
    assert losses_a == losses_b
    if arch == "dnn":
        assert len(losses_a) == 3


def test_fold_with_overlapping_rows_is_refused():
    X, Y = linear_data(n=20)
    with pytest.raises(ValueError, match="both the training and the validation"):
        fit_fold("ridge", None, config(), X, Y, np.arange(12), np.arange(10, 20))


def test_same_parameters_give_identical_predictions_on_rerun():
    X, Y = linear_data(n=40, n_features=8, n_targets=2)
    cfg = config(max_epochs=2)
    hp = {"dropout": 0.2}  # dropout draws random numbers too
    # A recurrent model: its own initializers and dropout both draw from the seeds.
    first = make_regressor("gru", hp, cfg).fit(X, Y).predict(X)
    second = make_regressor("gru", hp, cfg).fit(X, Y).predict(X)
    np.testing.assert_array_equal(first, second)


def test_refitting_one_regressor_matches_a_new_one_per_fold():
    """evaluate refits one Regressor on every fold and then on all rows: each fit must
    start from the state a new model would have, whatever was fitted before it."""
    X, Y = linear_data(n=60, n_features=8, n_targets=2)
    cfg = config(max_epochs=2)
    hp = {"dropout": 0.2}
    parts = [np.arange(0, 40), np.arange(20, 60), np.arange(60)]
    reused = make_regressor("attention_gru", hp, cfg)
    for rows in parts:
        fresh = make_regressor("attention_gru", hp, cfg).fit(X[rows], Y[rows]).predict(X)
        np.testing.assert_array_equal(reused.fit(X[rows], Y[rows]).predict(X), fresh)
    # The same Regressor on other shapes builds a new model instead of reusing the old one.
    assert reused.fit(X[:, :6], Y).predict(X[:, :6]).shape == (60, 2)
    assert reused.fit(X, Y[:, 0]).predict(X).shape == (60, 1)


def test_epoch_callback_exception_propagates_unchanged():
    X, Y = linear_data(n=40, n_features=8, n_targets=2)

    def prune_at_second_epoch(epoch, val_rmse):
        if epoch == 1:
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 1"):
        make_regressor("dnn", None, config()).fit(X, Y, epoch_callback=prune_at_second_epoch)


@pytest.mark.parametrize("arch", ["mean", "ridge", "knn"])
def test_baseline_save_load_round_trip_without_pickle(arch, tmp_path):
    X, Y = linear_data(n=50)
    regressor = make_regressor(arch, None, config(pca_components=3)).fit(X, Y)
    regressor.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz", "state.json"]
    with np.load(tmp_path / "arrays.npz", allow_pickle=False) as arrays:
        assert "preprocessing/pca_components" in arrays.files
    loaded = load_regressor(tmp_path)
    np.testing.assert_allclose(loaded.predict(X), regressor.predict(X), rtol=1e-12)
    assert loaded.attention(X) is None


def test_pca_components_clipped_to_training_rows_and_knn_k_to_training_size():
    X, Y = linear_data(n=12, n_features=30)
    regressor = make_regressor("knn", {"k": 50, "components": 0}, config(pca_components=40)).fit(X, Y)
    assert regressor.preprocessor.n_features_out == 12
    assert regressor.model.k_ == 12
    np.testing.assert_allclose(regressor.predict(X[:3]), np.tile(Y.astype(np.float64).mean(0), (3, 1)), rtol=1e-5)


def test_tuned_params_overlay_defaults():
    regressor = make_regressor("ridge", {"alpha": np.float64(3.5)}, config())
    assert regressor.hp == {"alpha": 3.5} and type(regressor.hp["alpha"]) is float
    assert make_regressor("dnn", {"units": 4}, config()).hp == {**DEEP_HP, "units": 4}


def test_unknown_baseline_hyperparameter_is_named():
    cfg = parse_params({"models": {"ridge": {"defaults": {"lambda": 1.0}}}})
    X, Y = linear_data(n=20)
    with pytest.raises(ValueError, match="models.ridge: 'lambda' is not a hyperparameter of ridge"):
        make_regressor("ridge", None, cfg).fit(X, Y)


def test_epoch_callback_gets_rmse_in_the_targets_units():
    # The same data with targets in units 1000 times larger: standardised training is
    # identical, so the early-stopping RMSE the callback gets is 1000 times larger.
    X, Y = linear_data(n=60, n_features=8, n_targets=2)
    curves = []
    for scale in (1.0, 1000.0):
        curve = []
        make_regressor("dnn", None, config(max_epochs=3)).fit(X, Y * scale, epoch_callback=lambda e, v: curve.append(v))
        curves.append(np.array(curve))
    assert len(curves[0]) == 3 and (curves[0] > 0).all()
    np.testing.assert_allclose(curves[1], 1000.0 * curves[0], rtol=1e-4)


@pytest.mark.parametrize("n_features", [60, 12])  # more features than rows, and fewer
def test_ridge_base_predictions_are_out_of_fold(n_features):
    from benchmark.models.baselines import RidgeBaseline
    from benchmark.models.residual import fit_ridge_base

    X, Y = (a.astype(np.float64) for a in linear_data(n=50, n_features=n_features, n_targets=3, noise=0.5))
    base, oof = fit_ridge_base(X, Y, seed=0)
    # Each training row's base prediction is that of a ridge fitted without the row (brute
    # force here), and the base itself is ridge on all rows, at the penalty it chose.
    for row in (0, 7, 49):
        others = np.delete(np.arange(50), row)
        alone = RidgeBaseline(base.alpha_).fit(X[others], Y[others]).predict(X[row:row + 1])[0]
        np.testing.assert_allclose(oof[row], alone, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(base.predict(X), RidgeBaseline(base.alpha_).fit(X, Y).predict(X), rtol=1e-6, atol=1e-8)
    assert not np.allclose(oof, base.predict(X), rtol=1e-3)
    # Each target's penalty is the grid's best by leave-one-out error: a penalty a grid step
    # either side (brute-force leave-one-out) errs no less.
    step = 10 ** (1 / 16)
    for factor in (1 / step, step):
        loo = np.array([RidgeBaseline(base.alpha_ * factor).fit(X[np.delete(np.arange(50), i)], Y[np.delete(np.arange(50), i)])
                        .predict(X[i:i + 1])[0] for i in range(50)])
        assert (np.mean((loo - Y) ** 2, axis=0) >= np.mean((oof - Y) ** 2, axis=0) - 1e-9).all()


@pytest.mark.parametrize("base", ["none", "ridge"])
def test_deep_model_on_a_ridge_base_predicts_base_plus_network(base):
    X, Y = linear_data(n=80, n_features=10, n_targets=3)
    regressor = make_regressor("dnn", None, config(base=base)).fit(X, Y)
    Xs = regressor.preprocessor.transform_X(X[:5])
    network = regressor.model.predict(Xs, verbose=0).astype(np.float64)
    if base == "none":
        assert regressor.base is None
        expected = network
    else:
        expected = network + regressor.base.predict(Xs)
    np.testing.assert_allclose(regressor.predict(X[:5]), regressor.preprocessor.inverse_Y(expected), rtol=1e-5)


def test_ensemble_averages_its_members_and_round_trips(tmp_path):
    X, Y = linear_data(n=60, n_features=8, n_targets=2)
    cfg = config(max_epochs=2, ensemble=3)
    regressor = make_regressor("attention_lstm", None, cfg).fit(X, Y)
    Xs = regressor.preprocessor.transform_X(X[:6])
    members = regressor.model.predict(Xs, verbose=0).reshape(6, 3, 2).astype(np.float64)
    assert not np.allclose(members[:, 0], members[:, 1])
    expected = regressor.preprocessor.inverse_Y(members.mean(axis=1) + regressor.base.predict(Xs))
    np.testing.assert_allclose(regressor.predict(X[:6]), expected, rtol=1e-5)
    # The same seed gives the same ensemble; the saved one predicts and attends the same.
    np.testing.assert_array_equal(make_regressor("attention_lstm", None, cfg).fit(X, Y).predict(X), regressor.predict(X))
    regressor.save(tmp_path)
    loaded = load_regressor(tmp_path)
    np.testing.assert_array_equal(loaded.predict(X), regressor.predict(X))
    np.testing.assert_array_equal(loaded.attention(X), regressor.attention(X))
    np.testing.assert_allclose(regressor.attention(X).sum(axis=1), 1.0, rtol=1e-5)


def test_the_stacked_base_blends_ridge_and_knn_by_their_out_of_fold_predictions():
    """Per target, w * ridge + (1 - w) * kNN with w the least-squares weight (clipped to [0, 1])
    of their out-of-fold predictions: a linear target leans on ridge, a target that only a
    neighbourhood model can read (the sign pattern of two features) leans on kNN."""
    from sklearn.neighbors import KNeighborsRegressor

    from benchmark.models.residual import fit_ridge_base, fit_stacked_base

    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 6))
    Y = np.stack([X[:, 0] - 0.5 * X[:, 1], np.sign(X[:, 2] * X[:, 3])], axis=1) + 0.1 * rng.normal(size=(300, 2))
    base, oof = fit_stacked_base(X, Y, seed=0)
    ridge, ridge_oof = fit_ridge_base(X, Y, seed=0)
    knn = base.knn
    assert knn.pca_components_.shape == (6, 6)  # KNN_COMPONENTS (10) clipped to the 6 features
    # kNN's out-of-fold predictions are leave-one-out: the row's neighbours among the others.
    knn_oof = np.empty_like(Y)
    for i in range(len(X)):
        others = np.delete(np.arange(len(X)), i)
        fitted = KNeighborsRegressor(n_neighbors=knn.k_, weights=knn.weights_).fit(knn.X_[others], Y[others])
        knn_oof[i] = fitted.predict(knn.X_[i:i + 1])[0]
    gap = ridge_oof - knn_oof
    weight = np.clip(((Y - knn_oof) * gap).sum(0) / (gap * gap).sum(0), 0, 1)
    np.testing.assert_allclose(base.weight, weight, rtol=1e-6)
    np.testing.assert_allclose(oof, weight * ridge_oof + (1 - weight) * knn_oof, rtol=1e-6)
    assert base.weight[0] > 0.9 and base.weight[1] < 0.3, base.weight
    Xt = rng.normal(size=(20, 6))
    np.testing.assert_allclose(base.predict(Xt), weight * ridge.predict(Xt) + (1 - weight) * knn.predict(Xt),
                               rtol=1e-6)


def test_a_deep_model_on_the_stacked_base_saves_loads_and_scores_its_base(tmp_path):
    X, Y = linear_data(n=160)
    train, val = split(len(X), 40)
    regressor = make_regressor("dnn", None, config(base="stack")).fit(X[train], Y[train])
    from benchmark.models.residual import StackedBase

    assert isinstance(regressor.base, StackedBase)
    regressor.save(tmp_path)
    loaded = load_regressor(tmp_path)
    np.testing.assert_array_equal(loaded.predict(X[val]), regressor.predict(X[val]))
    np.testing.assert_array_equal(loaded.predict_base(X[val]), regressor.predict_base(X[val]))
    np.testing.assert_array_equal(loaded.base.weight, regressor.base.weight)


def test_a_second_fit_on_the_same_rows_takes_its_base_and_tokens_from_the_cache_and_predicts_the_same():
    """Every trial of a study refits on the same tuning fold: the base (ridge + kNN) and the
    tokens' gene tree are fitted once, and a cached fit predicts exactly as a fresh one."""
    from benchmark.models.fit_cache import FIT_CACHE

    X, Y = linear_data(n=60, n_features=8, n_targets=2)
    cfg = config(max_epochs=2, base="stack")
    FIT_CACHE.clear()
    fresh = make_regressor("attention_lstm", None, cfg).fit(X, Y).predict(X)
    fitted = FIT_CACHE.misses
    assert fitted == 2  # the base and the gene tree
    cached = make_regressor("attention_lstm", {"steps": 3}, cfg).fit(X, Y)  # another trial's tokens
    assert (FIT_CACHE.misses, FIT_CACHE.hits) == (fitted, 2)
    again = make_regressor("attention_lstm", None, cfg).fit(X, Y).predict(X)
    np.testing.assert_array_equal(again, fresh)
    assert cached.predict(X).shape == fresh.shape
    # Other rows (the next fold) are fitted anew, and a fit never sees another's cached arrays.
    make_regressor("attention_lstm", None, cfg).fit(X[:50], Y[:50])
    assert FIT_CACHE.misses == fitted + 2


@pytest.mark.parametrize("n", [40, 120])  # wide (n <= p) and tall
def test_ridge_loo_in_place_gives_the_same_fit_as_on_a_copy(n):
    """`overwrite_x` (the streamed penalty sample's memory saving) changes memory, not the fit."""
    from benchmark.models.ridge_loo import DEFAULT_GRID, alpha_grid, fit_ridge_loo

    X, Y = (a.astype(np.float64) for a in linear_data(n=n, n_features=60, n_targets=3, noise=0.5))
    expected = fit_ridge_loo(X, Y, alpha_grid(*DEFAULT_GRID), per_target=True)
    fit = fit_ridge_loo(X.copy(), Y, alpha_grid(*DEFAULT_GRID), per_target=True, overwrite_x=True)
    np.testing.assert_array_equal(fit.alpha, expected.alpha)
    for name in ("coef", "intercept", "loo"):
        np.testing.assert_allclose(getattr(fit, name), getattr(expected, name), rtol=1e-9, atol=1e-12)


def test_a_streamed_refit_drops_the_previous_network_and_gives_a_new_ones_bits():
    """evaluate refits one Regressor per CV fold. On a streamed matrix each fit lets go of
    the previous fit's network before its base's X'X is made (at 10,413 genes the two
    together broke a 2 GiB limit): the old Keras model is collected, and the refit still
    predicts what a new Regressor fitted on the same rows predicts, bit for bit."""
    import gc
    import weakref

    from benchmark.data.rows import RowView

    X, Y = linear_data(n=90, n_features=12, n_targets=2)
    view = RowView(X, rows=np.arange(90))
    cfg = config(max_epochs=2)
    reused = make_regressor("dnn", {"dropout": 0.2}, cfg)
    reused.fit(view[np.arange(0, 60)], Y[:60])
    old = weakref.ref(reused.model)
    refit = reused.fit(view[np.arange(30, 90)], Y[30:]).predict(view)
    gc.collect()
    assert old() is None
    fresh = make_regressor("dnn", {"dropout": 0.2}, cfg).fit(view[np.arange(30, 90)], Y[30:]).predict(view)
    np.testing.assert_array_equal(refit, fresh)
