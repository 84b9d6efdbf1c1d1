"""The tune stage on a tiny synthetic project: resume, workers, pruning, MLflow, leakage.

One project (90 samples x 30 genes, 3 CV folds, tuning over 2 of them) is prepared once
per module; each test uses its own Optuna storage file so studies never mix. Baselines
(ridge, knn: no TensorFlow) carry most tests; one tiny `dnn` study, killed with SIGKILL
mid-trial and resumed, carries the pruning and heartbeat checks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import benchmark as benchmark_module
from benchmark.data.canonical import Dataset, write_dataset

VENV_BIN = Path(sys.executable).parent
PARAMS = {
    "datasets": {"toy": {"transform": "none"}},
    "task": {"top_k": 3},
    "split": {"test_size": 0.2, "folds": 4, "seed": 1},
    # No ridge base: a learning rate of 1e-7 then leaves the network untrained, which the
    # pruner must catch (on a base, such a trial scores as well as the base does).
    "training": {"max_epochs": 3, "batch_size": 16, "patience": 3, "base": "none"},
    "tuning": {"n_trials": 3, "n_startup_trials": 1, "folds": 2, "pruner": "median",
               "heartbeat_interval": 1, "grace_period": 2},
    "models": {
        "mean": {"defaults": {}, "search_space": {}},
        "ridge": {"defaults": {"alpha": 1.0},
                  "search_space": {"alpha": {"type": "float", "low": 0.01, "high": 100.0, "log": True}}},
        "knn": {"defaults": {"k": 5}, "search_space": {"k": {"type": "int", "low": 2, "high": 12}}},
        # Most of this learning-rate range cannot fit in 3 epochs: the median pruner has
        # clearly worse trials to stop.
        "dnn": {"defaults": {"layers": 1, "units": 8, "dropout": 0.0, "learning_rate": 0.01, "batch_size": 16},
                "search_space": {"learning_rate": {"type": "float", "low": 1e-7, "high": 0.03, "log": True}}},
    },
}


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GENEBENCH_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def genebench(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "genebench"), *args], cwd=project, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def write_params(path: Path, **sections) -> Path:
    params = json.loads(json.dumps(PARAMS))
    for key, value in sections.items():
        params[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def make_project(root: Path) -> Path:
    rng = np.random.default_rng(0)
    n, g = 90, 30
    X = rng.normal(size=(n, 3)) @ rng.normal(size=(3, g)) + 0.3 * rng.normal(size=(n, g))
    write_dataset(Dataset(X.astype(np.float32), [f"g{i}" for i in range(g)], [f"s{i}" for i in range(n)], {}),
                  root / "data" / "toy")
    write_params(root / "params.yaml")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for args in (["init", "-q"], ["add", "params.yaml"], ["commit", "-q", "-m", "params"]):
        subprocess.run(git + args, cwd=root, check=True, capture_output=True)
    result = genebench(root, "prepare")
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def scratch():
    """A private temporary directory: pytest's own basetemp is pruned by concurrent sessions."""
    with tempfile.TemporaryDirectory(prefix="genebench-tuning-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module")
def project(scratch) -> Path:
    root = scratch / "project"
    root.mkdir()
    return make_project(root)


def trials_of(db: Path) -> list[dict]:
    """Trials of the only study in an Optuna SQLite file, read with plain sqlite3."""
    with sqlite3.connect(db, timeout=30) as con:
        rows = con.execute("SELECT trial_id, number, state FROM trials ORDER BY number").fetchall()
        out = []
        for trial_id, number, state in rows:
            params = dict(con.execute("SELECT param_name, param_value FROM trial_params WHERE trial_id = ?",
                                      (trial_id,)).fetchall())
            value = con.execute("SELECT value FROM trial_values WHERE trial_id = ?", (trial_id,)).fetchone()
            steps = con.execute("SELECT COUNT(*) FROM trial_intermediate_values WHERE trial_id = ?",
                                (trial_id,)).fetchone()[0]
            out.append({"number": number, "state": state, "params": params,
                        "value": value[0] if value else None, "steps": steps})
    return out


