"""The warm stage worker (benchmark.worker): same results as a process of its own, same exits."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from benchmark import worker
from conftest import cli_env
from mlflow_project import PARAMS, write_linear_dataset

RUN_ID = re.compile(r"mlflow run [0-9a-f]{32}")


@pytest.fixture
def toy(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    write_linear_dataset(root / "data" / "toy")
    # This test's own workers (TMPDIR is part of their key), at a path short enough for a socket.
    sockets = Path(tempfile.mkdtemp(prefix="gbw-", dir="/tmp"))
    yield root, sockets
    shutil.rmtree(sockets, ignore_errors=True)


def genebench(root: Path, *args: str, use_worker: bool, sockets: Path, idle: str = "30") -> subprocess.CompletedProcess:
    env = cli_env(GENEBENCH_WORKER="1" if use_worker else "0", TMPDIR=str(sockets), GENEBENCH_WORKER_IDLE=idle)
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def worker_log(sockets: Path) -> str:
    logs = list(sockets.glob("genebench-worker-*/*.log"))
    assert len(logs) == 1, logs
    return logs[0].read_text()


def metrics_without_run_id(root: Path) -> dict:
    doc = json.loads((root / "metrics" / "toy" / "single" / "ridge.json").read_text())
    doc.pop("mlflow_run_id")
    return doc


def test_a_stage_in_the_worker_gives_what_its_own_process_gives(toy):
    root, sockets = toy
    assert genebench(root, "prepare", use_worker=False, sockets=sockets).returncode == 0
    evaluate = ("evaluate", "--task", "single", "--arch", "ridge")
    own = genebench(root, *evaluate, use_worker=False, sockets=sockets)
    assert own.returncode == 0, own.stderr
    expected = metrics_without_run_id(root)
    assert not (sockets / f"genebench-worker-{os.getuid()}").exists()  # GENEBENCH_WORKER=0: no worker

    for _ in range(2):  # the first starts the worker, the second finds it
        warm = genebench(root, *evaluate, use_worker=True, sockets=sockets)
        assert warm.returncode == 0, warm.stderr
        assert RUN_ID.sub("", warm.stdout) == RUN_ID.sub("", own.stdout)
        assert metrics_without_run_id(root) == expected
    log = worker_log(sockets)
    assert len(re.findall(r"ready after", log)) == 1  # one worker served both
    assert len(re.findall(r"genebench evaluate --task single --arch ridge", log)) == 2
    assert len(re.findall(r"ended: exit 0", log)) == 2

    # A user's mistake: the same one line and exit code 2 through the worker.
    bad = ("evaluate", "--task", "single", "--arch", "ridge", "--dataset", "nosuch")
    own, warm = (genebench(root, *bad, use_worker=use, sockets=sockets) for use in (False, True))
    assert warm.returncode == own.returncode == 2
    assert warm.stderr == own.stderr and len(warm.stderr.splitlines()) == 1
    assert "ended: exit 2" in worker_log(sockets)

    # The worker's log names each stage's command, never a password in it.
    url = "postgresql://genebench:s3cret@127.0.0.1:1/optuna"
    tune = genebench(root, "tune", "--task", "single", "--arch", "ridge", "--storage", url,
                     use_worker=True, sockets=sockets)
    assert tune.returncode == 2 and "--storage: cannot connect" in tune.stderr, tune.stderr
    assert "genebench:***@127.0.0.1:1" in worker_log(sockets) and "s3cret" not in worker_log(sockets)


def test_a_killed_stage_command_ends_its_stage_and_an_idle_worker_exits(toy):
    root, sockets = toy
    env = cli_env(GENEBENCH_WORKER="1", TMPDIR=str(sockets), GENEBENCH_WORKER_IDLE="2")
    assert subprocess.run([sys.executable, "-m", "benchmark", "prepare"], cwd=root, env=env,
                          capture_output=True, timeout=300).returncode == 0

    def killed(sig: int) -> tuple[int, str]:
        """A stage of enough ridge trials to run for hours, its command sent `sig` mid-study."""
        stage = subprocess.Popen([sys.executable, "-m", "benchmark", "tune", "--task", "single", "--arch", "ridge",
                                  "--trials", "1000000"], cwd=root, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        try:
            for line in stage.stdout:
                if line.startswith("trial "):
                    break
            stage.send_signal(sig)
            rc = stage.wait(timeout=60)
            return rc, stage.stdout.read()
        finally:
            stage.kill()

    # SIGTERM reaches the stage, which stops at the next trial as it does in its own process.
    rc, output = killed(signal.SIGTERM)
    assert rc == 130 and output.endswith("genebench: interrupted\n"), output
    # SIGKILL cannot be forwarded: the worker sees the command gone and ends the stage.
    assert killed(signal.SIGKILL)[0] == -signal.SIGKILL
    deadline = time.monotonic() + 60
    while worker_log(sockets).count("ended: exit 130") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_log(sockets).count("ended: exit 130") == 2, worker_log(sockets)

    sock = next(sockets.glob("genebench-worker-*/*.sock"), None)
    while sock is not None and sock.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sock is None or not sock.exists(), "the worker did not exit when idle"
    assert "idle for 2 s: exiting" in worker_log(sockets)


def test_a_stage_that_comes_while_a_worker_exits_starts_the_next_one(toy):
    import fcntl

    root, sockets = toy
    first = genebench(root, "prepare", use_worker=True, sockets=sockets, idle="1")
    assert first.returncode == 0, first.stderr
    lock_path = next(sockets.glob("genebench-worker-*/*.lock"))
    deadline = time.monotonic() + 60
    while "exiting" not in worker_log(sockets) and time.monotonic() < deadline:
        time.sleep(0.1)
    # The lock held as by a worker that is exiting: no socket to connect to, and a new
    # worker cannot start until the lock is free.
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        env = cli_env(GENEBENCH_WORKER="1", TMPDIR=str(sockets), GENEBENCH_WORKER_IDLE="1")
        stage = subprocess.Popen([sys.executable, "-m", "benchmark", "prepare"], cwd=root, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
    _, err = stage.communicate(timeout=120)
    assert stage.returncode == 0, err
    log = worker_log(sockets)
    assert log.count("ready after") == 2 and log.count("genebench prepare") == 2, log


def test_which_commands_and_environments_share_a_worker(monkeypatch):
    for var in ("GENEBENCH_WORKER", "DVC_STAGE"):
        monkeypatch.delenv(var, raising=False)
    assert not worker.wanted(["run", "--arch", "dnn"])  # outside DVC: a process of its own
    monkeypatch.setenv("DVC_STAGE", "run@pbmc68k-dnn")
    assert worker.wanted(["run", "--arch", "dnn"]) and worker.wanted(["compare", "--params", "p.yaml"])
    assert not worker.wanted(["run", "--arch", "dnn", "--verbose"])  # imports under other settings
    assert not worker.wanted(["data", "bootstrap"]) and not worker.wanted(["ui"])
    monkeypatch.setenv("GENEBENCH_WORKER", "0")
    assert not worker.wanted(["run", "--arch", "dnn"])

    env = {"PATH": "/usr/bin", "DVC_STAGE": "run@a-dnn"}
    same = worker.socket_path(env)
    assert worker.socket_path({**env, "DVC_STAGE": "run@b-gru"}) == same  # stages of one repro
    assert worker.socket_path({**env, "TF_CPP_MIN_LOG_LEVEL": "0"}) != same  # imports would differ
