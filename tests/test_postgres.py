"""The team setup on a real PostgreSQL server: Optuna and MLflow on it, an MLflow server.

The server is PostgreSQL itself, from the binaries the `pgserver` wheel ships, started
by this module with password (scram-sha-256) authentication on 127.0.0.1. No mock and
no SQLite stand-in. Every URL reaches genebench only through `OPTUNA_STORAGE` and
`MLFLOW_TRACKING_URI`, as the README's team setup says, and the password must show up
in nothing genebench writes, logs or starts.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import psutil
import psycopg
import pytest
from mlflow import MlflowClient

from conftest import free_port, server_process
from test_tuning import PARAMS, make_project, write_params

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
PASSWORD = "gb" + secrets.token_hex(10)
PG_USER = "genebench-pg"  # PostgreSQL refuses to run as root


@dataclass
class Server:
    port: int
    base: Path

    def url(self, database: str, password: str = PASSWORD) -> str:
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_postgres_user() -> dict:
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)
    return {"user": PG_USER}


@pytest.fixture(scope="module")
def postgres():
    import importlib.util

    # Only its binaries: importing pgserver itself starts nothing we need.
    binaries = Path(importlib.util.find_spec("pgserver").origin).parent / "pginstall" / "bin"
    base = Path(tempfile.mkdtemp(prefix="genebench-pg-"))
    base.chmod(0o755)
    as_user = _as_postgres_user()
    (base / "pw").write_text(PASSWORD)
    if as_user:
        shutil.chown(base, PG_USER)
        shutil.chown(base / "pw", PG_USER)
    data, port = base / "data", free_port()
    subprocess.run([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
                    f"--pwfile={base / 'pw'}", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True, **as_user)
    subprocess.run([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
                    "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {base} -c fsync=off", "start"],
                   check=True, capture_output=True, **as_user)
    try:
        yield Server(port, base)
    finally:
        subprocess.run([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, **as_user)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="genebench-team-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module")
def project(scratch) -> Path:
    root = scratch / "project"
    root.mkdir()
    make_project(root)
    # A team's project: the promotion candidate is ridge (fast), the rest as test_tuning's.
    write_params(root / "params.yaml", promotion={"enabled": True, "candidate": "ridge", "min_improvement": 0.0})
    return root


def team_env(optuna_url: str, tracking_uri: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GENEBENCH_", "OPTUNA_"))}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1",
               OPTUNA_STORAGE=optuna_url, MLFLOW_TRACKING_URI=tracking_uri)
    return env


def start(project: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(VENV_BIN / "genebench"), *args], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    assert PASSWORD not in out + err
    return out, err


def study_of(url: str) -> optuna.Study:
    (summary,) = optuna.get_all_study_summaries(url)
    return optuna.load_study(study_name=summary.study_name, storage=url)


def runs_of(tracking_uri: str) -> tuple[list, list]:
    """(study parent runs, trial child runs) over every experiment of the store."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, max_results=1000)
    parents = [r for r in runs if "genebench.study_name" in r.data.tags]
    children = [r for r in runs if "genebench.trial_number" in r.data.tags]
    return parents, children


def test_two_tunes_started_together_on_empty_databases(postgres, project):
    optuna_url, mlflow_url = postgres.create_database("optuna_a"), postgres.create_database("mlflow_a")
    env = team_env(optuna_url, mlflow_url)
    procs = [start(project, env, "tune", "--task", "multi", "--arch", "ridge", "--trials", "6") for _ in range(2)]
    for proc in procs:
        finish(proc)
    study = study_of(optuna_url)
    complete = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.number)
    assert len(complete) >= 6 and not [t for t in study.trials if t.state.name == "RUNNING"]
    result = (project / "artifacts" / "tuning" / "toy" / "multi" / "ridge.json").read_text()
    assert f'"best_value": {min(t.value for t in complete[:6])}' in result
    parents, children = runs_of(mlflow_url)
    assert len(parents) == 1
    assert len(children) == len(study.trials)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}


def test_a_worker_killed_mid_trial_fails_its_trial_and_the_study_completes(postgres, project):
    optuna_url, mlflow_url = postgres.create_database("optuna_b"), postgres.create_database("mlflow_b")
    env = team_env(optuna_url, mlflow_url)
    argv = ("tune", "--task", "multi", "--arch", "dnn", "--trials", "5")
    victim, survivor = start(project, env, *argv), start(project, env, *argv)
    try:
        killed, deadline = None, time.monotonic() + 180
        while killed is None and time.monotonic() < deadline and victim.poll() is None:
            time.sleep(0.2)
            try:
                study = study_of(optuna_url)
            except Exception:  # schema or study not created yet
                continue
            mine = [t for t in study.trials if t.state.name == "RUNNING" and t.user_attrs.get("pid") == victim.pid]
            if mine:
                victim.send_signal(signal.SIGKILL)
                killed = mine[0].number
        assert killed is not None, "the victim never ran a trial"
        victim.wait(30)
        finish(survivor)
    finally:
        for proc in (victim, survivor):
            if proc.poll() is None:
                proc.kill()
    study = study_of(optuna_url)
    states = {t.number: t.state.name for t in study.trials}
    assert states[killed] == "FAIL"
    assert sum(state == "COMPLETE" for state in states.values()) >= 5 and "RUNNING" not in states.values()
    _, children = runs_of(mlflow_url)
    by_number = {int(c.data.tags["genebench.trial_number"]): c for c in children}
    assert by_number[killed].info.status == "FAILED"