def states(trials: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    return counts


def child_runs(project: Path, saved: dict) -> list:
    """MLflow child runs of the study's parent run (found by its study-name tag; the same
    name in another storage is another study with its own parent run)."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("genebench-toy-multi")
    parents = client.search_runs([experiment.experiment_id],
                                 f"tags.`genebench.study_name` = '{saved['study_name']}'"
                                 f" and tags.storage = '{saved['storage']}'")
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0]
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=1000)
    return parent, children


def result_of(project: Path, arch: str) -> dict:
    return json.loads((project / "artifacts" / "tuning" / "toy" / "multi" / f"{arch}.json").read_text())


# -- configuration errors and the empty space ---------------------------------------


def test_malformed_search_space_exits_2_with_one_line_naming_the_key(project):
    bad_bounds = write_params(project / "bad_bounds.yaml", models={
        **PARAMS["models"], "knn": {"defaults": {"k": 5}, "search_space": {"k": {"type": "int", "low": 2}}}})
    unknown = write_params(project / "unknown.yaml", models={
        **PARAMS["models"], "ridge": {"defaults": {"alpha": 1.0},
                                      "search_space": {"alpah": {"type": "float", "low": 0.1, "high": 1.0}}}})
    for params, arch, key in ((bad_bounds, "knn", "models.knn.search_space.k"),
                              (unknown, "ridge", "models.ridge.search_space.alpah")):
        result = genebench(project, "tune", "--task", "multi", "--arch", arch, "--params", str(params))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and key in lines[0] and params.name in lines[0], result.stderr
        assert "Traceback" not in result.stderr


def test_mean_records_its_empty_space_without_trials_or_tensorflow(project):
    code = ("import sys; from benchmark.cli import main; rc = main(['tune', '--task', 'multi', '--arch', 'mean']);"
            "assert 'tensorflow' not in sys.modules and 'optuna' not in sys.modules, 'heavy import'; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], cwd=project, env=_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    saved = result_of(project, "mean")
    assert saved["best_params"] == {} and saved["n_complete"] == 0 and saved["best_value"] is None


# -- studies: resume, top-up, new space, MLflow ---------------------------------------


def run_cli(project: Path, *args: str, monkeypatch) -> int:
    """`genebench ARGS` in this process (cwd = project): no interpreter start-up per call."""
    import mlflow

    from benchmark.cli import main

    for name in ("MLFLOW_TRACKING_URI", "GENEBENCH_ROOT"):
        monkeypatch.delenv(name, raising=False)
    previous = mlflow.get_tracking_uri()
    with monkeypatch.context() as patch:
        patch.chdir(project)
        try:
            return main(list(args))
        finally:
            mlflow.set_tracking_uri(previous)
            os.environ.pop("MLFLOW_TRACKING_URI", None)  # set_tracking_uri exports it; later tests read it as an override


def test_rerun_resumes_the_study_and_a_changed_space_opens_a_new_one(project, monkeypatch):
    db = project / "ridge.db"
    code = ("import sys; from benchmark.cli import main; rc = main(sys.argv[1:]);"
            "assert 'tensorflow' not in sys.modules, 'ridge imported TensorFlow'; sys.exit(rc)")
    argv = ["tune", "--task", "multi", "--arch", "ridge", "--storage", f"sqlite:///{db.name}"]
    first = subprocess.run([sys.executable, "-c", code, *argv], cwd=project, env=_env(),
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "trial 2 complete" in first.stdout and "[3/3 complete]" in first.stdout
    saved = result_of(project, "ridge")
    before = trials_of(db)
    assert states(before) == {"COMPLETE": 3}
    assert saved["n_complete"] == 3 and saved["best_value"] == min(t["value"] for t in before)
    assert saved["storage"] == f"sqlite:///{db}" and saved["study_name"].startswith("toy-multi-ridge-")

    parent, children = child_runs(project, saved)
    assert len(children) == 3
    assert {c.data.tags["genebench.trial_state"] for c in children} == {"COMPLETE"}
    assert parent.data.metrics["best_value"] == pytest.approx(saved["best_value"])
    assert parent.data.tags["best.alpha"] == str(saved["best_params"]["alpha"])
    # Study runs carry the commit like evaluate runs, and every run kind names params alike.
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert parent.data.tags["git_commit"] == head and parent.data.tags["git_dirty"] == "false"
    from benchmark.tracking import TRAINING_PARAMS

    assert {f"training.{k}" for k in TRAINING_PARAMS} <= set(parent.data.params)
    assert parent.data.params["training.max_epochs"] == "3" and parent.data.params["tuning.folds"] == "2"
    assert not {"max_epochs", "tuning_folds"} & set(parent.data.params)
    for child in children:
        assert set(child.data.params) == {"hp.alpha"}
    # optuna-dashboard: the objective has a name and each trial links its MLflow run.
    import optuna

    study = optuna.load_study(study_name=saved["study_name"], storage=f"sqlite:///{db}")
    assert study.metric_names == ["rmse"]
    by_number = {c.data.tags["genebench.trial_number"]: c.info.run_id for c in children}
    assert {str(t.number): t.user_attrs["mlflow_run_id"] for t in study.trials} == by_number
    import mlflow

    artifacts = {a.path for a in mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").list_artifacts(
        parent.info.run_id, "optuna")}
    assert "optuna/optimization_history.png" in artifacts

    assert run_cli(project, *argv, monkeypatch=monkeypatch) == 0
    assert trials_of(db) == before  # same study, nothing to top up
    assert result_of(project, "ridge") == saved

    assert run_cli(project, *argv, "--trials", "4", monkeypatch=monkeypatch) == 0
    after = trials_of(db)
    assert states(after) == {"COMPLETE": 4} and after[:3] == before
    assert len(child_runs(project, saved)[1]) == 4

    wider = write_params(project / "wider.yaml", models={
        **PARAMS["models"], "ridge": {"defaults": {"alpha": 1.0},
                                      "search_space": {"alpha": {"type": "float", "low": 0.001, "high": 1000.0,
                                                                 "log": True}}}})
    assert run_cli(project, *argv, "--params", str(wider), monkeypatch=monkeypatch) == 0
    assert result_of(project, "ridge")["study_name"] != saved["study_name"]
    with sqlite3.connect(db) as con:
        assert len(con.execute("SELECT study_name FROM studies").fetchall()) == 2


def test_two_workers_reach_n_trials_and_report_the_best_of_the_first_n(project):
    db = project / "workers.db"
    result = genebench(project, "tune", "--task", "multi", "--arch", "knn", "--workers", "2", "--trials", "5",
                       "--storage", f"sqlite:///{db.name}")
    assert result.returncode == 0, result.stderr
    trials = trials_of(db)
    # Each worker stops once 5 are complete: the other's trial in flight may add one.
    assert 5 <= states(trials)["COMPLETE"] <= 6 and "RUNNING" not in states(trials)
    saved = result_of(project, "knn")
    first = [t for t in trials if t["state"] == "COMPLETE"][:5]
    assert saved["best_value"] == min(t["value"] for t in first)
    _, children = child_runs(project, saved)
    assert len(children) == len(trials)


def test_ctrl_c_stops_workers_and_leaves_no_running_trial(project):
    db = project / "interrupted.db"
    proc = subprocess.Popen([str(VENV_BIN / "genebench"), "tune", "--task", "multi", "--arch", "ridge",
                             "--workers", "2", "--trials", "500", "--storage", f"sqlite:///{db.name}"],
                            cwd=project, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if db.exists() and states(trials_of(db)).get("COMPLETE", 0) >= 2:
                    break
            except sqlite3.OperationalError:
                pass
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole process group
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    counts = states(trials_of(db))
    assert "RUNNING" not in counts and 2 <= counts["COMPLETE"] < 500


def test_poisoned_test_split_does_not_change_tuning(project, scratch, monkeypatch):
    poisoned = scratch / "poisoned"
    shutil.copytree(project, poisoned, ignore=shutil.ignore_patterns("*.db", "mlruns", "artifacts"))
    shutil.copytree(project / "artifacts" / "prepared" / "toy", poisoned / "artifacts" / "prepared" / "toy")
    test_rows = json.loads((poisoned / "artifacts" / "prepared" / "toy" / "split.json").read_text())["test"]
    X = np.load(poisoned / "data" / "toy" / "expression.npy")
    X[test_rows] = np.nan
    np.save(poisoned / "data" / "toy" / "expression.npy", X)

    argv = ("tune", "--task", "multi", "--arch", "ridge", "--storage", "sqlite:///leak.db")
    assert run_cli(project, *argv, monkeypatch=monkeypatch) == 0
    assert run_cli(poisoned, *argv, monkeypatch=monkeypatch) == 0
    clean, dirty = result_of(project, "ridge"), result_of(poisoned, "ridge")
    # The held-out rows are all NaN, yet not a single trial's value changed.
    assert dirty["best_value"] == clean["best_value"]
    assert dirty["best_params"] == clean["best_params"]
    assert [t["value"] for t in trials_of(poisoned / "leak.db")] == [t["value"] for t in trials_of(project / "leak.db")]


# -- a deep study: SIGKILL mid-trial, resume, heartbeat, pruning -----------------------


@pytest.fixture(scope="module")
def killed_and_resumed(project):
    """`tune dnn` killed with SIGKILL while a trial runs (after one completed), then rerun."""
    db = project / "deep.db"
    argv = ("tune", "--task", "multi", "--arch", "dnn", "--trials", "6", "--storage", f"sqlite:///{db.name}")
    proc = subprocess.Popen([str(VENV_BIN / "genebench"), *argv], cwd=project, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    before = []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    before = trials_of(db)
                except sqlite3.OperationalError:  # tables not created yet
                    before = []
                counts = states(before)
                if counts.get("COMPLETE", 0) >= 1 and counts.get("RUNNING", 0) >= 1:
                    break
            time.sleep(0.1)
        assert proc.poll() is None, f"tune ended before it could be killed: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = trials_of(db)
    resumed = genebench(project, *argv)
    assert resumed.returncode == 0, resumed.stderr
    return {"db": db, "killed": killed, "resumed": resumed, "after": trials_of(db),
            "saved": result_of(project, "dnn")}


def test_resume_after_sigkill_reaches_n_trials_and_keeps_finished_trials(killed_and_resumed):
    killed, after = killed_and_resumed["killed"], killed_and_resumed["after"]
    assert states(killed).get("RUNNING", 0) == 1
    assert states(after)["COMPLETE"] == 6 and "RUNNING" not in states(after)
    for old in killed:
        if old["state"] == "COMPLETE":
            assert after[old["number"]] == old
    interrupted = next(t for t in killed if t["state"] == "RUNNING")
    assert after[interrupted["number"]]["state"] == "FAIL"
    saved = killed_and_resumed["saved"]
    assert saved["n_complete"] == 6 and saved["n_failed"] >= 1


def test_pruned_trials_are_recorded_as_pruned(killed_and_resumed):
    after, saved = killed_and_resumed["after"], killed_and_resumed["saved"]
    pruned = [t for t in after if t["state"] == "PRUNED"]
    assert pruned, after
    assert saved["n_pruned"] == len(pruned)
    # Pruned trials stop before their 2 folds x 3 epochs, most of them well before (the
    # median pruner may also act on a trial's last report).
    assert all(t["steps"] <= 2 * 3 for t in pruned)
    assert sum(t["steps"] < 2 * 3 for t in pruned) > len(pruned) / 2, [t["steps"] for t in pruned]
    assert "pruned" in killed_and_resumed["resumed"].stdout
    assert len(pruned) <= saved["n_complete"]  # at most half the trials are pruned
    # TensorFlow's start-up chatter (absl's pre-init notice, CUDA probes) is not shown.
    assert "absl::InitializeLog" not in killed_and_resumed["resumed"].stderr
    assert "cuInit" not in killed_and_resumed["resumed"].stderr


def test_a_study_whose_every_new_trial_is_worse_still_reaches_its_complete_trials(project):
    """The median pruner judges against complete trials only, the survivors of earlier
    pruning: here each trial learns worse than all before it, so without a bound no trial
    after the first two would ever complete and `tune` would never end."""
    import optuna

    from benchmark.config import load_config
    from benchmark.tuning.study import make_pruner

    config = load_config(project / "params.yaml", root=project).for_dataset("toy")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), pruner=make_pruner(config))

    def objective(trial):
        for step in range(6):
            trial.report(float(trial.number + 6 - step), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(trial.number)

    def enough(study, trial):
        if n_complete(study) >= 6 or len(study.trials) >= 100:
            study.stop()

    def n_complete(study):
        return len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))

    study.optimize(objective, callbacks=[enough])
    pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert n_complete(study) == 6 and 1 <= len(pruned) <= 6 and len(study.trials) <= 12


def test_every_trial_has_one_mlflow_child_run_with_its_state(project, killed_and_resumed):
    after, saved = killed_and_resumed["after"], killed_and_resumed["saved"]
    parent, children = child_runs(project, saved)
    assert len(children) == len(after)
    by_number = {int(c.data.tags["genebench.trial_number"]): c for c in children}
    for trial in after:
        run = by_number[trial["number"]]
        assert run.data.tags["genebench.trial_state"] == trial["state"]
        assert run.info.status == ("FAILED" if trial["state"] == "FAIL" else "FINISHED")
    complete = [by_number[t["number"]] for t in after if t["state"] == "COMPLETE"]
    assert all("value" in run.data.metrics and "val_rmse" in run.data.metrics for run in complete)
    assert parent.data.metrics["n_pruned"] == saved["n_pruned"]
    # Each trial that started its run links it (one killed before starting it cannot:
    # a finished trial's attrs are frozen); the learning rate is logged as hp.*.
    import optuna

    study = optuna.load_study(study_name=saved["study_name"], storage=f"sqlite:///{killed_and_resumed['db']}")
    linked = {t.number: t.user_attrs["mlflow_run_id"] for t in study.trials if "mlflow_run_id" in t.user_attrs}
    assert {t.number for t in study.trials if t.state.name == "COMPLETE"} <= set(linked)
    assert all(by_number[number].info.run_id == run_id for number, run_id in linked.items())
    # (A run whose trial was SIGKILLed between creating it and logging its params has none.)
    assert all(set(run.data.params) == {"hp.learning_rate"} for run in complete)


# -- storage forms ---------------------------------------------------------------------


def test_storage_passwords_are_masked():
    from benchmark.config import mask_url

    assert mask_url("postgresql://tuner:s3cret@db.example.org:5432/optuna") == \
        "postgresql://tuner:***@db.example.org:5432/optuna"
    assert mask_url("sqlite:////data/optuna.db") == "sqlite:////data/optuna.db"
    assert mask_url("/shared/optuna.journal") == "/shared/optuna.journal"
    assert mask_url("postgresql://team@db.example.org/mlflow") == "postgresql://team@db.example.org/mlflow"


def test_journal_file_storage_holds_a_resumable_study(project, monkeypatch):
    argv = ("tune", "--task", "multi", "--arch", "ridge", "--storage", "studies/ridge.journal", "--trials", "2")
    assert run_cli(project, *argv, monkeypatch=monkeypatch) == 0
    saved = result_of(project, "ridge")
    assert saved["n_complete"] == 2 and saved["storage"] == str(project / "studies" / "ridge.journal")
    assert run_cli(project, *argv[:-1], "3", monkeypatch=monkeypatch) == 0
    saved = result_of(project, "ridge")
    assert saved["n_complete"] == 3
    # Same study name as the SQLite ridge study of another test, yet its own parent run.
    assert len(child_runs(project, saved)[1]) == 3


def test_a_change_to_the_training_code_starts_a_new_study(tmp_path):
    """Study names hash the code that trains a model, so an edited training.py never
    returns the old code's trials."""
    shutil.copytree(Path(benchmark_module.__file__).parent, tmp_path / "benchmark",
                    ignore=shutil.ignore_patterns("__pycache__"))
    probe = "from benchmark.tuning import code_digest; print(code_digest())"
    digest = lambda: subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                                    check=True, env={**os.environ, "PYTHONPATH": str(tmp_path)}).stdout.strip()
    before = digest()
    training = tmp_path / "benchmark" / "training.py"
    training.write_text(training.read_text() + "\n# a change\n")
    after = digest()
    (tmp_path / "benchmark" / "report" / "markdown.py").write_text("# the report does not train models\n")
    assert before != after == digest()


