"""One small evaluated project shared by the MLflow tests (evaluation, tracking, registry, serving).

Built once per test session (module-level cache): a 60 x 30 matrix with strong linear
gene-gene structure, 3 folds, top_k 5, 2 epochs, tiny models, its own sqlite MLflow store
(`<root>/mlflow.db`, artifacts in `<root>/mlruns`). Evaluated through the CLI:

- single: ridge, mean, attention_lstm (steps >= features, so tokens are genes); the `mean`
  evaluate runs in a `python -c` that reports whether TensorFlow or Keras got imported
- multi: ridge

The registry tests promote on `single` (ridge better than mean), each from a registry
emptied of `genebench-toy-single`; the serving test forces the attention_lstm to
champion first. Neither depends on the other's order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from conftest import cli_env, run_cli

N_SAMPLES, N_GENES, RANK = 60, 30, 3

PARAMS = {
    "data": {"dir": "data"},
    "datasets": {"toy": {"transform": "none"}},
    "task": {"top_k": 5},
    "split": {"test_size": 0.25, "folds": 3, "seed": 1},
    "training": {"max_epochs": 2, "batch_size": 16, "patience": 2, "seed": 7},
    "models": {
        "mean": {"defaults": {}},
        "ridge": {"defaults": {"alpha": 1.0}, "search_space": {"alpha": {"type": "float", "low": 0.01, "high": 100.0, "log": True}}},
        "attention_lstm": {"defaults": {"steps": 64, "units": 8, "layers": 1, "attention_units": 4,
                                        "dropout": 0.0, "learning_rate": 0.01, "batch_size": 16}},
    },
    "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "gbtest"},
    "promotion": {"enabled": True, "candidate": "ridge", "min_improvement": 0.01},
}

EVALUATIONS = (("single", "ridge"), ("single", "mean"), ("single", "attention_lstm"), ("multi", "ridge"))

TF_PROBE = """
import sys
from benchmark.config import load_config
from benchmark.evaluation import evaluate
evaluate(load_config().for_dataset("toy"), "single", "mean")
print("HEAVY_MODULES=" + ",".join(sorted(m for m in ("tensorflow", "keras") if m in sys.modules)))
"""


@dataclass
class SharedProject:
    root: Path
    tf_probe_output: str = ""

    @property
    def tracking_uri(self) -> str:
        return "sqlite:///" + str(self.root / "mlflow.db")

    def config(self, params: Path | None = None):
        """The project's params bound to its one dataset, `toy`."""
        from benchmark.config import load_config

        return load_config(params or self.root / "params.yaml", root=self.root).for_dataset("toy")

    def metrics(self, task: str, arch: str) -> dict:
        return json.loads((self.root / "metrics" / "toy" / task / f"{arch}.json").read_text())

    def evaluation(self, task: str, arch: str) -> Path:
        return self.root / "artifacts" / "evaluation" / "toy" / task / arch

    def run_record(self, task: str, arch: str) -> dict:
        return json.loads((self.evaluation(task, arch) / "run.json").read_text())

    def cli(self, *args: str, timeout: float = 300):
        return run_cli(self.root, *args, timeout=timeout)


def write_linear_dataset(data_dir: Path, seed: int = 0, counts: bool = False) -> None:
    """Linear structure on the log scale; `counts` writes expm1 of it (raw, for log1p)."""
    from benchmark.data.canonical import Dataset, write_dataset

    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((N_SAMPLES, RANK))
    W = rng.standard_normal((RANK, N_GENES))
    X = 6.0 + Z @ W + 0.05 * rng.standard_normal((N_SAMPLES, N_GENES))
    if counts:
        X = np.expm1(np.clip(X, 0.0, None))
    write_dataset(Dataset(X=X.astype(np.float32), genes=[f"GENE{i:02d}" for i in range(N_GENES)],
                          samples=[f"cell{i:02d}" for i in range(N_SAMPLES)], provenance={"source": "test"}), data_dir)


def _check(result, what: str) -> None:
    rc = getattr(result, "rc", getattr(result, "returncode", None))
    assert rc == 0, f"{what} failed ({rc}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


_CACHE: dict[str, SharedProject] = {}


def shared_project(tmp_path_factory) -> SharedProject:
    if "project" in _CACHE:
        return _CACHE["project"]
    root = tmp_path_factory.mktemp("mlflow-project") / "project"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    write_linear_dataset(root / "data" / "toy")
    env = cli_env()
    for cmd in (["git", "init", "-q"], ["git", "add", "params.yaml"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "params"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    project = SharedProject(root)
    _check(run_cli(root, "prepare"), "prepare")
    # The first evaluate creates the MLflow store alone: two processes creating one SQLite
    # schema at once race in MLflow's migrations.
    _check(run_cli(root, "evaluate", "--task", "single", "--arch", "ridge"), "evaluate single ridge")

    # The deep model trains in the background while the other baselines run.
    deep_log = root.parent / "evaluate-attention_lstm.log"  # a file: a full pipe would stall it
    with deep_log.open("w") as log:
        deep = subprocess.Popen([sys.executable, "-m", "benchmark", "evaluate", "--task", "single", "--arch", "attention_lstm"],
                                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for task, arch in EVALUATIONS:
            if arch == "attention_lstm" or (task, arch) == ("single", "ridge"):
                continue
            if (task, arch) == ("single", "mean"):
                result = subprocess.run([sys.executable, "-c", TF_PROBE], cwd=root, env=env,
                                        capture_output=True, text=True, timeout=300)
                project.tf_probe_output = result.stdout
            else:
                result = run_cli(root, "evaluate", "--task", task, "--arch", arch)
            _check(result, f"evaluate {task} {arch}")
    except BaseException:
        deep.kill()  # the one process this helper started; do not leave it training
        deep.wait()
        raise
    deep.wait(timeout=600)
    assert deep.returncode == 0, f"evaluate single attention_lstm failed:\n{deep_log.read_text()[-4000:]}"
    _CACHE["project"] = project
    return project
