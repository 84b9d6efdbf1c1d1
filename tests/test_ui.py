"""`genebench ui` serves the MLflow UI on 127.0.0.1 over the project's own store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from conftest import cli_env, free_port

pytestmark = pytest.mark.slow


def test_ui_serves_the_project_store_on_loopback(project):
    from mlflow import MlflowClient

    store = f"sqlite:///{project.root / 'mlflow.db'}"
    MlflowClient(tracking_uri=store).create_experiment("genebench-ui-check")
    port = free_port()
    elsewhere = project.root / "notebooks"  # the store resolves to the root from any subdirectory
    elsewhere.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "benchmark", "ui", "--port", str(port)], cwd=elsewhere,
                               env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        response = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                response = requests.post(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search",
                                         json={"max_results": 10}, timeout=30)
                break
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.5)
        assert response is not None, f"ui did not answer on 127.0.0.1:{port}"
        assert response.status_code == 200
        names = {e["name"] for e in response.json()["experiments"]}
        assert "genebench-ui-check" in names
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
