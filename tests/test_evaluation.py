"""`genebench evaluate`: the metrics file, the evaluation artifacts and the MLflow run."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from benchmark.evaluation import resolve_params
from benchmark.metrics import METRICS, SCALED_METRICS
from mlflow_project import N_GENES, PARAMS, shared_project

ALL = METRICS + SCALED_METRICS


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    return shared_project(tmp_path_factory)


@pytest.fixture(scope="module")
def client(evaluated):
    return mlflow.MlflowClient(evaluated.tracking_uri)


@pytest.mark.parametrize("task,arch", [("single", "ridge"), ("single", "attention_lstm"), ("multi", "ridge")])
def test_metrics_file_has_the_design_schema(evaluated, task, arch):
    doc = evaluated.metrics(task, arch)
    # A deep model also carries its base alone, scored on the same folds and split (the ablation).
    deep = arch == "attention_lstm"
    assert set(doc) == {"dataset", "task", "arch", "n_dev", "n_test", "cv", "test", "mlflow_run_id"} | (
        {"base"} if deep else set())
    if deep:
        assert set(doc["base"]) == {"cv", "test"} and set(doc["base"]["cv"]) == set(ALL)
        assert doc["base"]["test"]["rmse"] != doc["test"]["rmse"]
    assert (doc["dataset"], doc["task"], doc["arch"]) == ("toy", task, arch)
    assert (doc["n_dev"], doc["n_test"]) == (45, 15)
    assert set(doc["cv"]) == set(ALL) and set(doc["test"]) == set(ALL)
    for name in ALL:
        assert set(doc["cv"][name]) == {"mean", "std"}
    for name in ("rmse", "mae", "mse", "rmse_scaled", "mae_scaled"):
        assert isinstance(doc["test"][name], float) and doc["test"][name] >= 0
        assert isinstance(doc["cv"][name]["mean"], float) and isinstance(doc["cv"][name]["std"], float)
    assert doc["test"]["rmse"] == pytest.approx(doc["test"]["mse"] ** 0.5)


def test_linear_data_separates_ridge_from_the_mean_baseline(evaluated):
    ridge, mean = evaluated.metrics("single", "ridge"), evaluated.metrics("single", "mean")
    assert ridge["test"]["r2"] > 0.9 and ridge["cv"]["r2"]["mean"] > 0.9
    assert mean["test"]["r2"] <= 0.01
    assert ridge["test"]["rmse"] < mean["test"]["rmse"]


def test_undefined_pearson_is_null_in_json_and_a_tag_in_mlflow(evaluated, client):
    doc = evaluated.metrics("single", "mean")  # a constant prediction: Pearson r undefined
    assert doc["test"]["pearson"] is None and doc["cv"]["pearson"] == {"mean": None, "std": None}
    assert [k for k, v in doc["test"].items() if v is None] == ["pearson"]
    run = client.get_run(doc["mlflow_run_id"])
    assert "test_pearson" not in run.data.metrics and "cv_pearson_mean" not in run.data.metrics
    assert run.data.tags["undefined.test_pearson"] == "null"
    # Every target gene's r is undefined for a constant prediction, and the outputs count them.
    assert evaluated.run_record("single", "mean")["test_pearson_undefined"] == 1
    folds = pd.read_csv(evaluated.evaluation("single", "mean") / "folds.csv")
    assert list(folds["pearson_undefined"]) == [1] * len(folds)
    assert evaluated.run_record("multi", "ridge")["test_pearson_undefined"] == 0


@pytest.mark.parametrize("task,arch", [("single", "ridge"), ("single", "mean"), ("single", "attention_lstm"), ("multi", "ridge")])
def test_mlflow_run_carries_the_json_metrics_to_the_digit(evaluated, client, task, arch):
    doc = evaluated.metrics(task, arch)
    run = client.get_run(doc["mlflow_run_id"])
    expected = {f"test_{k}": v for k, v in doc["test"].items() if v is not None}
    for name, summary in doc["cv"].items():
        expected.update({f"cv_{name}_{s}": v for s, v in summary.items() if v is not None})
    if "base" in doc:  # the ablation: the base's CV means and held-out metrics
        expected.update({f"base_test_{k}": v for k, v in doc["base"]["test"].items() if v is not None})
        expected.update({f"base_cv_{name}_mean": s["mean"] for name, s in doc["base"]["cv"].items()
                         if s["mean"] is not None})
    logged = {k: v for k, v in run.data.metrics.items() if not k.startswith("fold_") and k != "fit_seconds"}
    assert logged == expected  # exact float equality, and no metric left out either way
    assert 0 < run.data.metrics["fit_seconds"] == pytest.approx(evaluated.run_record(task, arch)["fit_seconds"], abs=0.05)
    folds = pd.read_csv(evaluated.evaluation(task, arch) / "folds.csv", float_precision="round_trip")
    history = client.get_metric_history(run.info.run_id, "fold_rmse")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == list(zip(folds["fold"], folds["rmse"]))
    assert np.std(folds["rmse"], ddof=1) == pytest.approx(doc["cv"]["rmse"]["std"], rel=1e-12)


def test_run_is_named_tagged_and_parameterised(evaluated, client):
    doc = evaluated.metrics("single", "attention_lstm")
    run = client.get_run(doc["mlflow_run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "gbtest-toy-single"
    assert experiment.artifact_location == (evaluated.root / "mlruns").as_uri()
    assert run.info.run_name == "evaluate-attention_lstm" and run.info.status == "FINISHED"
    summary = json.loads((evaluated.root / "artifacts" / "prepared" / "toy" / "summary.json").read_text())
    tags = run.data.tags
    assert tags["arch"] == "attention_lstm" and tags["task"] == "single"
    assert tags["data_version"] == summary["data_version"]
    assert len(tags["git_commit"]) == 40 and tags["git_dirty"] in ("true", "false")
    assert tags["params_source"] == "defaults"
    assert run.data.params["hp.units"] == "8" and run.data.params["training.max_epochs"] == "2"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/folds.csv", "evaluation/test_predictions.csv", "evaluation/attention.csv",
            "evaluation/gene_importance.csv", "evaluation/run.json", "evaluation/test_scatter.png",
            "evaluation/attention.png", "evaluation/gene_importance.png"} <= artifacts


def test_evaluation_artifacts(evaluated):
    ridge = evaluated.evaluation("multi", "ridge")
    folds = pd.read_csv(ridge / "folds.csv")
    # Fold 0 is tuning's (tuning.folds: 1): only the other two are scored.
    assert list(folds["fold"]) == [1, 2] and set(ALL) <= set(folds.columns)
    per_gene = pd.read_csv(ridge / "fold_per_gene.csv")
    assert list(per_gene.columns) == ["fold", "gene", "r2", "rmse"] and len(per_gene) == 2 * 5
    predictions = pd.read_csv(ridge / "test_predictions.csv")
    assert list(predictions.columns) == ["sample", "gene", "observed", "predicted"] and len(predictions) == 15 * 5
    assert len(pd.read_csv(ridge / "test_per_gene.csv")) == 5
    assert not (ridge / "attention.csv").exists() and (ridge / "test_scatter.png").stat().st_size > 0
    record = evaluated.run_record("multi", "ridge")
    assert record["run_id"] == evaluated.metrics("multi", "ridge")["mlflow_run_id"]
    assert record["model_uri"].startswith("models:/") and record["params"] == {"alpha": 1.0}


def test_deep_evaluation_scores_its_base_alone_on_the_same_folds(evaluated):
    """The ablation: every scored fold and the held-out split are scored by the model and by
    its ridge base alone; the base's columns are what a ridge on the same rows gives."""
    directory = evaluated.evaluation("single", "attention_lstm")
    folds = pd.read_csv(directory / "folds.csv")
    assert list(folds["fold"]) == [1, 2] and list(folds["repeat"]) == [0, 0]
    assert {f"base_{m}" for m in ALL} <= set(folds.columns)
    assert (folds["base_rmse"] != folds["rmse"]).all()
    doc = evaluated.metrics("single", "attention_lstm")
    assert doc["base"]["cv"]["rmse"]["mean"] == pytest.approx(folds["base_rmse"].mean(), rel=1e-12)
    predictions = pd.read_csv(directory / "test_predictions.csv")
    assert list(predictions.columns) == ["sample", "gene", "observed", "predicted", "base_predicted"]
    base_rmse = float(np.sqrt(np.mean((predictions["observed"] - predictions["base_predicted"]) ** 2)))
    assert base_rmse == pytest.approx(doc["base"]["test"]["rmse"], rel=1e-9)
    assert {"base_r2", "base_rmse"} <= set(pd.read_csv(directory / "test_per_gene.csv").columns)
    ridge = pd.read_csv(evaluated.evaluation("single", "ridge") / "folds.csv")
    assert "base_rmse" not in ridge.columns  # a baseline has no base