def test_trials_of_dead_processes_fail_and_live_ones_stay(tmp_path):
    """A trial whose owner pid is gone fails at once; one asked but never claimed (killed
    before its first heartbeat) fails once its grace period has passed; a live one stays."""
    import optuna

    from benchmark.tuning import fail_dead_trials, host_id

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'stale.db'}", heartbeat_interval=60,
                                         grace_period=120)
    study = optuna.create_study(storage=storage)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead, unclaimed, alive = study.ask(), study.ask(), study.ask()
    for trial, pid in ((dead, int(gone.stdout)), (alive, os.getpid())):
        trial.set_user_attr("host", host_id())
        trial.set_user_attr("pid", pid)
    assert fail_dead_trials(study, grace_period=1.0) == [dead.number]
    time.sleep(1.2)
    assert fail_dead_trials(study, grace_period=1.0) == [unclaimed.number]
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL", "RUNNING"]


# -- where a study starts and what it proposes -------------------------------------------


def test_every_study_starts_from_the_defaults_and_new_studies_propose_differently(project, monkeypatch):
    """Trial 0 of every study is the architecture's defaults; after it, two new studies with
    the same tuning.seed (ridge on the two tasks) propose different values: the sampler's
    seed derives from the study's identity, not only from the seed and the trial count."""
    proposals = {}
    for task in ("single", "multi"):
        db = project / f"start-{task}.db"
        argv = ["tune", "--task", task, "--arch", "ridge", "--storage", f"sqlite:///{db.name}", "--trials", "3"]
        assert run_cli(project, *argv, monkeypatch=monkeypatch) == 0
        trials = trials_of(db)
        assert [t["number"] for t in trials] == [0, 1, 2]
        assert trials[0]["params"] == {"alpha": 1.0}  # models.ridge.defaults, as Optuna stores it
        proposals[task] = [t["params"]["alpha"] for t in trials[1:]]
    assert proposals["single"] != proposals["multi"]
    assert all(0.01 <= a <= 100.0 for values in proposals.values() for a in values)


