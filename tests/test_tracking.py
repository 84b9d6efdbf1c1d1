"""The logged pyfunc: models-from-code without pickle, signature, input handling, fresh-process load."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException

from benchmark import tracking
from benchmark.data.prepare import load_task
from conftest import cli_env
from mlflow_project import shared_project

PICKLE_OPCODE_PROTOCOLS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    return shared_project(tmp_path_factory)


def _model_dirs(evaluated) -> list:
    dirs = sorted(p.parent for p in (evaluated.root / "mlruns").rglob("MLmodel"))
    assert dirs, "no logged model found under mlruns/"
    return dirs


def test_no_pickle_in_any_logged_model(evaluated):
    for directory in _model_dirs(evaluated):
        mlmodel = yaml.safe_load((directory / "MLmodel").read_text())
        flavor = mlmodel["flavors"]["python_function"]
        assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # models-from-code
        assert "python_model" not in flavor
        for path in directory.rglob("*"):
            if not path.is_file():
                continue
            assert path.suffix not in {".pkl", ".pickle", ".joblib", ".cloudpickle", ".pyc"}, path
            head = path.read_bytes()[:2]
            assert head not in PICKLE_OPCODE_PROTOCOLS, f"{path} looks like a pickle"
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as npz:  # raises on object arrays
                    assert all(npz[name].dtype != object for name in npz.files)
            if path.suffix == ".keras":
                with zipfile.ZipFile(path) as archive:
                    assert not [n for n in archive.namelist() if n.endswith((".pkl", ".pickle"))]


def test_models_live_under_the_project_mlruns(evaluated):
    client = mlflow.MlflowClient(evaluated.tracking_uri)
    record = evaluated.run_record("single", "attention_lstm")
    model = client.get_logged_model(record["model_id"])
    assert model.artifact_location.startswith((evaluated.root / "mlruns").as_uri() + "/")
    assert model.source_run_id == record["run_id"]


@pytest.mark.parametrize("task,arch", [("single", "attention_lstm"), ("multi", "ridge")])
def test_signature_and_input_example(evaluated, task, arch):
    record = evaluated.run_record(task, arch)
    directory = next(d for d in _model_dirs(evaluated) if record["model_id"] in str(d))
    mlmodel = yaml.safe_load((directory / "MLmodel").read_text())
    spec = json.loads((evaluated.root / "artifacts" / "prepared" / "toy" / f"{task}.json").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])
    outputs = json.loads(mlmodel["signature"]["outputs"])
    assert [c["name"] for c in inputs] == spec["features"]
    assert [c["name"] for c in outputs] == spec["targets"]
    example = json.loads((directory / "input_example.json").read_text())
    assert example["columns"] == spec["features"] and 1 <= len(example["data"]) <= 5
    io = json.loads((directory / "artifacts" / "model_io.json").read_text())
    assert io["transform"] == "none" and io["target_genes"] == spec["targets"]


def test_pyfunc_input_handling(evaluated):
    config = evaluated.config()
    tracking.configure(config)
    model = mlflow.pyfunc.load_model(evaluated.run_record("multi", "ridge")["model_uri"])
    data = load_task(config, "multi", held_out=True)
    frame = tracking.raw_features(config, data, "test")
    expected = pd.read_csv(evaluated.evaluation("multi", "ridge") / "test_predictions.csv", float_precision="round_trip")
    expected = expected.pivot(index="sample", columns="gene", values="predicted").loc[frame.index, data.target_genes]

    shuffled = frame[frame.columns[::-1]].assign(NOT_A_FEATURE=1.0)
    predicted = model.predict(shuffled)
    assert list(predicted.columns) == data.target_genes
    np.testing.assert_allclose(predicted.to_numpy(), expected.to_numpy(), rtol=1e-6, atol=1e-6)

    dropped = data.feature_genes[:7]
    with pytest.raises(MlflowException) as caught:
        model.predict(frame.drop(columns=dropped))
    message = caught.value.message
    assert message.startswith(f"input is missing 7 of the model's {len(data.feature_genes)} feature gene columns")
    assert all(gene in message for gene in dropped[:5]) and "and 2 more" in message
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"


FRESH = """
import json, sys
import mlflow, numpy as np
from benchmark import tracking
from benchmark.config import load_config
from benchmark.data.prepare import load_task
config = load_config().for_dataset("toy")
tracking.configure(config)
out = {}
for task, arch, uri in json.loads(sys.argv[1]):
    data = load_task(config, task, held_out=True)
    frame = tracking.raw_features(config, data, "test")
    predicted = mlflow.pyfunc.load_model(uri).predict(frame)
    out[f"{task}/{arch}"] = {"index": list(frame.index), "columns": list(predicted.columns),
                             "values": predicted.to_numpy().tolist()}
