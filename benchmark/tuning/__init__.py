"""The tune stage: one Optuna study per (dataset, task, architecture), tracked in MLflow.

    tune(config.for_dataset("pbmc68k"), "multi", "dnn", trials=None, workers=1, storage=None, timeout=None)

A module per concern:
- `stage`: `tune`, the stage itself, and its result file.
- `space`: the search space from params, its defaults-first plan and `suggest`.
- `study`: the study's identity (name, code digest), its storage, sampler and pruner.
- `objective`: mean validation RMSE over the tuning folds, reported to the pruner.
- `workers`: `study.optimize` in this process or in spawned ones, until the budget.
- `heartbeats`: trial owners, and failing the trials of dead processes.
- `stopping`: Ctrl-C and SIGTERM stop at the next epoch or trial.
- `trial_runs`: the study's MLflow parent run and one child run per trial.
"""

from benchmark.tuning.heartbeats import fail_dead_trials, host_id
from benchmark.tuning.objective import Objective
from benchmark.tuning.stage import tune
from benchmark.tuning.study import StudySpec, best_of_first, code_digest, make_pruner, quiet

__all__ = ["Objective", "StudySpec", "best_of_first", "code_digest", "fail_dead_trials", "host_id",
           "make_pruner", "quiet", "tune"]