def test_attention_export_is_a_gene_importance_table(evaluated):
    directory = evaluated.evaluation("single", "attention_lstm")
    tokens = pd.read_csv(directory / "attention.csv")
    assert len(tokens) == N_GENES - 1  # steps >= features: one token per feature gene
    assert tokens["mean_weight"].sum() == pytest.approx(1.0, abs=1e-5)
    genes = pd.read_csv(directory / "gene_importance.csv")
    features = json.loads((evaluated.root / "artifacts" / "prepared" / "toy" / "single.json").read_text())["features"]
    assert sorted(genes["gene"]) == sorted(features)
    assert list(genes["rank"]) == list(range(1, len(features) + 1))
    assert genes["weight"].is_monotonic_decreasing
    # Each gene carries the mean weight of the token (module) it is summed into.
    by_token = tokens.set_index("token")["mean_weight"]
    np.testing.assert_allclose(genes["weight"], by_token[genes["module"]].to_numpy(), rtol=1e-12)
    assert (genes["module_size"] == 1).all()
    assert (directory / "gene_importance.png").stat().st_size > 0


@pytest.mark.parametrize("task,arch", [("single", "ridge"), ("single", "attention_lstm"), ("multi", "ridge")])
def test_every_architecture_writes_permutation_importance(evaluated, client, task, arch):
    directory = evaluated.evaluation(task, arch)
    prepared = json.loads((evaluated.root / "artifacts" / "prepared" / "toy" / f"{task}.json").read_text())
    pooled = pd.read_csv(directory / "permutation_importance.csv", dtype={"gene": str})
    assert list(pooled.columns) == ["gene", "importance", "rmse_increase", "rank"]
    assert (pooled["importance"] >= 0).all()  # a root mean squared change of the prediction
    assert sorted(pooled["gene"]) == sorted(prepared["features"])  # few genes: every one permuted
    assert list(pooled["rank"]) == list(range(1, len(pooled) + 1)) and pooled["importance"].is_monotonic_decreasing
    per_target = pd.read_csv(directory / "permutation_importance_targets.csv", dtype={"gene": str, "target": str})
    assert len(per_target) == len(pooled) * len(prepared["targets"])
    assert set(per_target["target"]) == set(prepared["targets"])
    run_id = evaluated.metrics(task, arch)["mlflow_run_id"]
    logged = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/permutation_importance.csv", "evaluation/permutation_importance_targets.csv"} <= logged