def test_an_edit_of_the_training_code_starts_a_new_study_that_proposes_the_same_values(project, monkeypatch):
    """The study name carries the training code's digest, so trials of old code are never
    mixed into a new study; the sampler's seed leaves it out, so the new study draws what
    the old one drew, and a before/after comparison of a code change is not one of luck."""
    from benchmark.tuning import study as study_module

    db = project / "code.db"
    argv = ["tune", "--task", "multi", "--arch", "ridge", "--storage", f"sqlite:///{db.name}", "--trials", "4"]
    assert run_cli(project, *argv, monkeypatch=monkeypatch) == 0
    before = result_of(project, "ridge")["study_name"]
    real = study_module.code_digest()
    monkeypatch.setattr(study_module, "code_digest", lambda: "f" * 64 if real[0] != "f" else "0" * 64)
    assert run_cli(project, *argv, monkeypatch=monkeypatch) == 0
    after = result_of(project, "ridge")["study_name"]
    assert before != after and before.rsplit("-c", 1)[0] == after.rsplit("-c", 1)[0]

    import optuna

    def proposals(name):
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
        return [t.params["alpha"] for t in sorted(study.trials, key=lambda t: t.number)]

    assert len(proposals(before)) == 4 and proposals(before) == proposals(after)
    assert len(set(proposals(before))) == 4  # trial 0 the defaults, then three distinct draws


