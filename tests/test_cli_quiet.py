"""A clean run looks clean: no library log lines, progress bars or registry warnings by default,
all of MLflow's output back with `GENEBENCH_LOG=debug` (or `--verbose`).

On a fresh store: prepare, evaluate ridge on both tasks (one of them verbose) and promote.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from benchmark.data.canonical import load_dataset
from conftest import cli_env, run_cli
from mlflow_project import write_linear_dataset

pytestmark = pytest.mark.slow

# What a clean run must not print: absl's C++ log lines, Python logging warnings, tqdm bars.
NOISE = re.compile(r"^(E0000|W0000|WARNING)|Downloading artifacts|it/s\]|Registered model .* already exists|"
                   r"has no artifacts at artifact path", re.MULTILINE)


def _genebench(project, *args, **env):
    result = subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=project.root, env=cli_env(**env),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def test_evaluate_and_promote_on_a_fresh_store_print_no_library_noise(project):
    project.set_params({"task": {"top_k": 5}, "split": {"test_size": 0.25, "folds": 3, "seed": 1},
                        "tuning": {"folds": 1}, "mlflow": {"experiment": "quiet"},
                        "promotion": {"candidate": "ridge"}})
    write_linear_dataset(project.data_dir)
    _genebench(project, "prepare")
    # Verbose: MLflow's progress bars come back, so the check below is one that can fail.
    verbose = _genebench(project, "evaluate", "--task", "single", "--arch", "ridge", GENEBENCH_LOG="debug")
    assert "Downloading artifacts" in verbose, verbose[-2000:]

    quiet = _genebench(project, "evaluate", "--task", "multi", "--arch", "ridge")
    missing = run_cli(project.root, "serve-example", "--task", "multi")  # nothing registered yet
    assert missing.rc == 2 and len(missing.stderr_lines) == 1, missing.stderr
    assert "models:/genebench-toy-multi@champion: not found" in missing.stderr and "genebench promote" in missing.stderr
    quiet += _genebench(project, "promote", "--task", "multi")
    assert not NOISE.search(quiet), NOISE.search(quiet).group(0) + "\n" + quiet[-3000:]
    assert "promote toy/multi: promoted - no champion yet" in quiet

    # Registered from the logged model itself: the version keeps the run id (a second promote
    # finds it) and the logged model lists the version, as mlflow.register_model does.
    from mlflow import MlflowClient

    store = f"sqlite:///{project.root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    version = client.get_model_version_by_alias("genebench-toy-multi", "champion")
    run_id = json.loads((project.root / "metrics" / "toy" / "multi" / "ridge.json").read_text())["mlflow_run_id"]
    assert version.run_id == run_id and version.source.startswith("models:/m-")
    model_id = version.source.removeprefix("models:/")
    assert json.loads(client.get_logged_model(model_id).tags["mlflow.modelVersions"]) == [
        {"name": "genebench-toy-multi", "version": int(version.version)}]
    again = _genebench(project, "promote", "--task", "multi")
    assert f"version {version.version} is already the champion" in again

    # serve-example: the champion's feature genes, raw values of the first held-out samples.
    request = json.loads(run_cli(project.root, "serve-example", "--task", "multi", "--rows", "3").stdout)
    split = request["dataframe_split"]
    features = json.loads((project.root / "artifacts" / "prepared" / "toy" / "multi.json").read_text())["features"]
    assert split["columns"] == features and len(split["data"]) == 3 and len(split["index"]) == 3
    ds = load_dataset(project.data_dir)
    first = ds.samples.index(split["index"][0])
    assert split["data"][0] == [float(ds.X[first, ds.genes.index(g)]) for g in features]