print("RESULT=" + json.dumps(out))
"""


def test_fresh_process_load_predicts_what_evaluate_predicted(evaluated):
    models = [(t, a, evaluated.run_record(t, a)["model_uri"]) for t, a in (("single", "attention_lstm"), ("multi", "ridge"))]
    result = subprocess.run([sys.executable, "-c", FRESH, json.dumps(models)], cwd=evaluated.root, env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    fresh = json.loads(result.stdout.split("RESULT=", 1)[1])
    for task, arch, _ in models:
        got = fresh[f"{task}/{arch}"]
        table = pd.read_csv(evaluated.evaluation(task, arch) / "test_predictions.csv", float_precision="round_trip")
        expected = table.pivot(index="sample", columns="gene", values="predicted").loc[got["index"], got["columns"]]
        np.testing.assert_allclose(np.array(got["values"]), expected.to_numpy(), rtol=1e-5, atol=1e-6)


def test_pyfunc_takes_raw_values_and_applies_the_transform_itself(tmp_path):
    """With `datasets.toy.transform: log1p` the model's input is data/ as is; it applies log1p."""
    from benchmark.config import load_config
    from benchmark.evaluation import evaluate
    from mlflow_project import PARAMS, write_linear_dataset

    root = tmp_path / "log1p"
    root.mkdir()
    params = {**PARAMS, "datasets": {"toy": {"transform": "log1p"}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    write_linear_dataset(root / "data" / "toy", counts=True)
    config = load_config(root / "params.yaml", root=root).for_dataset("toy")
    from benchmark.data.prepare import prepare

    prepare(config)
    evaluate(config, "multi", "ridge")
    record = json.loads((root / "artifacts" / "evaluation" / "toy" / "multi" / "ridge" / "run.json").read_text())
    data = load_task(config, "multi", held_out=True)
    raw = tracking.raw_features(config, data, "test")
    np.testing.assert_array_equal(np.log1p(raw.to_numpy(np.float32)), data.X_test)  # raw really is raw
    predicted = mlflow.pyfunc.load_model(record["model_uri"]).predict(raw)
    table = pd.read_csv(root / "artifacts" / "evaluation" / "toy" / "multi" / "ridge" / "test_predictions.csv", float_precision="round_trip")
    expected = table.pivot(index="sample", columns="gene", values="predicted").loc[raw.index, data.target_genes]
    np.testing.assert_allclose(predicted.to_numpy(), expected.to_numpy(), rtol=1e-9, atol=1e-9)


def test_experiments_carry_a_one_line_description(tmp_path, monkeypatch):
    """`mlflow.note.content` (the UI's description): set on creation, added to an older
    experiment without one, and never overwriting one a user wrote."""
    from benchmark.config import load_config
    from mlflow_project import PARAMS

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "datasets": {"toy": {"transform": "none"}}}))
    config = load_config(tmp_path / "params.yaml", root=tmp_path).for_dataset("toy")
    client = mlflow.MlflowClient(config.tracking_uri)
    prefix = config.params.mlflow.experiment

    multi = client.get_experiment(tracking.experiment_id(config, "multi"))
    note = multi.tags[tracking.NOTE_TAG]
    assert "\n" not in note and "dataset toy" in note and "task multi" in note and "evaluate run" in note
    board = client.get_experiment(tracking.named_experiment_id(config, f"{prefix}-leaderboard"))
    assert "compare" in board.tags[tracking.NOTE_TAG] and "leaderboard" in board.tags[tracking.NOTE_TAG]
    custom = client.get_experiment(tracking.named_experiment_id(config, f"{prefix}-other", "Scratch runs."))
    assert custom.tags[tracking.NOTE_TAG] == "Scratch runs."

    older = client.create_experiment(f"{prefix}-toy-single")  # as an earlier version created it
    assert tracking.experiment_id(config, "single") == older
    assert "task single" in client.get_experiment(older).tags[tracking.NOTE_TAG]
    client.set_experiment_tag(older, tracking.NOTE_TAG, "my own words")
    tracking.experiment_id(config, "single")
    assert client.get_experiment(older).tags[tracking.NOTE_TAG] == "my own words"


def test_the_cli_silences_mlflows_type_hint_warning_and_tensorflows_info_lines():
    """MLflow warns each time a PythonModel without `predict` type hints is defined (our
    pyfunc, at log and at load), under its own "once" filter; the CLI's set-up hides it.
    TF_CPP_MIN_LOG_LEVEL defaults to 3 (absl ERROR lines too) and a user's own value wins."""
    define = ("import mlflow.pyfunc\n"
              "class M(mlflow.pyfunc.PythonModel):\n"
              "    def predict(self, context, model_input):\n"
              "        return model_input\n")
    setup = "import os; from benchmark.cli import _quiet_libraries; _quiet_libraries(); " \
            "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])\n"
    env = {k: v for k, v in cli_env().items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    noisy = subprocess.run([sys.executable, "-c", define], env=env, capture_output=True, text=True, timeout=120)
    assert noisy.returncode == 0 and "Add type hints to the `predict` method" in noisy.stderr  # the source still warns
    quiet = subprocess.run([sys.executable, "-c", setup + define], env=env, capture_output=True, text=True,
                           timeout=120)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "3", quiet.stderr
    assert "type hints" not in quiet.stderr, quiet.stderr
    own = subprocess.run([sys.executable, "-c", setup], env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"},
                         capture_output=True, text=True, timeout=120)
    assert own.stdout.strip() == "0", own.stderr