@pytest.fixture(scope="module")
def mlflow_server(postgres, scratch):
    """`mlflow server` on PostgreSQL with a shared artifact store; the store URL by environment."""
    store = postgres.create_database("mlflow_server")
    artifacts = scratch / "shared-artifacts"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_BACKEND_STORE_URI"] = store
    uri = f"http://127.0.0.1:{port}"
    argv = [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--artifacts-destination", artifacts.as_uri(), "--workers", "1"]
    with server_process(argv, scratch, env, f"{uri}/health", scratch / "mlflow-server.log", startup_seconds=120):
        yield uri, artifacts


def test_evaluate_and_promote_through_a_tracking_server_and_load_the_champion_elsewhere(
        postgres, project, mlflow_server, scratch):
    uri, artifacts = mlflow_server
    env = team_env(postgres.create_database("optuna_c"), uri)
    outputs = []
    for argv in (("tune", "--task", "single", "--arch", "ridge"), ("evaluate", "--task", "single", "--arch", "ridge"),
                 ("promote", "--task", "single")):
        outputs += finish(start(project, env, *argv))
    # The model lives in the server's artifact store, not on the machine that made it.
    client = MlflowClient(uri, registry_uri=uri)  # not a registry URI an earlier test set in this process
    champion = client.get_model_version_by_alias("genebench-toy-single", "champion")
    assert client.get_run(champion.run_id).info.artifact_uri.startswith("mlflow-artifacts:/")
    assert list(artifacts.rglob("MLmodel"))
    elsewhere = scratch / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import sys, mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model('models:/genebench-toy-single@champion')\n"
        "names = [c.name for c in model.metadata.get_input_schema().inputs]\n"
        "print(model.predict(pd.DataFrame([[1.0] * len(names)], columns=names)).shape)\n")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True,
                            timeout=180)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip().startswith("(1,"), loaded.stdout
    # Progress and results, not MLflow's "View run ... at http://..." per run.
    assert not any("View run" in text for text in outputs), outputs
    # The password is in no output, project file, MLflow param or tag, nor in the shared store.
    assert not any(PASSWORD in text for text in outputs)
    for path in [*project.rglob("*"), *artifacts.rglob("*")]:
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert PASSWORD.encode() not in path.read_bytes(), path
    ids = [e.experiment_id for e in client.search_experiments()]
    for run in client.search_runs(ids, max_results=1000):
        assert PASSWORD not in repr(run.data.params) + repr(run.data.tags), run.info.run_id


def test_no_process_genebench_starts_carries_the_password_in_its_arguments(postgres, project):
    env = team_env(postgres.create_database("optuna_d"), postgres.create_database("mlflow_d"))
    proc = start(project, env, "tune", "--task", "multi", "--arch", "knn", "--trials", "4", "--workers", "2")
    seen: set[str] = set()
    try:
        while proc.poll() is None:
            try:
                family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
                seen.update(" ".join(p.cmdline()) for p in family)
            except psutil.Error:
                pass
            time.sleep(0.1)
    finally:
        finish(proc)
    assert any("multiprocessing" in cmd for cmd in seen), seen  # the spawned workers were seen
    assert not [cmd for cmd in seen if PASSWORD in cmd]


@pytest.mark.parametrize("variable", ["OPTUNA_STORAGE", "MLFLOW_TRACKING_URI"])
def test_a_wrong_password_is_one_line_and_exit_2_within_seconds(postgres, project, variable):
    good = {"OPTUNA_STORAGE": postgres.create_database(f"optuna_e_{variable.lower()}"),
            "MLFLOW_TRACKING_URI": postgres.create_database(f"mlflow_e_{variable.lower()}")}
    good[variable] = good[variable].replace(PASSWORD, "wrong-password")
    started = time.monotonic()
    proc = start(project, team_env(good["OPTUNA_STORAGE"], good["MLFLOW_TRACKING_URI"]),
                 "tune", "--task", "multi", "--arch", "ridge", "--trials", "1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert time.monotonic() - started < 30
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "password authentication failed" in lines[0], err
    assert "wrong-password" not in out + err and "***" in lines[0]


def test_an_unreachable_tracking_server_is_one_line_and_exit_2(postgres, project):
    env = team_env(postgres.create_database("optuna_f"), f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    proc = start(project, env, "tune", "--task", "multi", "--arch", "ridge", "--trials", "1")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and time.monotonic() - started < 30
    assert len(err.strip().splitlines()) == 1 and "cannot reach the MLflow server" in err, err
