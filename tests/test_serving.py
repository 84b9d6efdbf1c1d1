"""The champion serves: `mlflow models serve -m models:/genebench-toy-single@champion --env-manager local`."""

from __future__ import annotations

import json
import shlex
import subprocess

import numpy as np
import pandas as pd
import pytest
import requests

from benchmark import tracking
from benchmark.data.prepare import load_task
from benchmark.registry import promote
from conftest import REPO, VENV_BIN, cli_env, free_port, server_process
from mlflow_project import shared_project

pytestmark = pytest.mark.slow
STARTUP_SECONDS = 150


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    return shared_project(tmp_path_factory)


@pytest.fixture(scope="module")
def server(evaluated, tmp_path_factory):
    # The attention model (custom Keras layer) is the one that must load in a fresh process.
    assert promote(evaluated.config(), task="single", candidate="attention_lstm", force=True) == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/genebench-toy-single@champion",
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with server_process(argv, evaluated.root, cli_env(MLFLOW_TRACKING_URI=evaluated.tracking_uri), f"{url}/ping",
                        tmp_path_factory.mktemp("serve") / "serve.log", startup_seconds=STARTUP_SECONDS):
        yield url


@pytest.fixture(scope="module")
def held_out(evaluated):
    config = evaluated.config()
    data = load_task(config, "single", held_out=True)
    return data, tracking.raw_features(config, data, "test")


def _post(url: str, frame: pd.DataFrame) -> requests.Response:
    payload = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False, double_precision=15))}
    return requests.post(f"{url}/invocations", json=payload, timeout=60)


def test_champion_serves_the_pyfunc_predictions(server, evaluated, held_out):
    data, frame = held_out
    shuffled = frame[list(reversed(frame.columns))].assign(EXTRA_GENE=0.0)
    response = _post(server, shuffled)
    assert response.status_code == 200, response.text
    served = pd.DataFrame(response.json()["predictions"])
    assert list(served.columns) == data.target_genes and len(served) == len(frame)
    table = pd.read_csv(evaluated.evaluation("single", "attention_lstm") / "test_predictions.csv", float_precision="round_trip")
    expected = table.pivot(index="sample", columns="gene", values="predicted").loc[frame.index, data.target_genes]
    np.testing.assert_allclose(served.to_numpy(), expected.to_numpy(), rtol=1e-5, atol=1e-5)


def test_missing_gene_columns_get_a_readable_4xx(server, held_out):
    data, frame = held_out
    dropped = data.feature_genes[:2]
    response = _post(server, frame.drop(columns=dropped))
    assert 400 <= response.status_code < 500
    message = response.json()["message"]
    # MLflow's scoring server prefixes the model's message with a (truncated) print of the input.
    assert message.endswith(f"input is missing 2 of the model's {len(data.feature_genes)} "
                            f"feature gene columns: {dropped[0]}, {dropped[1]}")


# --- README's serving example, run as written ------------------------------------------

README_MARKER = "<!-- serving-example -->"


def _readme_serving_lines(dataset: str, port: int) -> list[str]:
    """The lines of README's serving block, its dataset and port swapped for this project's."""
    text = (REPO / "README.md").read_text()
    block = text.split(README_MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.replace("pbmc68k", dataset).replace("5001", str(port)) for line in block.splitlines() if line.strip()]


def test_readme_serving_example_as_written_gets_http_200(evaluated, tmp_path):
    assert promote(evaluated.config(), task="multi", candidate="ridge", force=True) == 0
    port = free_port()
    export, example, serve, wait, send = _readme_serving_lines("toy", port)
    assert serve.startswith("mlflow models serve") and serve.endswith("&") and "serve-example" in example
    env = cli_env()
    request_file = evaluated.root / "request.json"
    try:
        made = subprocess.run(["bash", "-ec", "\n".join([export, example])], cwd=evaluated.root, env=env,
                              capture_output=True, text=True, timeout=300)
        assert made.returncode == 0 and made.stderr == "", made.stderr
        request = json.loads(request_file.read_text())["dataframe_split"]
        data = load_task(evaluated.config(), "multi", held_out=True)
        assert request["columns"] == data.feature_genes and len(request["data"]) == 2

        argv = shlex.split(serve.removesuffix("&"))
        with server_process(argv, evaluated.root, cli_env(MLFLOW_TRACKING_URI="sqlite:///mlflow.db"),
                            f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", startup_seconds=STARTUP_SECONDS):
            sent = subprocess.run(["bash", "-ec", "\n".join([export, wait, send])], cwd=evaluated.root, env=env,
                                  capture_output=True, text=True, timeout=120)
            assert sent.returncode == 0, sent.stderr
            served = pd.DataFrame(json.loads(sent.stdout)["predictions"])
            assert list(served.columns) == data.target_genes and len(served) == 2
            status = requests.post(f"http://127.0.0.1:{port}/invocations", data=request_file.read_bytes(),
                                   headers={"Content-Type": "application/json"}, timeout=60).status_code
            assert status == 200
    finally:
        request_file.unlink(missing_ok=True)

