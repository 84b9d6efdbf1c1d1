"""The run stage: tune, then evaluate, one architecture on each task of one dataset.

    run(config.for_dataset("cbmc"), "attention_lstm", tasks=("single", "multi"), jobs=2)

The tasks share nothing but the stores (each has its own study, evaluation and outputs),
so with `jobs` > 1 they run side by side, a process per task, forked before anything in
this process opens a store or starts TensorFlow's runtime (the point the stage worker
forks at). Every fit runs on `training.threads` threads however many tasks run at once,
so a task's metrics are the same bits side by side as one after the other
(tests/test_run_stage.py). On this project's 2-core CPU, with 12 trials a study, a stage
took 72.9 s side by side against 101.4 s one after the other on two threads a fit
(pbmc68k, attention_lstm), and 189.2 s against 236.9 s (cbmc, lstm;
results/parallel-tasks.md): a small network's fit leaves much of a second core idle.

With several tasks at once:
- each task's output lines start with `[<task>] `;
- a user's mistake (exit 2) is one line, however many tasks met it; the first task that
  fails stops the others (SIGTERM: a study stops at its next epoch, as on Ctrl-C), and
  the stage exits with its code;
- Ctrl-C, SIGTERM and SIGHUP to this process reach every task once (each task runs in a
  process group of its own, so a terminal's Ctrl-C is not delivered twice), and a task
  whose parent dies is sent SIGTERM.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import traceback
from typing import Sequence

from benchmark.config import Config
from benchmark.errors import UserError

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # prctl(2)


def default_jobs(config: Config, n_tasks: int) -> int:
    """Tasks at once by default: as many as the cores give `training.threads` each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n_tasks, cores // config.params.training.threads))


def run(config: Config, arch: str, tasks: Sequence[str], jobs: int) -> None:
    """Tune and evaluate `arch` on each of `tasks`, at most `jobs` tasks at a time."""
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    if jobs == 1 or len(tasks) == 1 or not hasattr(os, "fork"):
        for task in tasks:
            _tune_and_evaluate(config, task, arch)
        return
    pending, running, failures = list(tasks), {}, []
    previous = {sig: signal.signal(sig, lambda signum, frame: _send(running, signum)) for sig in _FORWARDED}
    try:
        while pending or running:
            while pending and len(running) < jobs and not failures:
                task = pending.pop(0)
                pid, message = _fork_task(config, task, arch)
                running[pid] = (task, message)
            if not running:
                break
            pid, status = os.wait()
            if pid not in running:
                continue
            task, message = running.pop(pid)
            with os.fdopen(message) as pipe:  # the task has exited: its end is closed
                text = pipe.read().strip()
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                if not failures and code != 130:  # an interrupt reached every task already
                    _send(running, signal.SIGTERM)  # the stage has failed: stop the others
                failures.append((task, code, text))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failures:
        _fail(*failures[0])


def _fail(task: str, code: int, message: str) -> None:
    """Raise what the first failed task's command would have ended with."""
    if code == 130:
        raise KeyboardInterrupt
    if message:
        error = UserError(message)
        error.exit_code = code
        raise error
    if code < 0:
        print(f"genebench: error: task {task} was killed by signal {-code}", file=sys.stderr, flush=True)
    raise SystemExit(code if code > 0 else 1)


def _tune_and_evaluate(config: Config, task: str, arch: str) -> None:
    from benchmark.evaluation import evaluate
    from benchmark.tuning import tune

    tune(config, task, arch)
    evaluate(config, task, arch)


def _send(running: dict, sig: int) -> None:
    for pid in list(running):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _fork_task(config: Config, task: str, arch: str) -> tuple[int, int]:
    """Start a task's process: `(pid, the read end of the pipe its error message comes by)`."""
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    read, write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write)
        return pid, read
    os.close(read)
    _task_process(config, task, arch, parent, write)  # never returns


def _task_process(config: Config, task: str, arch: str, parent: int, message: int) -> None:
    """In the forked child: one task, its lines prefixed; exits with what its command would."""
    from benchmark.cli import exit_without_teardown

    code = 1
    try:
        os.setpgid(0, 0)
        _die_with(parent)
        for sig in _FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.stdout = _Prefixed(sys.stdout, f"[{task}] ")
        _tune_and_evaluate(config, task, arch)
        code = 0
    except UserError as exc:  # told once, by the stage's process
        os.write(message, str(exc).encode())
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # an internal error: its traceback, as the command would show it
        traceback.print_exc()
    finally:
        exit_without_teardown(code)


def _die_with(parent: int) -> None:
    """SIGTERM this process when its parent dies (Linux), as a stage killed outright would."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request
        os.kill(os.getpid(), signal.SIGTERM)


class _Prefixed(io.TextIOBase):
    """A text stream that starts every line written through it with `prefix`."""

    def __init__(self, stream, prefix: str):
        self._stream, self._prefix, self._line_start = stream, prefix, True

    def write(self, text: str) -> int:
        pieces = []
        for piece in text.splitlines(keepends=True):
            if self._line_start:
                pieces.append(self._prefix)
            pieces.append(piece)
            self._line_start = piece.endswith("\n")
        self._stream.write("".join(pieces))
        if self._line_start:  # whole lines reach the shared descriptor in one write
            self._stream.flush()
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()
