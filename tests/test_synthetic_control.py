"""The positive control (`synthetic`): fixed by its seed, count-like, and out of ridge's reach.

The benchmark scores every architecture between the negative control (`mean`) and this
dataset's oracle (its noiseless truth), so the truth must be the best prediction there is
and a linear model must fall clearly short of it. These checks take a few seconds; the
network side (an MLP beats ridge by far) is measured by scripts/check_positive_control.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.data.canonical import TRUTH_FILE, canonical_bytes, load_dataset, write_dataset
from benchmark.data.positive_control import (expected_log1p_poisson, nonlinear_log_rate, positive_control,
                                             positive_control_latents)


@pytest.fixture(scope="module")
def control():
    return positive_control()


def test_same_seed_same_bytes_other_seed_other_bytes(control):
    again = canonical_bytes(positive_control())
    assert canonical_bytes(control) == again
    assert set(again) == {"expression.npy", "genes.txt", "samples.txt", "provenance.json", TRUTH_FILE,
                          "programmes.json"}
    other = canonical_bytes(positive_control(seed=1))
    assert other["expression.npy"] != again["expression.npy"] and other[TRUTH_FILE] != again[TRUTH_FILE]


def test_the_latents_redraw_each_nonlinear_gene_and_belong_to_the_same_bytes(control):
    """`positive_control_latents` (what scripts/importance_ceiling.py builds its near-oracle
    from) gives the dataset itself and the programmes and parameters that drew it."""
    dataset, latents = positive_control_latents()
    assert canonical_bytes(dataset) == canonical_bytes(control)
    assert latents["Z"].shape == (2000, 12) and len(latents["nonlinear"]) == 60
    for gene, entry in latents["nonlinear"].items():
        column = control.genes.index(gene)
        assert control.programmes["genes"][gene]["pair"] == entry["pair"]
        redrawn = expected_log1p_poisson(nonlinear_log_rate(latents["Z"], entry)).astype(np.float32)
        np.testing.assert_allclose(redrawn, control.truth[:, column], rtol=0, atol=1e-6)


def test_shape_ids_and_values(control):
    assert control.shape == (2000, 500) and control.X.dtype == np.float32
    assert control.truth.shape == control.shape and control.truth.dtype == np.float32
    assert control.genes == [f"g{i:03d}" for i in range(1, 501)]
    assert control.samples == [f"c{i:04d}" for i in range(1, 2001)]
    # Values are log1p of whole counts: count noise, not Gaussian.
    counts = np.expm1(control.X.astype(np.float64))
    assert np.allclose(counts, np.round(counts), atol=1e-3 * np.maximum(counts, 1))


def test_truth_is_the_conditional_mean(control):
    # Over a million cells, value - truth averages to zero if truth = E[value | programmes].
    residual = control.X.astype(np.float64) - control.truth
    assert abs(residual.mean()) < 2e-3
    assert np.abs(residual.mean(axis=0)).max() < 0.05  # per gene, 2,000 samples each


def test_expected_log1p_poisson_matches_a_direct_sum():
    from scipy.stats import poisson

    rates = np.array([0.05, 0.7, 3.0, 40.0, 900.0])
    k = np.arange(2000)
    direct = np.array([(poisson.pmf(k, rate) * np.log1p(k)).sum() for rate in rates])
    assert np.allclose(expected_log1p_poisson(np.log(rates)), direct, rtol=0, atol=1e-7)
    with pytest.raises(ValueError):
        expected_log1p_poisson(np.array([9.0]))


def test_oracle_beats_ridge_clearly_on_the_top_variable_genes(control):
    from sklearn.linear_model import RidgeCV

    X, truth = control.X.astype(np.float64), control.truth.astype(np.float64)
    order = np.random.default_rng(0).permutation(len(X))
    train, test = order[:1600], order[1600:]
    targets = np.argsort(-X[train].var(axis=0), kind="stable")[:50]
    features = np.setdiff1d(np.arange(X.shape[1]), targets)
    mu, sd = X[train][:, features].mean(axis=0), X[train][:, features].std(axis=0)
    ridge = RidgeCV(alphas=np.logspace(0, 5, 11)).fit((X[train][:, features] - mu) / sd, X[train][:, targets])
    Y = X[test][:, targets]

    def rmse(pred):
        return float(np.sqrt(np.mean((pred - Y) ** 2)))

    def r2(pred):
        return float(np.mean(1 - ((pred - Y) ** 2).sum(axis=0) / ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)))

    oracle, linear = truth[test][:, targets], ridge.predict((X[test][:, features] - mu) / sd)
    assert rmse(linear) > 2.0 * rmse(oracle), (rmse(linear), rmse(oracle))
    assert r2(oracle) > 0.8 and r2(linear) < 0.4, (r2(oracle), r2(linear))
    # Ridge does better than the mean: the targets carry a linear part too.
    assert rmse(linear) < 0.95 * rmse(np.broadcast_to(X[train][:, targets].mean(axis=0), Y.shape))


def test_truth_round_trips_through_the_canonical_files(control, tmp_path):
    write_dataset(control, tmp_path / "synthetic")
    loaded = load_dataset(tmp_path / "synthetic")
    assert isinstance(loaded.truth, np.memmap) and np.array_equal(loaded.truth, control.truth)
    assert canonical_bytes(loaded) == canonical_bytes(control)


def test_programmes_record_what_each_gene_reads(control, tmp_path):
    genes = control.programmes["genes"]
    assert sorted(genes) == control.genes
    kinds = [entry["kind"] for entry in genes.values()]
    assert kinds.count("nonlinear") == 60 and kinds.count("readout") == 440
    assert all(2 <= len(genes[g]["programmes"]) <= 3 for g in genes if genes[g]["kind"] == "readout")
    # The record is the generator's: readouts on disjoint programmes are independent (their
    # noiseless truths uncorrelated), readouts sharing programmes correlate.
    readouts = [i for i, g in enumerate(control.genes) if genes[g]["kind"] == "readout"][:120]
    r = np.corrcoef(np.asarray(control.truth, dtype=np.float64)[:, readouts].T)
    reads = [set(genes[control.genes[i]]["programmes"]) for i in readouts]
    upper = np.triu_indices(len(readouts), 1)
    shared = np.array([bool(reads[a] & reads[b]) for a, b in zip(*upper)])
    assert np.abs(r[upper][~shared]).mean() < 0.03 < 0.2 < np.abs(r[upper][shared]).mean()
    # Written as programmes.json and read back unchanged.
    write_dataset(control, tmp_path / "synthetic")
    assert load_dataset(tmp_path / "synthetic").programmes == control.programmes


@pytest.fixture(scope="module")
def control_project(tmp_path_factory, control):
    """A project whose `synthetic` is the bundled control, prepared with params.yaml's split."""
    import shutil
    from pathlib import Path

    from benchmark.config import load_config
    from benchmark.data.prepare import prepare

    root = tmp_path_factory.mktemp("control")
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", root / "params.yaml")
    write_dataset(control, root / "data" / "synthetic")
    config = load_config(root / "params.yaml", root=root).for_dataset("synthetic")
    prepare(config)
    return config


