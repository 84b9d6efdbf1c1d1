"""The prepare stage's protocol invariants, on a small synthetic dataset."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from benchmark import TASKS
from benchmark.data.canonical import Dataset, write_dataset
from benchmark.data.prepare import load_task, prepare
from benchmark.data.synthetic import make_synthetic
from benchmark.errors import UserError
from conftest import tree_digest

N_SAMPLES, N_GENES = 60, 20
PARAMS = {"task": {"top_k": 3}, "split": {"folds": 4, "test_size": 0.25, "seed": 5}, "tuning": {"folds": 2}}


@pytest.fixture
def prepared_project(project):
    project.set_params(PARAMS)
    ds, _ = make_synthetic(N_SAMPLES, N_GENES, seed=4)
    write_dataset(ds, project.data_dir)
    return project


def _read(project, name: str) -> dict:
    return json.loads((project.root / "artifacts" / "prepared" / "toy" / name).read_text())


def test_test_and_dev_are_disjoint_and_cover_every_sample(prepared_project):
    prepare(prepared_project.config())
    split = _read(prepared_project, "split.json")
    dev, test = set(split["dev"]), set(split["test"])
    assert not dev & test
    assert dev | test == set(range(N_SAMPLES))
    assert len(test) == math.ceil(0.25 * N_SAMPLES)
    summary = _read(prepared_project, "summary.json")
    assert (summary["n_dev"], summary["n_test"]) == (len(dev), len(test))


@pytest.mark.parametrize("repeats", [1, 3])
def test_folds_partition_the_development_samples(prepared_project, repeats):
    """Tuning's folds and, in every repeat, the scored folds over the rest: no scored fold
    holds a sample tuning validated on, every other development sample is scored once a
    repeat, and each repeat is its own shuffle."""
    prepared_project.set_params({"split": {"repeats": repeats}})
    prepare(prepared_project.config())
    split = _read(prepared_project, "split.json")
    folds = [set(f) for f in split["folds"]]
    assert split["tuning_folds"] == [0, 1]  # tuning.folds: 2 of split.folds: 4
    assert split["scored_folds"] == list(range(2, 2 + 2 * repeats))
    assert split["scored_repeats"] == [r for r in range(repeats) for _ in range(2)]
    tuned = folds[0] | folds[1]
    assert not folds[0] & folds[1] and abs(len(tuned) - len(split["dev"]) / 2) <= 1  # 2 of 4 folds
    scored_by_repeat = {}
    for fold, repeat in zip(split["scored_folds"], split["scored_repeats"]):
        assert not folds[fold] & tuned, "a scored fold holds a sample tuning validated on"
        scored_by_repeat.setdefault(repeat, []).append(folds[fold])
    for parts in scored_by_repeat.values():
        assert set().union(*parts) == set(split["dev"]) - tuned
        assert sum(len(p) for p in parts) == len(set(split["dev"]) - tuned)
    if repeats > 1:
        assert scored_by_repeat[0] != scored_by_repeat[1]

    task = load_task(prepared_project.config(), "multi")
    assert task.scored_repeats == split["scored_repeats"]
    for train, val in task.folds:  # training parts: every other development sample, tuning's too
        assert not set(train) & set(val) and len(train) + len(val) == len(split["dev"])


@pytest.mark.parametrize("max_genes", [None, 5])
def test_targets_are_never_features(prepared_project, max_genes):
    prepared_project.set_params({"features": {"max_genes": max_genes}})
    prepare(prepared_project.config())
    for task in TASKS:
        spec = _read(prepared_project, f"{task}.json")
        assert spec["targets"] and spec["features"]
        assert not set(spec["targets"]) & set(spec["features"])
        assert not set(spec["targets"]) & set(spec["deep_features"])
        assert set(spec["deep_features"]) <= set(spec["features"])
        # features.max_genes budgets the deep models only; the baselines read every feature.
        assert len(spec["features"]) == N_GENES - len(spec["targets"])
        assert len(spec["deep_features"]) == (max_genes or len(spec["features"]))
        config = prepared_project.config()
        assert load_task(config, task, arch="dnn").feature_genes == spec["deep_features"]
        assert load_task(config, task, arch="ridge").feature_genes == spec["features"]
    assert len(_read(prepared_project, "multi.json")["targets"]) == 3
    assert len(_read(prepared_project, "single.json")["targets"]) == 1


def test_targets_are_chosen_on_development_samples_only(prepared_project):
    """A gene whose variance is huge only on held-out samples must not become a target."""
    config = prepared_project.config()
    prepare(config)
    split = _read(prepared_project, "split.json")
    dev, test = np.array(split["dev"]), np.array(split["test"])
    ds, _ = make_synthetic(N_SAMPLES, N_GENES, seed=4)
    X = np.array(ds.X)
    spike = int(np.argmin(X[dev].var(axis=0)))  # the least variable gene on development samples
    X[test, spike] = np.where(np.arange(len(test)) % 2 == 0, 0.0, 100.0)
    assert int(np.argmax(X.var(axis=0))) == spike  # on all samples it would be the top target
    write_dataset(Dataset(X=X, genes=ds.genes, samples=ds.samples, provenance=ds.provenance), prepared_project.data_dir)

    prepare(config)

    assert _read(prepared_project, "split.json") == split  # the split depends on sample count and seed only
    gene = ds.genes[spike]
    assert gene not in _read(prepared_project, "multi.json")["targets"]
    assert gene not in _read(prepared_project, "single.json")["targets"]
    assert gene in _read(prepared_project, "multi.json")["features"]
    dev_var = X[dev].astype(np.float64).var(axis=0)
    expected = [ds.genes[g] for g in np.argsort(-dev_var, kind="stable")[:3]]
    assert _read(prepared_project, "multi.json")["targets"] == expected
    assert _read(prepared_project, "single.json")["targets"] == expected[:1]


def test_reruns_are_byte_identical_in_process_and_from_the_cli(prepared_project):
    out = prepared_project.root / "artifacts" / "prepared" / "toy"
    prepare(prepared_project.config())
    first = tree_digest(out)
    prepare(prepared_project.config())
    assert tree_digest(out) == first
    result = prepared_project.run("prepare")
    assert result.rc == 0, result.stderr
    assert tree_digest(out) == first
    assert set(first) == {"split.json", "single.json", "multi.json", "summary.json"}


def test_held_out_rows_are_read_only_on_request(prepared_project):
    config = prepared_project.config()
    prepare(config)
    task = load_task(config, "multi")
    assert task.X_test is None and task.Y_test is None and task.test_samples is None
    held = load_task(config, "multi", held_out=True)
    n_test = math.ceil(0.25 * N_SAMPLES)
    assert held.X_test.shape == (n_test, N_GENES - 3) and held.Y_test.shape == (n_test, 3)
    assert not set(held.test_samples) & set(held.dev_samples)
    assert task.X_dev.dtype == np.float32 and task.Y_dev.shape == (N_SAMPLES - n_test, 3)


def test_log1p_transform_is_applied_before_choosing_and_loading(prepared_project):
    prepared_project.set_params({"datasets": {"toy": {"transform": "log1p"}}})
    config = prepared_project.config()
    prepare(config)
    assert _read(prepared_project, "summary.json")["transform"] == "log1p"
    ds, _ = make_synthetic(N_SAMPLES, N_GENES, seed=4)
    split = _read(prepared_project, "split.json")
    task = load_task(config, "multi")
    columns = [ds.genes.index(g) for g in task.target_genes]
    raw = ds.X[np.ix_(split["dev"], columns)]
    np.testing.assert_allclose(task.Y_dev, np.log1p(raw), rtol=1e-6)
    dev_var = np.log1p(ds.X[split["dev"]]).astype(np.float64).var(axis=0)
    assert task.target_genes == [ds.genes[g] for g in np.argsort(-dev_var, kind="stable")[:3]]


def test_log1p_of_negative_values_is_a_user_error(prepared_project):
    ds, _ = make_synthetic(N_SAMPLES, N_GENES, seed=4)
    X = np.array(ds.X)
    X[7, 2] = -1.0
    write_dataset(Dataset(X=X, genes=ds.genes, samples=ds.samples), prepared_project.data_dir)
    prepared_project.set_params({"datasets": {"toy": {"transform": "log1p"}}})
    with pytest.raises(UserError, match=r"negative values .*sample 'S0008', gene 'G0003'"):
        prepare(prepared_project.config())
    assert not (prepared_project.root / "artifacts" / "prepared" / "toy").exists()


def _variable_only_in_held_out(project, n_variable_dev: int) -> list[str]:
    """Write data where `n_variable_dev` genes vary on development samples and one more varies
    only on held-out ones (validation over all samples counts it); returns the gene ids."""
    config = project.config()
    split = config.params.split
    dev, test = train_test_split(np.arange(N_SAMPLES), test_size=split.test_size, random_state=split.seed,
                                 shuffle=True)  # the split prepare draws
    rng = np.random.default_rng(3)
    X = np.ones((N_SAMPLES, N_GENES), dtype=np.float32)
    X[:, :n_variable_dev] = rng.uniform(0, 5, (N_SAMPLES, n_variable_dev))
    X[test, n_variable_dev] = rng.uniform(0, 5, len(test))
    genes = [f"G{g:02d}" for g in range(N_GENES)]
    write_dataset(Dataset(X=X, genes=genes, samples=[f"S{s:02d}" for s in range(N_SAMPLES)]), project.data_dir)
    return genes


def test_too_few_targets_on_development_samples_is_exit_2_naming_top_k(prepared_project):
    """top_k=3: 4 genes vary over all samples (validation passes), only 3 on development
    samples: the multi task would silently get 3 targets and no feature."""
    _variable_only_in_held_out(prepared_project, 3)
    with pytest.raises(UserError, match=r"dataset 'toy': only 3 of 20 genes vary across the 45 development "
                                        r"samples.*task\.top_k=3 needs at least 4"):
        prepare(prepared_project.config())
    result = prepared_project.run("prepare")
    assert result.rc == 2 and "Traceback" not in result.stderr
    assert len(result.stderr_lines) == 1 and "task.top_k=3" in result.stderr_lines[0]
    assert "'toy'" in result.stderr_lines[0]
    assert not (prepared_project.root / "artifacts" / "prepared" / "toy").exists()
    # With enough genes varying on development samples the same layout prepares.
    _variable_only_in_held_out(prepared_project, 4)
    prepare(prepared_project.config())
    assert len(_read(prepared_project, "multi.json")["targets"]) == 3


def test_a_single_gene_constant_on_development_samples_is_a_user_error(prepared_project):
    genes = _variable_only_in_held_out(prepared_project, 5)
    prepared_project.set_params({"task": {"single_gene": genes[5]}})  # varies on held-out samples only
    with pytest.raises(UserError, match=r"task\.single_gene 'G05' is constant across the 45 development samples"):
        prepare(prepared_project.config())
