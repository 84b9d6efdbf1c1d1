"""The tune stage: one Optuna study per (dataset, task, architecture), tracked in MLflow.

    tune(config.for_dataset("pbmc68k"), "multi", "dnn", trials=None, workers=1, storage=None, timeout=None)

Opens (or resumes) the study, enqueues its planned points, runs the workers, and writes
`artifacts/tuning/<dataset>/<task>/<arch>.json` (atomically): the best of the study's
first `n_trials` complete trials, with trial counts and the samples tuning validated on.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Optional

from benchmark.config import Config, mask_url
from benchmark.errors import UserError
from benchmark.outputs import write_json
from benchmark.paths import tuning_result
from benchmark.tuning.heartbeats import fail_dead_trials
from benchmark.tuning.space import exhaustive, planned_points, search_space
from benchmark.tuning.stopping import stop_on_signals
from benchmark.tuning.study import (StudySpec, best_of_first, budget_curve, load_study, n_complete, study_name,
                                    study_uid)
from benchmark.tuning.trial_runs import finish_parent, parent_run, study_experiment
from benchmark.tuning.workers import optimize, run_workers


def tune(config: Config, task: str, arch: str, trials: Optional[int] = None, workers: int = 1,
         storage: Optional[str] = None, timeout: Optional[float] = None) -> dict:
    """Run (or resume) the study of `arch` on `task`; write and return its result.

    `trials`: COMPLETE trials wanted (default `tuning.n_trials`); `storage`: an Optuna
    storage URL or journal path (default `tuning.storage`, or `OPTUNA_STORAGE`);
    `timeout`: seconds after which no new trial starts (default `tuning.timeout`).
    """
    tuning = config.params.tuning
    n_trials = trials if trials is not None else tuning.n_trials
    timeout = timeout if timeout is not None else tuning.timeout
    storage_url = config.resolve_url(storage) if storage else config.storage_url
    _check_budget(n_trials, workers, timeout)
    space = search_space(config, arch)
    out = tuning_result(config, task, arch)
    points = planned_points(config, arch, space) if space else []
    if exhaustive(arch, space) and trials is None:
        n_trials = len(points)  # the whole grid, whatever tuning.n_trials says
    if not space:
        result = _empty_result(storage_url)
        write_json(out, result)
        print(f"{arch} has an empty search space: nothing to tune; wrote {_rel(config, out)}", flush=True)
        return result

    from benchmark.data.prepare import load_task

    task_data = load_task(config, task, arch=arch)  # fails early (exit 2) when prepare has not run
    version = task_data.data_version
    name = study_name(config, task, arch, space, version)
    spec = StudySpec(config, task, arch, name, storage_url, None, None)
    study = load_study(spec, create=True)
    for key, value in (("dataset", config.dataset), ("task", task), ("arch", arch)):
        study.set_user_attr(key, value)
    for point in points:  # idempotent: a resumed study (or a second machine) adds none twice
        study.enqueue_trial(point, skip_if_exists=True)
    stale = fail_dead_trials(study, tuning.grace_period)
    spec.experiment_id = study_experiment(config, task)
    spec.parent_run_id = parent_run(config, spec.experiment_id, name, study_uid(study), task, arch, space,
                                    version, storage_url, n_trials)
    complete = n_complete(study)
    print(f"study {name} on {mask_url(storage_url)}: {complete}/{n_trials} complete"
          + (f", failed {len(stale)} stale trial(s) {stale}" if stale else "")
          + (f", {workers} workers" if workers > 1 else ""), flush=True)
    deadline = time.time() + timeout if timeout is not None else None
    if complete < n_trials:
        _run_study(spec, study, workers, n_trials, deadline)
    fail_dead_trials(study, tuning.grace_period)

    best = best_of_first(study, n_trials)
    if best is None:
        why = "before the timeout" if deadline is not None else "(every trial was pruned or failed)"
        raise UserError(f"study {name}: no trial completed {why}; see the trials' errors in MLflow")
    result = _result(study, best, n_trials, name, storage_url, task_data)
    write_json(out, result)
    finish_parent(spec, study, result)
    print(f"best value {result['best_value']:.4f} (trial {best.number}) "
          f"params {json.dumps(result['best_params'], sort_keys=True)}; "
          f"{result['n_complete']} complete, {result['n_pruned']} pruned, {result['n_failed']} failed; "
          f"wrote {_rel(config, out)}", flush=True)
    return result


def _check_budget(n_trials: int, workers: int, timeout: Optional[float]) -> None:
    if n_trials < 1:
        raise UserError(f"--trials must be at least 1, got {n_trials}")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout must be > 0 seconds, got {timeout:g}")


def _run_study(spec: StudySpec, study, workers: int, n_trials: int, deadline: Optional[float]) -> None:
    """Optimize here or in `workers` processes; an interrupted session ends its parent run KILLED
    (its trials end FAIL, and dead ones are failed once the workers are gone)."""
    interrupted = True
    try:
        with stop_on_signals():
            if workers == 1:
                optimize(spec, 0, n_trials, deadline)
            else:
                run_workers(spec, workers, n_trials, deadline)
        interrupted = False
    finally:
        if interrupted:
            import mlflow

            fail_dead_trials(study, spec.config.params.tuning.grace_period)
            mlflow.MlflowClient().set_terminated(spec.parent_run_id, "KILLED")


def _result(study, best, n_trials: int, name: str, storage_url: str, task_data) -> dict:
    """The stage's output: the best of the first `n_trials` complete trials and the study's counts."""
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    # Recorded so anyone can check that evaluate never scores a sample tuning validated on.
    validated = sorted(task_data.dev_samples[i] for fold in task_data.tuning_folds for i in task_data.folds[fold][1])
    return {
        "best_params": dict(best.params),
        "best_value": float(best.value),
        "best_trial": best.number,
        "n_complete": counts.get("COMPLETE", 0),
        "n_pruned": counts.get("PRUNED", 0),
        "n_failed": counts.get("FAIL", 0),
        "n_trials": n_trials,
        "budget_curve": budget_curve(study, n_trials),
        "study_name": name,
        "storage": mask_url(storage_url),
        "fit_seconds": round(sum(t.user_attrs.get("fit_seconds", 0.0) for t in trials), 1),
        # The trials' wall time, start to end (their fits, predictions and tracking).
        "trial_seconds": round(sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                                   if t.datetime_start and t.datetime_complete), 1),
        "validation_folds": task_data.tuning_folds,
        "validation_samples": validated,
    }


def _empty_result(storage_url: str) -> dict:
    return {"best_params": {}, "best_value": None, "best_trial": None, "n_complete": 0, "n_pruned": 0,
            "n_failed": 0, "n_trials": 0, "budget_curve": [], "study_name": None, "storage": mask_url(storage_url)}


def _rel(config: Config, path: Path) -> str:
    try:
        return str(path.relative_to(config.root))
    except ValueError:
        return str(path)