@pytest.mark.parametrize("task", ["single", "multi"])
def test_the_near_oracle_sets_the_permutation_importance_ceiling(control_project, task):
    """The summary's `importance_ceiling`: a predictor that knows the generator's formula is
    nearly the oracle, and its permutation importance, scored as evaluate scores a model,
    ranks the genes sharing a programme with the target far above chance."""
    from benchmark.data.prepare import load_task
    from benchmark.report.importance import near_oracle_importance

    data = load_task(control_project, task, held_out=True)
    ceiling = near_oracle_importance(control_project, data)
    assert ceiling["targets"] == len(data.target_genes) == (1 if task == "single" else 50)
    stored = load_dataset(control_project.data_dir)
    rows = [stored.samples.index(s) for s in data.test_samples]
    truth = stored.truth[np.ix_(rows, [stored.genes.index(g) for g in data.target_genes])]
    oracle = float(np.sqrt(np.mean(np.square(truth - data.Y_test))))
    assert oracle < ceiling["rmse"] < 1.15 * oracle, (ceiling["rmse"], oracle)
    assert ceiling["permutation_auroc"] > 0.85, ceiling


def test_no_ceiling_for_values_that_are_not_the_controls(control_project):
    """Other values under the control's ids (here its held-out features log1p'd once more)
    get null, not a near-oracle that knows the formula of other values."""
    import dataclasses

    from benchmark.data.prepare import load_task
    from benchmark.report.importance import near_oracle_importance

    data = load_task(control_project, "single", held_out=True)
    assert near_oracle_importance(control_project, data) is not None
    shifted = dataclasses.replace(data, X_test=np.log1p(np.asarray(data.X_test)))
    assert near_oracle_importance(control_project, shifted) is None
