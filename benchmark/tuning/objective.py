"""The objective: mean validation RMSE (original target units) over the tuning folds.

Development samples only, over the prepared tuning folds; evaluate never scores those
folds. Deep models report their per-epoch validation RMSE at step `fold * max_epochs +
epoch` to the pruner (`tuning.pruner`: none, median, hyperband), on the objective's scale.
"""

from __future__ import annotations

from benchmark import DEEP_ARCHS
from benchmark.tuning.heartbeats import claim
from benchmark.tuning.space import search_space, suggest
from benchmark.tuning.stopping import check_stop
from benchmark.tuning.study import StudySpec
from benchmark.tuning.trial_runs import end_trial_run, start_trial_run


class Objective:
    """Mean validation RMSE over the tuning folds; one MLflow child run per trial.

    A plain callable for `study.optimize`: suggests its parameters, records its owner,
    reports per-epoch validation RMSE to the pruner and ends its child run in its state.
    """

    def __init__(self, spec: StudySpec):
        from benchmark.data.prepare import load_task

        self.spec, self.config = spec, spec.config
        self.space = search_space(self.config, spec.arch)
        self.data = load_task(self.config, spec.task, arch=spec.arch)  # development samples only
        self.max_epochs = self.config.params.training.max_epochs

    def __call__(self, trial) -> float:
        import optuna

        from benchmark.training import make_regressor

        hp = suggest(trial, self.space)
        claim(trial)
        run_id = start_trial_run(self.spec, trial)
        curve: list[tuple[int, float]] = []
        fold_rmse: list[float] = []
        regressor = make_regressor(self.spec.arch, hp, self.config)  # refitted per fold
        state, value, error = "FAIL", None, None
        try:
            value = self._folds(trial, regressor, hp, curve, fold_rmse)
            state = "COMPLETE"
            return value
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}".strip()[:500]
            trial.set_user_attr("error", error)
            raise
        finally:  # KeyboardInterrupt included: the trial and its run end FAIL, not RUNNING
            trial.set_user_attr("fit_seconds", round(regressor.fit_seconds, 3))
            trial.set_user_attr("epochs", len(curve))
            end_trial_run(run_id, state, value, error, curve, fold_rmse)

    def _folds(self, trial, regressor, hp: dict, curve: list, fold_rmse: list) -> float:
        import math

        import numpy as np
        import optuna
        from sklearn.metrics import mean_squared_error

        from benchmark.training import fit_fold

        deep = self.spec.arch in DEEP_ARCHS
        for position, fold in enumerate(self.data.tuning_folds):
            check_stop()
            train, val = self.data.folds[fold]

            def on_epoch(epoch: int, val_rmse: float, fold: int = fold, position: int = position) -> None:
                step = position * self.max_epochs + epoch
                curve.append((step, float(val_rmse)))
                trial.report(float(val_rmse), step)
                check_stop()
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at fold {fold} epoch {epoch}")

            _, predicted = fit_fold(self.spec.arch, hp, self.config, self.data.X_dev, self.data.Y_dev,
                                    train, val, epoch_callback=on_epoch if deep else None, regressor=regressor)
            if not np.all(np.isfinite(predicted)):
                raise FloatingPointError("non-finite validation predictions (training diverged)")
            fold_rmse.append(math.sqrt(mean_squared_error(self.data.Y_dev[val], predicted)))
        return float(np.mean(fold_rmse))
