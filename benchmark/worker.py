"""A warm process for the stages of a `dvc repro`: the imports paid once, each stage forked.

`dvc repro` starts one `genebench` process per stage, and each process used to spend
5.7 s (a baseline stage) to 9.2 s (a deep-model stage) importing scikit-learn, MLflow and
TensorFlow before its work began (results/imports.md). Under DVC (`DVC_STAGE` set) a
stage command instead hands its arguments, working directory, environment and its own
stdin, stdout and stderr (the descriptors themselves, over a Unix socket) to a worker
that has already imported them. The worker forks; the child runs `benchmark.cli.main`
as the stage process would have, on the stage's own streams, and the stage command exits
with the child's status (or dies of the child's signal). So DVC, its logs and its exit
codes see what they saw before.

- Each stage runs in a fresh fork of the worker, which itself runs nothing but imports:
  no state passes from one stage to the next, and a stage's metrics are the same bits
  with or without the worker (tests/test_worker.py).
- A worker serves one interpreter, one copy of genebench's source and one environment
  (every variable but `DVC_STAGE`): its socket's name hashes all three, so an edit under
  benchmark/, a `pip install` or a changed variable gets a new worker.
- The first stage that finds no worker starts one (it waits for the imports, as it
  would have anyway); a worker exits after `GENEBENCH_WORKER_IDLE` seconds (default 60)
  without a stage.
- `GENEBENCH_WORKER=0` runs every command in its own process; `=1` uses the worker
  outside DVC too. `--verbose` always runs in its own process: it changes the
  environment the libraries are imported under.
- Ctrl-C or a kill of the stage command reaches the stage (SIGINT, SIGTERM and SIGHUP are
  forwarded); if the stage command vanishes, the worker ends the stage (SIGTERM).
- Where no worker can start (no Unix sockets, an overlong temporary path, a worker that
  fails while importing: its log is `<socket>.log`), the command runs in its own process.

Only the commands of the pipeline's stages go through a worker (`STAGE_COMMANDS`).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

STAGE_COMMANDS = frozenset({"prepare", "tune", "evaluate", "run", "compare", "promote"})
ENV_SWITCH = "GENEBENCH_WORKER"
ENV_IDLE = "GENEBENCH_WORKER_IDLE"
DEFAULT_IDLE_SECONDS = 60.0
START_SECONDS = 180.0  # the worker's imports: ~9 s idle, more on a loaded machine
# Variables that differ between the stages of one `dvc repro` but change no import.
_PER_STAGE_ENV = frozenset({"DVC_STAGE"})
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_LOCK_BUSY = 3  # a worker's exit code when another worker already serves its socket
_HEADER = struct.Struct("!I")
_PACKAGE_DIR = Path(__file__).resolve().parent
_GENEBENCH_MODULES = ("benchmark.training", "benchmark.models.assembly", "benchmark.models.baselines",
                      "benchmark.models.architectures", "benchmark.models.attention", "benchmark.models.fit_loop",
                      "benchmark.models.gene_tokens", "benchmark.models.persistence", "benchmark.models.residual",
                      "benchmark.models.tokens", "matplotlib.backends.backend_agg")
_LAZY_MLFLOW_MODULES = ("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
                        "mlflow.tracing.processor.base_mlflow", "mlflow.pyfunc.scoring_server",
                        "mlflow.store.db.utils", "sqlalchemy.dialects.sqlite", "alembic.command",
                        "alembic.autogenerate", "alembic.config", "git")


# -- which commands, which worker -----------------------------------------------------------

def wanted(argv: list[str]) -> bool:
    """True when `genebench argv` should run in a worker."""
    switch = os.environ.get(ENV_SWITCH, "").strip()
    if switch == "0" or not hasattr(socket, "AF_UNIX") or not hasattr(os, "fork"):
        return False
    if switch != "1" and "DVC_STAGE" not in os.environ:
        return False
    command = next((a for a in argv if not a.startswith("-")), None)
    return command in STAGE_COMMANDS and "--verbose" not in argv


def _source_fingerprint() -> list:
    """genebench's source files and the site-packages directory, as (path, size, mtime)."""
    entries = []
    for path in sorted(_PACKAGE_DIR.rglob("*.py")):
        stat = path.stat()
        entries.append((str(path), stat.st_size, stat.st_mtime_ns))
    purelib = Path(sysconfig.get_paths()["purelib"])
    if purelib.is_dir():
        entries.append((str(purelib), 0, purelib.stat().st_mtime_ns))
    return entries


