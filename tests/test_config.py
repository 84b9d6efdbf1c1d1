"""params.yaml validation: every bad value is one line naming the file and key, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.config import load_config, resolve_url

from conftest import PARAMS, REPO


def _params(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(PARAMS.read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def _set(section: str, key: str, value):
    def edit(raw):
        raw[section][key] = value
    return edit


@pytest.mark.parametrize(
    "edit, expected",
    [
        (_set("split", "test_size", 1.5), "split.test_size"),
        (_set("split", "test_size", 0), "split.test_size"),
        (_set("split", "folds", 1), "split.folds"),
        (_set("task", "top_k", 0), "task.top_k"),
        (_set("task", "top_k", "fifty"), "task.top_k"),
        (_set("training", "max_epochs", 0), "training.max_epochs"),
        (_set("tuning", "pruner", "random"), "tuning.pruner"),
        (_set("datasets", "toy", {"transform": "log2"}), "datasets.toy.transform"),
        (_set("split", "sed", 3), "split.sed"),
        (lambda raw: raw.update(extra={"a": 1}), "extra"),
        (lambda raw: raw["models"].update(transformer={}), "transformer"),
        (lambda raw: raw["models"]["gru"]["search_space"].update(units={"type": "int", "low": 64, "high": 8}),
         "models.gru.search_space.units"),
        (lambda raw: raw["models"]["dnn"]["search_space"].update(dropout={"type": "float", "low": 0.1}),
         "models.dnn.search_space.dropout"),
        (lambda raw: raw["models"]["ridge"]["search_space"].update(alpha={"type": "float", "low": 0, "high": 1, "log": True}),
         "models.ridge.search_space.alpha"),
        (lambda raw: raw["models"]["lstm"]["search_space"].update(steps={"type": "categorical", "choices": []}),
         "models.lstm.search_space.steps"),
        (lambda raw: raw["models"]["attention_lstm"]["defaults"].update(units=-3),
         "models.attention_lstm.defaults.units: expected an integer >= 1, got -3"),
        (lambda raw: raw["models"]["gru"]["defaults"].update(head_units=-1),
         "models.gru.defaults.head_units: expected an integer >= 0, got -1"),
        (lambda raw: raw["models"]["dnn"]["defaults"].update(dropout=1.5),
         "models.dnn.defaults.dropout: expected a rate in [0, 1), got 1.5"),
        (lambda raw: raw["models"]["lstm"]["search_space"].update(layers={"type": "int", "low": 0, "high": 2}),
         "models.lstm.search_space.layers: expected an integer >= 1, got 0"),
        (lambda raw: raw["models"]["attention_gru"]["search_space"].update(
            head_units={"type": "categorical", "choices": [0, 512.5]}),
         "models.attention_gru.search_space.head_units: expected an integer >= 0, got 512.5"),
        (lambda raw: raw["models"]["dnn"]["search_space"].update(
            learning_rate={"type": "float", "low": 0, "high": 0.01}),
         "models.dnn.search_space.learning_rate: expected a value > 0, got 0.0"),
        (_set("promotion", "candidate", "transformer"), "promotion.candidate"),
        (_set("tuning", "folds", 9), "tuning.folds"),
        (lambda raw: (raw["split"].update(folds=5), raw["tuning"].update(folds=4)),
         "split.folds (5) must exceed tuning.folds (4) by at least 2"),
        (lambda raw: raw.update(datasets={}), "datasets: list at least one dataset"),
        (_set("datasets", "bad/name", {"transform": "none"}), "'bad/name' is not a valid dataset name"),
        (_set("datasets", "zeisel", {"training": {"max_epochs": 0}}), "datasets.zeisel.training.max_epochs"),
        (_set("datasets", "zeisel", {"training": {"epochs": 3}}), "datasets.zeisel.training.epochs: unknown key"),
        (_set("data", "transform", "log1p"), "data.transform: moved to datasets.<name>.transform"),
    ],
)
def test_bad_params_exit_2_with_one_line_naming_the_key(tmp_path, edit, expected):
    path = _params(tmp_path, edit)
    result = _run(tmp_path, "prepare", "--params", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "params.yaml" in lines[0] and expected in lines[0]
    assert "Traceback" not in result.stderr


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("split:\n  folds: [1, 2\n")
    result = _run(tmp_path, "prepare", "--params", str(path))
    assert result.returncode == 2
    assert "params.yaml" in result.stderr and "line" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_params_file_is_exit_2(tmp_path):
    result = _run(tmp_path, "prepare", "--params", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr


def test_committed_params_are_valid_and_cover_every_arch():
    config = load_config(REPO / "params.yaml", root=REPO)
    from benchmark import ARCHS

    assert set(config.params.models) == set(ARCHS)
    assert config.model("mean").search_space == {}
    for arch in ("dnn", "lstm", "gru", "attention_lstm", "attention_gru", "ridge", "knn"):
        assert config.model(arch).search_space, arch


def test_stores_resolve_to_the_project_root_whatever_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("{}\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    monkeypatch.delenv("GENEBENCH_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config()
    assert config.root == tmp_path.resolve()
    assert config.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert config.storage_url == f"sqlite:///{tmp_path.resolve()}/optuna.db"
    assert resolve_url("postgresql://u:p@h/db", tmp_path) == "postgresql://u:p@h/db"


def test_mlflow_tracking_uri_env_overrides_params(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://team@db.example/mlflow")
    assert load_config(tmp_path / "params.yaml", root=tmp_path).tracking_uri == "postgresql://team@db.example/mlflow"


def test_a_dataset_overrides_budgets_for_its_own_stages_only(tmp_path):
    path = _params(tmp_path, _set("datasets", "zeisel", {"transform": "none", "training": {"max_epochs": 3},
                                                         "features": {"max_genes": 100}}))
    config = load_config(path, root=tmp_path)
    zeisel, pbmc = config.for_dataset("zeisel"), config.for_dataset("pbmc68k")
    assert (zeisel.params.training.max_epochs, zeisel.params.features.max_genes) == (3, 100)
    assert pbmc.params.training.max_epochs == config.params.training.max_epochs != 3
    assert zeisel.data_dir == tmp_path / "data" / "zeisel"
    assert config.for_dataset("cbmc").transform == "log1p"


@pytest.mark.parametrize("args, expected", [
    (("prepare", "--dataset", "nope"), "datasets: no dataset 'nope' (listed: cbmc, pbmc68k, synthetic, zeisel)"),
    (("tune", "--task", "multi", "--arch", "ridge"), "datasets lists 4 datasets (cbmc, pbmc68k, synthetic, zeisel); pass --dataset NAME"),
])
def test_unknown_or_missing_dataset_exits_2_naming_the_choices(tmp_path, args, expected):
    path = _params(tmp_path, lambda raw: None)
    result = _run(tmp_path, *args, "--params", str(path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"genebench: error: params.yaml: {expected}"]


def test_optuna_storage_environment_overrides_tuning_storage(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.setenv("OPTUNA_STORAGE", "sqlite:///elsewhere.db")
    assert load_config(tmp_path / "params.yaml", root=tmp_path).storage_url == f"sqlite:///{tmp_path.resolve()}/elsewhere.db"
