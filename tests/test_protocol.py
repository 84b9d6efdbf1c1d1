"""The protocol's claims, checked on what the stages write: tuning never validates on a
sample that the reported CV scores, and results do not depend on the file's row or
column order."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from mlflow_project import write_linear_dataset

TINY = {
    "task": {"top_k": 3},
    "split": {"test_size": 0.25, "folds": 4, "seed": 3},
    "training": {"max_epochs": 2, "batch_size": 16, "patience": 2, "seed": 5},
    "tuning": {"n_trials": 2, "n_startup_trials": 1, "folds": 1, "pruner": "none"},
    "models": {"dnn": {"defaults": {"layers": 1, "units": 8, "dropout": 0.0, "learning_rate": 0.003, "batch_size": 16},
                       "search_space": {"units": {"type": "categorical", "choices": [8, 16]}}}},
    "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "protocol"},
}


def _json(path):
    return json.loads(path.read_text())


def test_cv_never_scores_a_sample_that_tuning_validated_on(project):
    project.set_params(TINY)
    write_linear_dataset(project.data_dir)
    assert project.run("prepare").rc == 0
    result = project.run("run", "--arch", "ridge")
    assert result.rc == 0, result.stderr
    split = _json(project.root / "artifacts" / "prepared" / "toy" / "split.json")
    repeats = yaml.safe_load(project.params_path.read_text())["split"].get("repeats", 1)
    assert split["tuning_folds"] == [0] and split["scored_folds"] == list(range(1, 1 + 3 * repeats))
    samples = (project.data_dir / "samples.txt").read_text().split()
    dev = {samples[i] for i in split["dev"]}
    for task in ("single", "multi"):
        tuned = _json(project.root / "artifacts" / "tuning" / "toy" / task / "ridge.json")
        validated = set(tuned["validation_samples"])
        evaluation = project.root / "artifacts" / "evaluation" / "toy" / task / "ridge"
        scored = pd.read_csv(evaluation / "cv_samples.csv", dtype={"sample": str})
        assert validated and len(scored) > 0
        assert validated.isdisjoint(scored["sample"]), "CV scored a sample that tuning validated on"
        assert validated | set(scored["sample"]) == dev  # together they are every development sample
        assert sorted(pd.read_csv(evaluation / "folds.csv")["fold"]) == split["scored_folds"]


def test_shuffling_rows_and_columns_of_an_imported_file_leaves_the_metrics_unchanged(project):
    project.set_params(TINY)
    raw = yaml.safe_load(project.params_path.read_text())
    raw["datasets"] = {"orig": {"transform": "none"}}  # set_params merges; this replaces
    project.params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    write_linear_dataset(project.root / "scratch")
    from benchmark.data.canonical import load_dataset

    ds = load_dataset(project.root / "scratch")
    frame = pd.DataFrame(np.asarray(ds.X), index=pd.Index(ds.samples, name="sample"), columns=ds.genes)
    frame.to_csv(project.root / "orig.csv")
    rng = np.random.default_rng(0)
    shuffled = frame.iloc[rng.permutation(len(frame)), rng.permutation(frame.shape[1])]
    assert list(shuffled.index) != list(frame.index) and list(shuffled.columns) != list(frame.columns)
    shuffled.to_csv(project.root / "shuf.csv")

    for name in ("orig", "shuf"):
        result = project.run("data", "import", f"{name}.csv", "--name", name)
        assert result.rc == 0, result.stderr
    assert set(yaml.safe_load(project.params_path.read_text())["datasets"]) == {"orig", "shuf"}
    assert project.run("prepare").rc == 0
    for name in ("orig", "shuf"):
        for arch in ("ridge", "dnn"):
            result = project.run("run", "--dataset", name, "--arch", arch)
            assert result.rc == 0, result.stderr

    for task in ("single", "multi"):
        for arch in ("ridge", "dnn"):
            orig, shuf = (_json(project.root / "metrics" / name / task / f"{arch}.json") for name in ("orig", "shuf"))
            assert orig["cv"] == shuf["cv"] and orig["test"] == shuf["test"], (task, arch)
            assert orig["cv"]["rmse"]["mean"] is not None