def socket_path(environ: dict[str, str] | None = None) -> Path | None:
    """The socket of the worker for this interpreter, source and environment (None: no room)."""
    environ = dict(os.environ if environ is None else environ)
    key = json.dumps([sys.executable, sys.version, _source_fingerprint(),
                      sorted((k, v) for k, v in environ.items() if k not in _PER_STAGE_ENV)])
    name = f"genebench-worker-{os.getuid()}/{hashlib.sha256(key.encode()).hexdigest()[:20]}.sock"
    for directory in (tempfile.gettempdir(), "/tmp"):
        path = Path(directory) / name
        if len(str(path)) < 100:  # a socket's path holds 108 bytes
            return path
    return None


def _private_dir(directory: Path) -> bool:
    """Create `directory` for this user only; False if it exists and is not ours alone."""
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        stat = directory.lstat()
    except OSError:
        return False
    return directory.is_dir() and not directory.is_symlink() and stat.st_uid == os.getuid() \
        and stat.st_mode & 0o077 == 0


# -- the stage command's side ---------------------------------------------------------------

def delegate(argv: list[str]) -> int | None:
    """Run `genebench argv` in a worker and return its exit code; None: run it here instead.

    Dies of the stage's signal where the stage died of one.
    """
    if not wanted(argv):
        return None
    path = socket_path()
    if path is None or not _private_dir(path.parent):
        return None
    conn = _connect(path)
    if conn is None:
        return None
    with conn:
        try:
            request = json.dumps({"argv0": sys.argv[0], "argv": argv, "cwd": os.getcwd(),
                                  "env": dict(os.environ)}).encode()
            socket.send_fds(conn, [_HEADER.pack(len(request)) + request], [0, 1, 2])
            reply = conn.makefile("rb")
            first = reply.readline().split()
        except OSError:
            return None
        if len(first) != 2 or first[0] != b"pid":
            return None  # the worker refused or died before starting the stage: run it here
        pid = int(first[1])
        previous = {sig: signal.signal(sig, lambda s, _f: _forward(pid, s)) for sig in _FORWARDED}
        try:
            last = reply.readline().split()
        except OSError:
            last = []
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if len(last) != 2 or last[0] != b"exit":
        _forward(pid, signal.SIGTERM)
        print("genebench: error: the stage worker stopped before the stage finished", file=sys.stderr)
        return 1
    status = int(last[1])
    if os.WIFSIGNALED(status):
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    return os.waitstatus_to_exitcode(status)


