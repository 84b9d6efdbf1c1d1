"""Trial tracking in MLflow: one parent run per study, one child run per trial.

- The parent run (tag `genebench.study_name`, and the study's `genebench.study_uid`)
  carries the study's params, best params and value, trial counts, `git_commit` and
  Optuna's plots. Each trial's child run carries its `hp.*` params, per-epoch `val_rmse`,
  fold RMSEs, `value` and a `genebench.trial_state` tag; each trial names its run (user
  attr `mlflow_run_id`).
- Not optuna-integration's `MLflowCallback`: it opens a trial's run only once the trial has ended
  (too late for the trial to name it) and nests it only under a run active in its own process,
  not under the study's parent run, which the `tune` process opened for all workers.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from benchmark.config import Config, SearchParam, mask_url
from benchmark.tuning.study import STUDY_UID, StudySpec

STUDY_TAG = "genebench.study_name"
TRIAL_TAG = "genebench.trial_number"
STATE_TAG = "genebench.trial_state"
RUN_ID_ATTR = "mlflow_run_id"  # trial user attr: the trial's MLflow child run


def study_experiment(config: Config, task: str) -> str:
    """Point MLflow at the project store; the (dataset, task) experiment's id."""
    from benchmark.tracking import configure, experiment_id

    configure(config)
    return experiment_id(config, task)


def parent_run(config: Config, experiment: str, name: str, uid: str, task: str, arch: str,
                space: dict[str, SearchParam], data_version: str, storage_url: str, n_trials: int) -> str:
    """The study's parent run, found by its `genebench.study_name` (and study id) tags or created."""
    import mlflow
    from mlflow.entities import Param, RunTag

    from benchmark.tracking import git_commit, git_dirty

    client = mlflow.MlflowClient()
    query = f"tags.`{STUDY_TAG}` = '{name}' and tags.`{STUDY_UID}` = '{uid}'"

    def find() -> list:
        runs = client.search_runs([experiment], filter_string=query, max_results=50)
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    runs = find()
    if not runs:
        run = client.create_run(experiment, run_name=name, tags={
            STUDY_TAG: name, STUDY_UID: uid, "dataset": str(config.dataset), "task": task, "arch": arch,
            "data_version": data_version})
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in _parent_params(
            config, name, task, arch, space, data_version).items()])
        runs = find()
        # Two machines joining at once may both create one: the earliest wins.
        for extra in runs[1:]:
            if extra.info.run_id == run.info.run_id:
                client.delete_run(extra.info.run_id)
    parent = runs[0].info.run_id
    client.update_run(parent, status="RUNNING")
    # Like evaluate's runs; a resumed study records the commit of its latest session.
    client.log_batch(parent, tags=[RunTag("storage", mask_url(storage_url)),
                                   RunTag("pruner", config.params.tuning.pruner),
                                   RunTag("n_trials", str(n_trials)),
                                   RunTag("git_commit", git_commit(config.root)),
                                   RunTag("git_dirty", git_dirty(config.root))])
    return parent


def hp_params(params: dict[str, Any]) -> dict[str, str]:
    """Hyperparameters as MLflow params, named as evaluate names them (`hp.<name>`)."""
    return {f"hp.{k}": str(v) for k, v in sorted(params.items())}


def _parent_params(config: Config, name: str, task: str, arch: str, space: dict[str, SearchParam],
                   data_version: str) -> dict[str, str]:
    """The study parent run's params, named as evaluate's runs name them (`training.<key>`)."""
    from benchmark.tracking import TRAINING_PARAMS

    training = config.params.training
    # Params are set once per study: only what its name fixes (a session's pruner and
    # trial budget are tags, updated when the study resumes).
    params = {"dataset": str(config.dataset), "task": task, "arch": arch, "study_name": name,
              "data_version": data_version, "tuning.folds": str(config.params.tuning.folds)}
    # All architectures, as evaluate logs them (only deep models' trials depend on them).
    params.update({f"training.{k}": str(getattr(training, k)) for k in TRAINING_PARAMS})
    params["search_space"] = json.dumps({k: v.model_dump(exclude_none=True) for k, v in space.items()},
                                        sort_keys=True)[:6000]
    return params


def start_trial_run(spec: StudySpec, trial) -> Optional[str]:
    """Start this trial's child run under the study's parent run, with its params.

    It stays the active run of this process until `end_trial_run`.
    """
    if spec.parent_run_id is None:
        return None
    import mlflow

    from benchmark.tracking import configure

    configure(spec.config)
    if mlflow.active_run() is not None:  # left over from an interrupted trial
        mlflow.end_run("FAILED")
    run = mlflow.start_run(
        experiment_id=spec.experiment_id, parent_run_id=spec.parent_run_id,
        run_name=f"trial-{trial.number:03d}",
        tags={TRIAL_TAG: str(trial.number), STATE_TAG: "RUNNING", "task": spec.task, "arch": spec.arch},
    )
    if trial.params:
        mlflow.log_params(hp_params(trial.params))
    trial.set_user_attr(RUN_ID_ATTR, run.info.run_id)
    return run.info.run_id