def test_a_baseline_with_only_choices_tries_every_point_once_defaults_first(project, monkeypatch):
    """kNN's components are a list of choices: the study tries all of them whatever
    tuning.n_trials says (3 here), the defaults first, so its result rests on no luck."""
    choices = [4, 0, 2, 8]
    params = write_params(project / "grid.yaml", models={
        **PARAMS["models"], "knn": {"defaults": {"k": None, "components": 4},
                                    "search_space": {"components": {"type": "categorical", "choices": choices}}}})
    db = project / "grid.db"
    assert run_cli(project, "tune", "--task", "multi", "--arch", "knn", "--storage", f"sqlite:///{db.name}",
                   "--params", str(params), monkeypatch=monkeypatch) == 0
    trials = trials_of(db)
    assert states(trials) == {"COMPLETE": len(choices)}
    import optuna

    saved = result_of(project, "knn")
    study = optuna.load_study(study_name=saved["study_name"], storage=f"sqlite:///{db}")
    assert [t.params["components"] for t in sorted(study.trials, key=lambda t: t.number)] == choices
    assert saved["n_trials"] == len(choices) and saved["best_value"] == min(t.value for t in study.trials)
    # The budget curve the report draws: trial 0 (the defaults) first, the best so far after each.
    ordered = sorted(study.trials, key=lambda t: t.number)
    assert saved["budget_curve"] == [
        {"trial": t.number, "value": t.value, "best_value": min(u.value for u in ordered[:i + 1])}
        for i, t in enumerate(ordered)]


def test_defaults_outside_the_search_space_exit_2_naming_the_key(project):
    params = write_params(project / "outside.yaml", models={
        **PARAMS["models"], "ridge": {"defaults": {"alpha": 1000.0},
                                      "search_space": {"alpha": {"type": "float", "low": 0.01, "high": 100.0}}}})
    result = genebench(project, "tune", "--task", "multi", "--arch", "ridge", "--params", str(params),
                       "--storage", "sqlite:///outside.db")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "genebench: error: outside.yaml: models.ridge.defaults.alpha is 1000.0, outside "
        "models.ridge.search_space.alpha [0.01, 100]; every study starts from the defaults"]