def test_baseline_evaluate_does_not_import_tensorflow(evaluated):
    assert "HEAVY_MODULES=\n" in evaluated.tf_probe_output or evaluated.tf_probe_output.rstrip().endswith("HEAVY_MODULES=")


def test_tuned_parameters_override_the_defaults(evaluated):
    tuning = evaluated.root / "artifacts" / "tuning" / "toy" / "single" / "ridge.json"
    tuning.parent.mkdir(parents=True, exist_ok=True)
    try:
        tuning.write_text(json.dumps({"best_params": {"alpha": 123.0}, "best_value": 0.1}))
        hp, source = resolve_params(evaluated.config(), "single", "ridge")
        assert hp == {"alpha": 123.0} and source == "tuning:artifacts/tuning/toy/single/ridge.json"
    finally:
        tuning.unlink()
    assert resolve_params(evaluated.config(), "single", "ridge") == ({"alpha": PARAMS["models"]["ridge"]["defaults"]["alpha"]}, "defaults")


def test_a_failed_evaluate_keeps_the_previous_result(evaluated):
    before = (evaluated.root / "metrics" / "toy" / "single" / "ridge.json").read_bytes()
    tuning = evaluated.root / "artifacts" / "tuning" / "toy" / "single" / "ridge.json"
    tuning.parent.mkdir(parents=True, exist_ok=True)
    try:
        tuning.write_text(json.dumps({"best_params": {"lambda": 3.0}}))
        result = evaluated.cli("evaluate", "--task", "single", "--arch", "ridge")
    finally:
        tuning.unlink()
    assert result.rc == 2
    assert result.stderr_lines == ["genebench: error: " + str(tuning) + ": best_params: 'lambda' is not a hyperparameter of models.ridge"]
    assert (evaluated.root / "metrics" / "toy" / "single" / "ridge.json").read_bytes() == before


