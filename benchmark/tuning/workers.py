"""Workers: Optuna's own `study.optimize`, in this process or in N spawned processes.

`--workers 1` optimizes in the `tune` process; more spawn processes (fork after
TensorFlow loads hangs); the same command on another machine joins the study. Each
stops once the study holds `n_trials` complete trials (Optuna's `MaxTrialsCallback`
counting COMPLETE trials), so up to `workers - 1` extra trials may complete; the result
stays budget-exact (`best_of_first`).
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Optional

from benchmark.tuning.heartbeats import fail_dead_trials
from benchmark.tuning.objective import Objective
from benchmark.tuning.stopping import STOP, check_stop
from benchmark.tuning.study import StudySpec, best_of_first, load_study, n_complete

MAX_FAILURES_IN_A_ROW = 5
POLL_S = 0.5


class TrialProgress:
    """`study.optimize` callback: a progress line per trial; stops the study on Ctrl-C or
    after `MAX_FAILURES_IN_A_ROW` failures (kept in `error`), and fails dead trials."""

    def __init__(self, n_trials: int, grace_period: float):
        self.n, self.grace, self.failures, self.error = n_trials, grace_period, 0, None

    def __call__(self, study, trial) -> None:
        complete = n_complete(study)
        best = best_of_first(study, self.n)
        state = trial.state.name
        value = f" value={trial.value:.4f}" if state == "COMPLETE" else ""
        error = f" ({trial.user_attrs['error']})" if "error" in trial.user_attrs else ""
        print(f"trial {trial.number} {state.lower()}{value}" + (f" best={best.value:.4f}" if best else "")
              + f" [{min(complete, self.n)}/{self.n} complete]{error}", flush=True)
        self.failures = self.failures + 1 if state == "FAIL" else 0
        if self.failures >= MAX_FAILURES_IN_A_ROW:
            self.error = f"{self.failures} trials in a row failed; the last one: {trial.user_attrs.get('error')}"
        fail_dead_trials(study, self.grace)
        if STOP.is_set() or self.error:
            study.stop()


def optimize(spec: StudySpec, worker: int, n_trials: int, deadline: Optional[float]) -> None:
    """Run `study.optimize` in this process until the study holds `n_trials` complete trials."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    study = load_study(spec, worker)
    if n_complete(study) >= n_trials:
        return
    budget = MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE,))
    progress = TrialProgress(n_trials, spec.config.params.tuning.grace_period)
    timeout = None if deadline is None else max(0.0, deadline - time.time())
    study.optimize(Objective(spec), timeout=timeout, callbacks=[budget, progress], catch=(Exception,),
                   gc_after_trial=False)
    check_stop()
    if progress.error:
        raise RuntimeError(progress.error)


def _worker_main(spec: StudySpec, worker: int, n_trials: int, deadline: Optional[float]) -> None:
    """A spawned worker: Ctrl-C (to the process group) or the parent's SIGTERM only asks it
    to stop at its next epoch or trial; the parent kills it if it does not within a minute."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: STOP.set())
    try:
        optimize(spec, worker, n_trials, deadline)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        print(f"genebench: tuning worker {worker}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def run_workers(spec: StudySpec, workers: int, n_trials: int, deadline: Optional[float]) -> None:
    """`workers` spawned processes, each running `optimize`; the parent waits and forwards a stop."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(spec, w, n_trials, deadline), name=f"genebench-tune-{w}")
             for w in range(workers)]
    for proc in procs:
        proc.start()
    try:
        while any(proc.is_alive() for proc in procs) and not STOP.is_set():
            for proc in procs:
                proc.join(POLL_S / workers)
        if STOP.is_set():
            for proc in procs:  # SIGTERM: stop at the next epoch; Ctrl-C already reached them
                if proc.is_alive():
                    proc.terminate()
            stop_by = time.monotonic() + 60
            for proc in procs:
                proc.join(max(0.0, stop_by - time.monotonic()))
            raise KeyboardInterrupt
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    dead = [f"worker {w} exited with {p.exitcode}" for w, p in enumerate(procs) if p.exitcode != 0]
    if dead and n_complete(load_study(spec)) < n_trials and (deadline is None or time.time() < deadline):
        raise RuntimeError(f"tuning stopped short of {n_trials} complete trials: {', '.join(dead)}")
