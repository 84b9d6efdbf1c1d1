"""Shared fixtures: a throwaway genebench project and a way to run the CLI in it.

`project` is a fresh directory with `git init`, `dvc init`, and a copy of the repository's
params.yaml that lists one dataset, `toy` (`project.data_dir` is `data/toy/`), so commands
need no `--dataset`; `project.set_params({...})` deep-merges overrides into it. The git/DVC
skeleton is built once per session and copied for each test (`dvc init` costs seconds).
`run_cli(cwd, *args)` runs `python -m benchmark ARGS` as a subprocess, with the venv's
`bin/` on PATH (DVC stage commands and `uvicorn` are found there) and no
GENEBENCH_ROOT / MLFLOW_TRACKING_URI leaking in from the caller. `server_process(...)`
runs a server (`mlflow models serve`) until its health URL answers, `genebench_ui(cwd)`
the project's MLflow UI.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
# What test projects start from: the tests' own copy of the defaults, never the checkout's
# params.yaml, which a user edits and `data import` extends.
PARAMS = Path(__file__).resolve().parent / "fixtures" / "params.yaml"
VENV_BIN = Path(sys.executable).parent
DATASET = "toy"  # the one dataset a test project lists


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """The seed of this run's test order (pytest-randomly shuffles it each run; `-q` hides its header)."""
    if config.pluginmanager.hasplugin("randomly"):
        terminalreporter.write_line(f"test order: shuffled with --randomly-seed={config.getoption('randomly_seed')} "
                                    "(pass it to rerun this order; -p no:randomly runs file order)")


FIRST_MODULE = "test_pipeline.py"  # the end-to-end `dvc repro`: about a third of the suite's CPU time


def pytest_collection_modifyitems(config, items) -> None:
    """Run the end-to-end module first, its tests still in their shuffled order (this runs
    after pytest-randomly's shuffle; the sort is stable). Under xdist's `--dist loadfile`
    the longest module then starts at once on one worker while the other worker takes the
    rest, instead of starting last and running alone."""
    items.sort(key=lambda item: item.path.name != FIRST_MODULE)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", DVC_NO_ANALYTICS="1")
    # The quiet defaults too: a test that ran the CLI in this process set them in os.environ
    # (benchmark.verbosity), and a child started with GENEBENCH_LOG=debug must not inherit them.
    for var in ("GENEBENCH_ROOT", "MLFLOW_TRACKING_URI", "DVC_EXP_NAME", "GENEBENCH_LOG", "TF_CPP_MIN_LOG_LEVEL",
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        env.pop(var, None)
    env.update(extra)
    return env


@dataclass(frozen=True)
class CliResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(cwd: Path, *args: str, timeout: float = 300) -> CliResult:
    """`python -m benchmark ARGS` in `cwd`."""
    result = subprocess.run([sys.executable, "-m", "benchmark", *map(str, args)], cwd=cwd, env=cli_env(),
                            capture_output=True, text=True, timeout=timeout)
    return CliResult(result.returncode, result.stdout, result.stderr)


def run_tool(cwd: Path, *cmd: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run an external command (git, dvc, genebench) in `cwd` with the CLI environment."""
    result = subprocess.run(list(map(str, cmd)), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@contextlib.contextmanager
def server_process(argv: list[str], cwd: Path, env: dict[str, str], health_url: str, log_path: Path,
                   startup_seconds: float = 150) -> Iterator[subprocess.Popen]:
    """Run `argv` in its own process group until `health_url` answers 200; stop the group after.

    The server's output goes to `log_path` (a file: a full pipe would stall it); its tail
    is in the failure when the server exits or does not answer within `startup_seconds`.
    """
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + startup_seconds
            while True:
                if process.poll() is not None:
                    pytest.fail(f"{' '.join(argv)} exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
                with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                    if requests.get(health_url, timeout=5).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"{' '.join(argv)} did not answer {health_url} within {startup_seconds} s:\n"
                                f"{log_path.read_text()[-4000:]}")
                time.sleep(0.5)
            yield process
        finally:
            # The server's own process group (uvicorn workers included), and nothing else.
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@contextlib.contextmanager
def genebench_ui(cwd: Path, log_path: Path) -> Iterator[str]:
    """`genebench ui` started in `cwd` on a free port; yields its URL once it answers /health."""
    url = f"http://127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "benchmark", "ui", "--port", url.rsplit(":", 1)[1]]
    with server_process(argv, cwd, cli_env(), f"{url}/health", log_path, startup_seconds=120):
        yield url


def tree_digest(path: Path) -> dict[str, str]:
    """md5 of every file under `path` by relative path ({} when it does not exist)."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _merge(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


@dataclass(frozen=True)
class Project:
    """A temporary project root: git + DVC initialised, params.yaml from the tests' own defaults (fixtures/params.yaml)."""

    root: Path

    @property
    def params_path(self) -> Path:
        return self.root / "params.yaml"

    @property
    def data_dir(self) -> Path:
        """`data/toy/`: the canonical directory of the project's one dataset."""
        return self.root / "data" / DATASET

    def set_params(self, overrides: dict[str, Any]) -> "Project":
        raw = yaml.safe_load(self.params_path.read_text())
        self.params_path.write_text(yaml.safe_dump(_merge(raw, overrides), sort_keys=False))
        return self

    def config(self, dataset: str | None = DATASET):
        """The project's params, bound to `dataset` (None: unbound, as compare and promote take it)."""
        from benchmark.config import load_config

        config = load_config(self.params_path, root=self.root)
        return config.for_dataset(dataset) if dataset else config

    def run(self, *args: str, timeout: float = 300) -> CliResult:
        return run_cli(self.root, *args, timeout=timeout)


@pytest.fixture(scope="session")
def _project_template(tmp_path_factory) -> Path:
    template = tmp_path_factory.mktemp("project-template") / "project"
    template.mkdir()
    run_tool(template, "git", "init", "-q")
    run_tool(template, sys.executable, "-m", "dvc", "init", "-q")
    run_tool(template, sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    params = yaml.safe_load(PARAMS.read_text())
    params["datasets"] = {DATASET: {"transform": "none"}}
    (template / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (template / ".gitignore").write_text("/data/\n/artifacts/\n")
    return template


@pytest.fixture
def project(_project_template, tmp_path) -> Project:
    root = tmp_path / "project"
    shutil.copytree(_project_template, root, symlinks=True)
    return Project(root)
