"""Gene tokens: the layer against hand-computed numbers, masking of padded tokens, the
token order fitted on the data (never the file's column order)."""

import keras
import numpy as np
import pytest

from benchmark.models.gene_tokens import GeneTokens
from benchmark.models.tokens import fit_token_assignment, max_module_size, token_members


def test_layer_against_hand_computed_numbers():
    # Three genes, x = [1, 2, 3]; genes 0 and 1 form token 0, gene 2 token 1, token 2 is padding.
    layer = GeneTokens(steps=3, units=2)
    layer.build((None, 3))
    E = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "float32")   # value embeddings
    B = np.array([[0.5, 0.0], [0.0, 0.5], [-1.0, 0.0]], "float32")  # gene embeddings
    layer.set_weights([E, B, np.array([0, 0, 1], "int32")])
    x = np.array([[1.0, 2.0, 3.0]], "float32")
    tokens, mask = (np.asarray(t) for t in layer(x))

    # token 0 = ((1*[1,0] + [0.5,0]) + (2*[0,1] + [0,0.5])) / sqrt(2) = [1.5, 2.5] / 1.414214
    np.testing.assert_allclose(tokens[0, 0], [1.06066, 1.767767], atol=1e-5)
    # token 1 = (3*[1,1] + [-1,0]) / sqrt(1) = [2, 3]
    np.testing.assert_allclose(tokens[0, 1], [2.0, 3.0], atol=1e-6)
    # token 2: no gene, all zeros and masked
    np.testing.assert_array_equal(tokens[0, 2], [0.0, 0.0])
    assert mask.tolist() == [[True, True, False]]


def test_weights_shapes_and_serialisation(tmp_path):
    layer = GeneTokens(steps=2, units=3, name="tokens")
    assert GeneTokens.from_config(layer.get_config()).get_config() == layer.get_config()
    features = keras.Input(shape=(5,))
    model = keras.Model(features, layer(features)[0])
    assert [tuple(w.shape) for w in layer.weights] == [(5, 3), (5, 3), (5,)]
    assert len(layer.trainable_weights) == 2
    assert np.asarray(layer.assignment).tolist() == [0, 0, 0, 1, 1]  # blocks of ceil(5 / 2)
    layer.assignment.assign(np.array([1, 0, 1, 0, 1], "int32"))
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert np.asarray(loaded.get_layer("tokens").assignment).tolist() == [1, 0, 1, 0, 1]


def _padded_attention_model():
    from benchmark.models.architectures import build_model, set_token_assignment

    hp = {"steps": 4, "token_units": 4, "units": 5, "layers": 1, "attention_units": 3, "dropout": 0.0,
          "learning_rate": 0.01}
    model = build_model("attention_lstm", hp, n_features=6, n_targets=2)
    # Tokens 0 and 2 hold genes; tokens 1 and 3 are padding.
    set_token_assignment(model, np.array([0, 2, 2, 0, 0, 2]))
    return model


def test_changing_padded_positions_changes_no_output():
    model = _padded_attention_model()
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    tokens_layer = model.get_layer("tokens")
    tokens, mask = tokens_layer(x)

    def read(tokens):  # the rest of the model, step by step, with the tokens' mask
        hidden = model.get_layer("recurrent_0")(tokens, mask=mask)
        context, weights = model.get_layer("attention")(hidden, mask=mask)
        return np.asarray(model.get_layer("targets")(context)), np.asarray(weights)

    out, weights = read(tokens)
    np.testing.assert_allclose(out, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(weights[:, [1, 3]], 0.0)

    garbage = np.asarray(tokens).copy()
    garbage[:, [1, 3]] = np.random.default_rng(2).normal(scale=10.0, size=(3, 2, 4))
    np.testing.assert_array_equal(read(garbage)[0], out)
    # Control: a real token's values do change the output.
    changed = np.asarray(tokens).copy()
    changed[:, 0] += 1.0
    assert not np.allclose(read(changed)[0], out)


def _modules_data(seed=0, n=200):
    """Three modules of 4 co-expressed genes each, plus noise."""
    rng = np.random.default_rng(seed)
    programs = rng.normal(size=(n, 3))
    X = np.repeat(programs, 4, axis=1) + 0.3 * rng.normal(size=(n, 12))
    return X


def test_modules_group_co_expressed_genes():
    X = _modules_data()
    perm = np.random.default_rng(3).permutation(12)
    assignment = fit_token_assignment(X[:, perm], steps=3)
    modules = {frozenset(perm[token_members(assignment, 3)[t]] // 4) for t in range(3)}
    # Every token holds exactly the genes of one program.
    assert modules == {frozenset({0}), frozenset({1}), frozenset({2})}


def test_modules_follow_the_data_not_the_column_order():
    X = np.random.default_rng(4).normal(size=(50, 9))
    X[:, 3] += X[:, 7]  # some structure
    perm = np.random.default_rng(5).permutation(9)
    original = fit_token_assignment(X, 4)
    permuted = fit_token_assignment(X[:, perm], 4)
    # The same genes share a token whatever columns they came in. (The sequence order breaks
    # ties by column, which prepare makes the gene-id order.)
    groups = lambda assignment, genes: {frozenset(genes[assignment == t]) for t in range(4)}  # noqa: E731
    assert groups(permuted, perm) == groups(original, np.arange(9))
    assert len(groups(original, np.arange(9))) == 4


def test_one_gene_per_token_and_pca_blocks():
    X = _modules_data()
    genes = fit_token_assignment(X, steps=3, mode="genes")
    assert sorted(genes.tolist()) == list(range(12))
    # Co-expressed genes are neighbours in the sequence.
    assert all(np.ptp(genes[m * 4:(m + 1) * 4]) == 3 for m in range(3))
    assert fit_token_assignment(X, steps=5, ordered=False).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    with pytest.raises(ValueError, match="tokens: expected one of modules, genes"):
        fit_token_assignment(X, 3, mode="blocks")


def test_no_module_exceeds_the_size_bound_where_a_plain_cut_of_the_tree_makes_one_blob():
    # Three tight modules of 6 genes among 120 genes that share only a weak common factor
    # (r ~ 0.2): average linkage chains those into one blob, so a plain cut into 8
    # clusters puts most genes in one (as it put 535 of pbmc68k's 715 genes in one).
    from scipy.cluster.hierarchy import fcluster

    from benchmark.models.tokens import _leaf_order

    rng = np.random.default_rng(6)
    programs, common = rng.normal(size=(300, 3)), rng.normal(size=(300, 1))
    X = np.hstack([np.repeat(programs, 6, axis=1) + 0.3 * rng.normal(size=(300, 18)),
                   0.5 * common + rng.normal(size=(300, 120))])
    n, steps = X.shape[1], 8
    bound = max_module_size(n, steps)
    assert bound == 35  # ceil(2 * 138 / 8): twice the mean module
    plain = np.bincount(fcluster(_leaf_order(X)[0], t=steps, criterion="maxclust"))
    assert plain.max() > 3 * bound  # the failure the bound is for

    assignment = fit_token_assignment(X, steps)
    sizes = np.bincount(assignment, minlength=steps)
    assert len(sizes) == steps and sizes.sum() == n and sizes.min() >= 1
    assert sizes.max() <= bound and sizes.max() <= 3 * np.median(sizes)
    # The co-expressed genes still share a token each, and no two programmes share one.
    tokens_of = [set(assignment[6 * p:6 * (p + 1)].tolist()) for p in range(3)]
    assert all(len(t) == 1 for t in tokens_of) and len(set.union(*tokens_of)) == 3