def test_run_names_its_dataset_as_an_input_and_spans_the_fitting(evaluated, client):
    doc = evaluated.metrics("single", "attention_lstm")
    run = client.get_run(doc["mlflow_run_id"])
    digest = run.data.tags["data_version"][:8]
    inputs = {(i.dataset.name, i.dataset.digest): [t.value for t in i.tags if t.key == "mlflow.data.context"]
              for i in run.inputs.dataset_inputs}
    assert inputs == {("toy-development", digest): ["training"], ("toy-held-out", digest): ["testing"]}
    assert len(run.inputs.dataset_inputs) == 2  # each once, however many metrics name it
    shapes = {i.dataset.name: json.loads(i.dataset.profile) for i in run.inputs.dataset_inputs}
    assert shapes["toy-development"]["features_shape"][0] == doc["n_dev"]
    assert shapes["toy-held-out"]["features_shape"][0] == doc["n_test"]
    seconds = (run.info.end_time - run.info.start_time) / 1000
    assert seconds >= run.data.metrics["fit_seconds"] > 0



def test_the_logged_model_carries_every_metric_naming_its_dataset_cv_and_held_out_apart(evaluated, client):
    """What the UI's logged model page shows ("Datasets used", the metrics' Dataset column):
    CV and per-fold metrics on the development samples, test metrics on the held-out ones."""
    doc = evaluated.metrics("single", "attention_lstm")  # a deep model: base_* metrics too
    run = client.get_run(doc["mlflow_run_id"])
    record = json.loads((evaluated.root / "artifacts" / "evaluation" / "toy" / "single" / "attention_lstm"
                         / "run.json").read_text())
    model = client.get_logged_model(record["model_id"])
    assert model.source_run_id == run.info.run_id
    digest = run.data.tags["data_version"][:8]
    named = {}
    for metric in model.metrics:
        named.setdefault(metric.key, set()).add((metric.dataset_name, metric.dataset_digest))
    assert set(named) == set(run.data.metrics)  # every metric of the run, on its model too
    development, held_out = {("toy-development", digest)}, {("toy-held-out", digest)}
    for key, datasets in named.items():
        if key.startswith(("cv_", "fold_", "base_cv_")):
            assert datasets == development, key
        elif key.startswith(("test_", "base_test_")):
            assert datasets == held_out, key
        else:
            assert key == "fit_seconds" and datasets == {(None, None)}, key
    folds = sorted(m.step for m in model.metrics if m.key == "fold_rmse")
    assert folds == sorted(int(f) for f in pd.read_csv(evaluated.root / "artifacts" / "evaluation" / "toy" / "single"
                                                       / "attention_lstm" / "folds.csv")["fold"])

def _slow_project(project):
    from mlflow_project import write_linear_dataset

    project.set_params({"task": {"top_k": 3}, "split": {"test_size": 0.25, "folds": 3, "seed": 1},
                        "training": {"max_epochs": 5000, "patience": 5000, "batch_size": 8},
                        "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "slow"}})
    write_linear_dataset(project.data_dir)
    assert project.run("prepare").rc == 0
    return mlflow.MlflowClient(f"sqlite:///{project.root / 'mlflow.db'}")


def _runs(client, status=None):
    experiment = client.get_experiment_by_name("slow-toy-single")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id])
    return [r for r in runs if status is None or r.info.status == status]


def test_a_terminated_evaluate_ends_its_run_killed_and_a_dead_ones_run_is_ended_next_time(project):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import cli_env

    client = _slow_project(project)
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", "evaluate", "--task", "single", "--arch", "dnn"],
                            cwd=project.root, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _runs(client, "RUNNING") and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(1.0)  # inside the fitting now
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert [r.info.status for r in _runs(client)] == ["KILLED"]

    # A run whose process died without a word (SIGKILL) is ended by the next evaluate of the key.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    experiment = client.get_experiment_by_name("slow-toy-single").experiment_id
    import socket

    orphan = client.create_run(experiment, run_name="evaluate-mean", tags={"arch": "mean", "genebench.host": socket.gethostname(),
                                                 "genebench.pid": dead.stdout.strip()}).info.run_id
    assert project.run("evaluate", "--task", "single", "--arch", "mean").rc == 0
    assert client.get_run(orphan).info.status == "KILLED"
    assert os.environ.get("MLFLOW_TRACKING_URI") is None
