"""`genebench run`: the two tasks side by side give the bits they give one after the other;
a mistake both meet is one line; a signal stops both; every fit runs on training.threads."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import optuna
import yaml

from conftest import cli_env
from mlflow_project import write_linear_dataset

TINY = {
    "task": {"top_k": 3},
    "split": {"test_size": 0.25, "folds": 4, "seed": 3},
    "training": {"max_epochs": 2, "batch_size": 16, "patience": 2, "seed": 5},
    "tuning": {"n_trials": 2, "n_startup_trials": 1, "folds": 1, "pruner": "none"},
    "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "run-stage"},
}
GRU = {"defaults": {"steps": 4, "token_units": 4, "units": 4, "layers": 1, "dropout": 0.0, "learning_rate": 0.003},
       "search_space": {"units": {"type": "categorical", "choices": [4, 8]}}}


def _tiny(project, **tuning) -> None:
    """TINY, with a small gru in place of the project's own (search space included)."""
    project.set_params({**TINY, "tuning": {**TINY["tuning"], **tuning}})
    raw = yaml.safe_load(project.params_path.read_text())
    raw["models"]["gru"] = GRU
    project.params_path.write_text(yaml.safe_dump(raw, sort_keys=False))


def _outputs(root) -> dict:
    """What the stage wrote that must not depend on how its tasks were run."""
    found = {}
    for task in ("single", "multi"):
        metrics = json.loads((root / "metrics" / "toy" / task / "gru.json").read_text())
        metrics.pop("mlflow_run_id")
        tuned = json.loads((root / "artifacts" / "tuning" / "toy" / task / "gru.json").read_text())
        found[task] = (metrics, tuned["best_params"], tuned["best_value"])
    return found


def test_tasks_side_by_side_give_the_bits_they_give_one_after_the_other(project):
    _tiny(project)
    write_linear_dataset(project.data_dir)
    assert project.run("prepare").rc == 0

    side = project.run("run", "--arch", "gru", "--jobs", "2")
    assert side.rc == 0, side.stderr
    lines = side.stdout.splitlines()
    assert lines and all(line.startswith(("[single] ", "[multi] ")) for line in lines), side.stdout
    for task in ("single", "multi"):
        assert any(line.startswith(f"[{task}] evaluate toy/{task}/gru: cv rmse") for line in lines), side.stdout
    side_by_side = _outputs(project.root)

    for stale in ("optuna.db", "mlflow.db", "artifacts/tuning", "artifacts/evaluation", "metrics"):
        path = project.root / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    serial = project.run("run", "--arch", "gru", "--jobs", "1")
    assert serial.rc == 0, serial.stderr
    assert not any(line.startswith("[") for line in serial.stdout.splitlines()), serial.stdout
    assert _outputs(project.root) == side_by_side


def test_a_mistake_both_tasks_meet_is_one_line_and_exit_2(project):
    _tiny(project)
    write_linear_dataset(project.data_dir)  # but no prepare
    result = project.run("run", "--arch", "gru", "--jobs", "2")
    assert result.rc == 2
    assert len(result.stderr_lines) == 1, result.stderr
    assert result.stderr_lines[0].startswith("genebench: error: ") and "genebench prepare" in result.stderr

    bad = project.run("run", "--arch", "gru", "--jobs", "0")
    assert bad.rc == 2 and bad.stderr_lines == ["genebench: error: --jobs must be at least 1, got 0"]


def test_sigterm_stops_both_tasks_at_their_next_epoch(project):
    _tiny(project, n_trials=100000)
    write_linear_dataset(project.data_dir)
    assert project.run("prepare").rc == 0
    stage = subprocess.Popen([sys.executable, "-m", "benchmark", "run", "--arch", "gru", "--jobs", "2"],
                             cwd=project.root, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        started = set()
        for line in stage.stdout:  # both studies are past their first trial
            if " trial " in line:
                started.add(line.split()[0])
            if started == {"[single]", "[multi]"}:
                break
        stage.send_signal(signal.SIGTERM)
        rc = stage.wait(timeout=120)
        stderr = stage.stderr.read()
    finally:
        stage.kill()
    assert rc == 130 and stderr.strip().splitlines() == ["genebench: interrupted"], stderr
    storage = f"sqlite:///{project.root / 'optuna.db'}"
    summaries = optuna.get_all_study_summaries(storage)
    assert {s.study_name.split("-")[1] for s in summaries} == {"single", "multi"}
    for summary in summaries:  # each task's study stopped itself: no trial left RUNNING
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        assert optuna.trial.TrialState.RUNNING not in states and len(states) < 100000


def test_a_fit_runs_tensorflow_and_blas_on_training_threads():
    code = """
import numpy as np
from benchmark.config import TrainingParams
from benchmark.training import Regressor

training = TrainingParams(max_epochs=1, batch_size=8, patience=1, threads=1).model_dump()
hp = {"layers": 1, "units": 4, "dropout": 0.0, "learning_rate": 0.01}
rng = np.random.default_rng(0)
Regressor("dnn", hp, training).fit(rng.normal(size=(40, 6)), rng.normal(size=(40, 2)))
import tensorflow as tf
from threadpoolctl import threadpool_info
print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads(),
      sorted({pool["num_threads"] for pool in threadpool_info()}))
"""
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "1 1 [1]", result.stdout