def end_trial_run(run_id: Optional[str], state: str, value: Optional[float], error: Optional[str],
                   curve, fold_rmse) -> None:
    """Per-epoch validation RMSE (step = fold * max_epochs + epoch), fold RMSEs, value, state."""
    if run_id is None:
        return
    import mlflow
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    metrics = [Metric("val_rmse", v, now, step) for step, v in curve]
    metrics += [Metric("fold_rmse", v, now, fold) for fold, v in enumerate(fold_rmse)]
    metrics += [Metric("value", value, now, 0)] if value is not None else []
    metrics.append(Metric("epochs", float(len(curve)), now, 0))
    tags = [RunTag(STATE_TAG, state)] + ([RunTag("error", error)] if error else [])
    for start in range(0, len(metrics), 900):  # log_batch takes at most 1000 entries
        mlflow.MlflowClient().log_batch(run_id, metrics=metrics[start:start + 900], tags=tags if start == 0 else [])
    mlflow.end_run("FAILED" if state == "FAIL" else "FINISHED")


def finish_parent(spec: StudySpec, study, result: dict) -> None:
    """Best params/value, counts and plots on the parent; child runs match the trials.

    Skipped (but for closing the run) when the study and result are what the parent
    already records, e.g. a rerun with nothing to top up.
    """
    import mlflow
    from mlflow.entities import Metric, RunTag

    client = mlflow.MlflowClient()
    parent = spec.parent_run_id
    digest = hashlib.md5(json.dumps([result, [(t.number, t.state.name) for t in study.get_trials(deepcopy=False)]],
                                    sort_keys=True, default=str).encode()).hexdigest()
    if client.get_run(parent).data.tags.get("genebench.result_digest") != digest:
        _reconcile_children(client, spec, study)
        now = int(time.time() * 1000)
        step = len(study.trials)
        metrics = [Metric(k, float(result[k]), now, step) for k in ("n_complete", "n_pruned", "n_failed")]
        if result["best_value"] is not None:
            metrics.append(Metric("best_value", result["best_value"], now, step))
        tags = [RunTag(f"best.{k}", str(v)) for k, v in result["best_params"].items()]
        tags.append(RunTag("best_trial", str(result.get("best_trial"))))
        client.log_batch(parent, metrics=metrics, tags=tags)
        client.log_dict(parent, result, "tuning/result.json")
        _log_plots(client, parent, study)
        client.set_tag(parent, "genebench.result_digest", digest)
    client.set_terminated(parent, "FINISHED")


def _reconcile_children(client, spec: StudySpec, study) -> None:
    """Every finished trial has one child run in its final state (a killed process
    leaves its run RUNNING, or none when it died before creating it)."""
    from mlflow.entities import Param, RunTag
    from optuna.trial import TrialState

    children = {}
    token = None
    while True:
        page = client.search_runs([spec.experiment_id], f"tags.mlflow.parentRunId = '{spec.parent_run_id}'",
                                  max_results=1000, page_token=token)
        for run in page:
            children.setdefault(run.data.tags.get(TRIAL_TAG), run)
        token = page.token
        if not token:
            break
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.RUNNING or trial.state == TrialState.WAITING:
            continue
        run = children.get(str(trial.number))
        if run is None:
            run = client.create_run(spec.experiment_id, run_name=f"trial-{trial.number:03d}", tags={
                "mlflow.parentRunId": spec.parent_run_id, TRIAL_TAG: str(trial.number),
                "task": spec.task, "arch": spec.arch})
            client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in hp_params(trial.params).items()])
        elif run.info.status != "RUNNING":
            continue
        client.log_batch(run.info.run_id, tags=[RunTag(STATE_TAG, trial.state.name)])
        client.set_terminated(run.info.run_id, "FAILED" if trial.state == TrialState.FAIL else "FINISHED")


def _log_plots(client, run_id: str, study) -> None:
    """Optimisation history and (with >= 2 complete trials and > 1 param) importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as optuna_plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = {"optuna/optimization_history.png": optuna_plots.plot_optimization_history}
    varying = {name for t in complete for name in t.params
               if len({repr(u.params.get(name)) for u in complete}) > 1}
    if len(complete) >= 2 and len(varying) > 1:
        plots["optuna/param_importances.png"] = optuna_plots.plot_param_importances
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path, plot in plots.items():
            try:
                axes = plot(study)
                figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
                figure.set_size_inches(8, 5)
                figure.tight_layout()
                client.log_figure(run_id, figure, path)
            except Exception as exc:  # a plot is a courtesy; tuning results stand without it
                client.set_tag(run_id, f"plot_skipped.{Path(path).stem}", f"{type(exc).__name__}: {exc}"[:250])
            finally:
                plt.close("all")
