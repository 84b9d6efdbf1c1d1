"""`genebench ui` serves the MLflow UI on 127.0.0.1 over the project's own store, and
passes a store URI (which may hold a password) through the environment, not argv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import requests

from conftest import PARAMS, cli_env, genebench_ui


def test_ui_masks_the_store_password_and_keeps_it_out_of_argv(tmp_path):
    """A stand-in `mlflow` first on PATH records the argv and environment it is exec'd with."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(PARAMS, root / "params.yaml")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "mlflow"
    fake.write_text(f"#!{sys.executable}\n"
                    "import json, os, sys\n"
                    f"open({str(tmp_path / 'exec.json')!r}, 'w').write(json.dumps({{'argv': sys.argv, "
                    "'env': dict(os.environ)}))\n")
    fake.chmod(0o755)
    secret = "s3cr3t-pw"
    uri = f"postgresql://team:{secret}@db.example.org:5432/mlflow"
    env = cli_env(MLFLOW_TRACKING_URI=uri)
    env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
    result = subprocess.run([sys.executable, "-m", "benchmark", "ui", "--port", "5123"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    assert "postgresql://team:***@db.example.org:5432/mlflow" in result.stdout
    called = json.loads((tmp_path / "exec.json").read_text())
    assert not any(secret in arg for arg in called["argv"]), called["argv"]
    assert called["argv"][1:] == ["ui", "--host", "127.0.0.1", "--port", "5123", "--workers", "1"]
    assert called["env"]["MLFLOW_BACKEND_STORE_URI"] == uri  # what `mlflow ui` reads for --backend-store-uri


@pytest.mark.slow
def test_ui_serves_the_project_store_on_loopback(project, tmp_path):
    from mlflow import MlflowClient

    store = f"sqlite:///{project.root / 'mlflow.db'}"
    MlflowClient(tracking_uri=store).create_experiment("genebench-ui-check")
    elsewhere = project.root / "notebooks"  # the store resolves to the root from any subdirectory
    elsewhere.mkdir()
    with genebench_ui(elsewhere, tmp_path / "ui.log") as url:
        response = requests.post(f"{url}/ajax-api/2.0/mlflow/experiments/search", json={"max_results": 10}, timeout=30)
    assert response.status_code == 200
    names = {e["name"] for e in response.json()["experiments"]}
    assert "genebench-ui-check" in names


def test_ui_refuses_zero_workers_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmark", "ui", "--workers", "0"], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["genebench ui: error: argument --workers: must be at least 1, got 0"]