def _forward(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def _try_connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


def _connect(path: Path) -> socket.socket | None:
    """A connection to the worker at `path`, starting one whenever none holds its lock.

    A worker holds the lock from before its imports until it exits, so a stage that comes
    while another stage's worker imports waits for that one, and a stage that comes while
    an idle worker exits starts the next.
    """
    worker = None
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        conn = _try_connect(path)
        if conn is not None:
            return conn
        code = None if worker is None else worker.poll()
        if code not in (None, _LOCK_BUSY):
            return None  # it failed while importing: see its log
        if (worker is None or code is not None) and _lock_free(path):
            log = open(path.with_suffix(".log"), "ab")
            with log:
                # -P and cwd /: no project directory of the first stage on the worker's sys.path.
                worker = subprocess.Popen([sys.executable, "-P", "-m", "benchmark.worker", str(path)],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                                          start_new_session=True, close_fds=True)
        time.sleep(0.05)
    return None


def _lock_free(path: Path) -> bool:
    """True when no worker holds the lock of the socket `path`."""
    import fcntl

    with open(path.with_suffix(".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(lock, fcntl.LOCK_UN)
        return True


# -- the worker's side ----------------------------------------------------------------------

def _preload() -> None:
    """Import what the stage commands import, under the same quiet settings."""
    import importlib

    from benchmark import cli

    cli._quiet_libraries()
    import benchmark.data.prepare  # noqa: F401  (scikit-learn)
    import benchmark.evaluation  # noqa: F401
    import benchmark.registry  # noqa: F401
    import benchmark.report  # noqa: F401
    import benchmark.tracking  # noqa: F401  (MLflow and its SQL store)
    import benchmark.tuning  # noqa: F401  (Optuna)
    import matplotlib.pyplot  # noqa: F401
    import PIL.Image

    PIL.Image.init()  # the image plugins, which matplotlib's first savefig loads
    import sklearn.neighbors  # noqa: F401
    for name in _GENEBENCH_MODULES:
        importlib.import_module(name)
    # TensorFlow and Keras imported, never set up: a stage's `import_keras` probes the
    # devices and sets TensorFlow's options in its own process.
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    # What MLflow imports lazily when a stage opens its SQL stores and logs a model
    # (~1.2 s a stage, measured by a cProfile of an evaluate after the imports above).
    for name in _LAZY_MLFLOW_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    try:  # the installed packages' import names, which MLflow maps when a process first logs a model (~0.6 s)
        from mlflow.utils.requirements_utils import _init_modules_to_packages_map

        _init_modules_to_packages_map()
    except (ImportError, AttributeError):
        pass


def serve(path: Path) -> int:
    """The worker: import, then fork one child per stage until idle for the idle time."""
    import fcntl

    from benchmark.config import mask_url

    lock = open(path.with_suffix(".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _LOCK_BUSY
    started = time.perf_counter()
    _preload()
    _log(f"worker {os.getpid()} ready after {time.perf_counter() - started:.1f} s of imports")
    idle = float(os.environ.get(ENV_IDLE, DEFAULT_IDLE_SECONDS))
    path.unlink(missing_ok=True)  # a socket left by a worker that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(16)
    listener.settimeout(idle)
    running = [0]
    guard = threading.Lock()
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                with guard:
                    if running[0] == 0:
                        _log(f"worker {os.getpid()} idle for {idle:g} s: exiting")
                        return 0
                continue
            conn.settimeout(None)
            request = _receive(conn)
            if request is None:
                conn.close()
                continue
            fds, job = request
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                _run_stage(fds, job)  # never returns
            for fd in fds:
                os.close(fd)
            _log(f"stage {pid}: genebench {' '.join(map(mask_url, job['argv']))} (in {job['cwd']})")
            with guard:
                running[0] += 1
            threading.Thread(target=_report, args=(conn, pid, running, guard), daemon=True).start()
    finally:
        path.unlink(missing_ok=True)


def _log(line: str) -> None:
    """A line in the worker's log (its stdout: `<socket>.log`)."""
    print(time.strftime("%Y-%m-%d %H:%M:%S ") + line, flush=True)


def _receive(conn: socket.socket) -> tuple[list[int], dict] | None:
    """The stage's three descriptors and request, from a process of this user only."""
    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
    fds: list[int] = []
    try:
        data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
        if uid != os.getuid() or len(fds) != 3 or len(data) < _HEADER.size:
            raise ValueError("not a stage request")
        size = _HEADER.unpack_from(data)[0]
        data = data[_HEADER.size:]
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ValueError("truncated request")
            data += chunk
        return fds, json.loads(data)
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        return None


def _report(conn: socket.socket, pid: int, running: list[int], guard: threading.Lock) -> None:
    """Tell the stage command the child's pid, then its wait status; end it if they hang up."""
    finished = threading.Event()
    ending = threading.Lock()

    def watch() -> None:  # the stage command vanished: end its stage
        try:
            while conn.recv(1):
                pass
        except OSError:
            pass
        with ending:
            if not finished.is_set():
                _forward(pid, signal.SIGTERM)

    try:
        conn.sendall(b"pid %d\n" % pid)
        threading.Thread(target=watch, daemon=True).start()
    except OSError:
        _forward(pid, signal.SIGTERM)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: no pid reuse
    with ending:
        finished.set()
    _, status = os.waitpid(pid, 0)
    ending_how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                  else f"exit {os.waitstatus_to_exitcode(status)}")
    _log(f"stage {pid} ended: {ending_how}")
    try:
        conn.sendall(b"exit %d\n" % status)
    except OSError:
        pass
    conn.close()
    with guard:
        running[0] -= 1


def _run_stage(fds: list[int], job: dict) -> None:
    """In the forked child: become the stage process, run the command, exit with its code."""
    import io
    import traceback

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for sig in _FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    # New streams on the stage's descriptors, buffered as a process of its own would be.
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    encoding, errors = sys.__stdout__.encoding, sys.__stdout__.errors
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding=encoding)
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding=encoding,
                                                   errors=errors, line_buffering=os.isatty(1),
                                                   write_through=unbuffered)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding=encoding,
                                                   errors="backslashreplace", line_buffering=True,
                                                   write_through=unbuffered)
    sys.argv = [job["argv0"], *job["argv"]]
    from benchmark.cli import exit_without_teardown, main

    code = 1
    try:
        code = main(job["argv"])
    except SystemExit as exc:  # argparse's exits, as the interpreter would report them
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:  # an internal error: its traceback, as a process of its own shows it
        traceback.print_exc()
    finally:
        exit_without_teardown(code)


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1])))
