"""The tune stage: one Optuna study per (dataset, task, architecture), tracked in MLflow.

    tune(config.for_dataset("pbmc68k"), "multi", "dnn", trials=None, workers=1, storage=None, timeout=None)

- Search space: `models.<arch>.search_space`, turned into `trial.suggest_*` calls in one
  place (`suggest`). An empty space (`mean`) records that without trials, Optuna or
  TensorFlow.
- Objective: mean validation RMSE (original target units) over the prepared tuning
  folds, development samples only; evaluate never scores those folds. Deep models report
  their per-epoch validation RMSE at step `fold * max_epochs + epoch` to the pruner
  (`tuning.pruner`: none, median, hyperband), on the objective's scale.
- Study name: `<dataset>-<task>-<arch>-d<data version>-s<hash>`, the hash covering what
  changes a trial's meaning (search space, untuned defaults, prepared folds and genes,
  `features`, `training` for deep models, and the source of the code that trains and
  scores a model). A rerun resumes the study and tops it up to `n_trials` COMPLETE
  trials; the result is the best of its first `n_trials` complete trials (by number).
- Workers: Optuna's own `study.optimize`, in this process (`--workers 1`) or in N
  spawned processes (fork after TensorFlow loads hangs); the same command on another
  machine joins the study. Each stops once the study holds `n_trials` complete trials,
  so up to `workers - 1` extra trials may complete; the result stays budget-exact.
  Sampler: TPE with `tuning.n_startup_trials`, seeded from (`tuning.seed`, worker,
  trials already in the study).
- Dead trials: RDB storage runs Optuna's heartbeat, and `study.optimize` fails trials
  silent for `tuning.grace_period`. Trials also record their owner (`host`, `pid`): a
  RUNNING trial whose process is gone from this host is failed at once (`study.tell`).
  Journal storage has no heartbeat in Optuna 5: there a trial killed on another host
  stays RUNNING (it never counts as complete).
- Interrupts: Ctrl-C or SIGTERM stops at the next epoch or trial boundary; running
  trials end FAIL, finished ones stay, a rerun resumes (exit 130).
- MLflow: one parent run per study (tag `genebench.study_name`), each trial a child run
  with its `hp.*` params, per-epoch `val_rmse`, fold RMSEs, `value` and a
  `genebench.trial_state` tag; the parent carries best params and value, trial counts,
  `git_commit` and Optuna's plots. Each trial carries its run id (user attr
  `mlflow_run_id`); the study names its objective (`rmse`).
- Output: `artifacts/tuning/<dataset>/<task>/<arch>.json` (written atomically).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from benchmark import DEEP_ARCHS
from benchmark.config import Config, SearchParam, mask_url
from benchmark.errors import UserError
from benchmark.outputs import write_json
from benchmark.paths import prepared_dir, tuning_result
from benchmark.stores import schema_lock

STUDY_TAG = "genebench.study_name"
# The same study name in two storages is two studies: each study carries a random id
# (user attr) that its parent run repeats, so their MLflow runs never mix.
STUDY_UID = "genebench.study_uid"
TRIAL_TAG = "genebench.trial_number"
RUN_ID_ATTR = "mlflow_run_id"  # trial user attr: the trial's MLflow child run
METRIC_NAMES = ["rmse"]  # the objective, named for optuna-dashboard (mean validation RMSE)
STATE_TAG = "genebench.trial_state"
# Deep models may tune these two without a default: they fall back to `training.*`.
TRAINING_HYPERPARAMETERS = ("learning_rate", "batch_size")
MAX_FAILURES_IN_A_ROW = 5
POLL_S = 0.5
_CHOICE_TYPES = (type(None), bool, int, float, str)


# -- search space --------------------------------------------------------------------


def search_space(config: Config, arch: str) -> dict[str, SearchParam]:
    """`models.<arch>.search_space`, checked beyond what params validation can know.

    Raises UserError naming `models.<arch>.search_space.<key>` for a hyperparameter the
    architecture does not have, a choice Optuna cannot store, or a bad `step`.
    """
    model = config.params.model(arch)
    known = set(model.defaults) | (set(TRAINING_HYPERPARAMETERS) if arch in DEEP_ARCHS else set())
    for key, spec in model.search_space.items():
        where = f"{config.path.name}: models.{arch}.search_space.{key}"
        if key not in known:
            names = ", ".join(sorted(known)) or "none"
            raise UserError(f"{where}: {arch} has no hyperparameter {key!r} (known: {names}; "
                            f"a new one needs a value in models.{arch}.defaults)")
        if spec.type == "categorical":
            bad = [c for c in spec.choices if not isinstance(c, _CHOICE_TYPES)]
            if bad:
                raise UserError(f"{where}: choices must be numbers, strings, booleans or null, got {bad[0]!r}")
            if len(set(map(repr, spec.choices))) != len(spec.choices):
                raise UserError(f"{where}: choices contain duplicates")
        elif spec.step is not None:
            if spec.step <= 0:
                raise UserError(f"{where}: 'step' must be > 0, got {spec.step:g}")
            if spec.type == "int" and spec.step != int(spec.step):
                raise UserError(f"{where}: an int parameter needs an integer 'step', got {spec.step:g}")
    return dict(model.search_space)


def default_point(config: Config, arch: str, space: dict[str, SearchParam]) -> dict[str, Any]:
    """The architecture's defaults as a point of its search space (the first trial of every study).

    A tuned hyperparameter without a default (a deep model's `learning_rate` or
    `batch_size`) takes `training.*`'s value. Raises UserError naming the key when a default
    lies outside its search space: the study could not start from it.
    """
    defaults = config.params.model(arch).defaults
    training = config.params.training.model_dump()
    point = {}
    for name, spec in space.items():
        value = defaults[name] if name in defaults else training[name]
        where = f"{config.path.name}: models.{arch}.defaults.{name}"
        if spec.type == "categorical":
            if value not in spec.choices or type(value) is not type(spec.choices[spec.choices.index(value)]):
                raise UserError(f"{where} is {value!r}, not one of models.{arch}.search_space.{name}'s choices "
                                f"({', '.join(map(repr, spec.choices))}); every study starts from the defaults")
        elif value is None or not (spec.low <= float(value) <= spec.high):
            raise UserError(f"{where} is {value!r}, outside models.{arch}.search_space.{name} "
                            f"[{spec.low:g}, {spec.high:g}]; every study starts from the defaults")
        point[name] = value
    return point


def exhaustive(arch: str, space: dict[str, SearchParam]) -> bool:
    """A baseline whose search space holds only choices is searched exhaustively: its trials
    cost milliseconds to seconds, so its result never rests on the luck of a few trials."""
    return arch not in DEEP_ARCHS and bool(space) and all(spec.type == "categorical" for spec in space.values())


def planned_points(config: Config, arch: str, space: dict[str, SearchParam]) -> list[dict[str, Any]]:
    """The trials every study enqueues: the defaults first, then (`exhaustive`) every other
    point of the grid, in the order of the choices."""
    import itertools

    first = default_point(config, arch, space)
    points = [first]
    if exhaustive(arch, space):
        names = list(space)
        for values in itertools.product(*(space[name].choices for name in names)):
            point = dict(zip(names, values))
            if point != first:
                points.append(point)
    return points


def suggest(trial, space: dict[str, SearchParam]) -> dict[str, Any]:
    """The one place a search space becomes `trial.suggest_*` calls; returns the values."""
    values = {}
    for name, spec in space.items():
        if spec.type == "categorical":
            values[name] = trial.suggest_categorical(name, list(spec.choices))
        elif spec.type == "int":
            values[name] = trial.suggest_int(name, int(spec.low), int(spec.high),
                                             step=int(spec.step or 1), log=spec.log)
        else:
            values[name] = trial.suggest_float(name, float(spec.low), float(spec.high),
                                               step=spec.step, log=spec.log)
    return values


# -- study identity and storage ------------------------------------------------------


# The code a trial's value depends on: fitting, models, preprocessing, the task arrays.
_TRAINING_CODE = ("training.py", "models", "metrics.py", "data/prepare.py", "data/validation.py")


def code_digest() -> str:
    """sha256 over the source of the modules that train and score a model (`_TRAINING_CODE`)."""
    package = Path(__file__).parent
    digest = hashlib.sha256()
    for entry in _TRAINING_CODE:
        path = package / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(package).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def study_name(config: Config, task: str, arch: str, space: dict[str, SearchParam], data_version: str) -> str:
    """`<dataset>-<task>-<arch>-d<data version[:8]>-s<hash[:8]>`: equal names mean comparable trials."""
    model = config.params.model(arch)
    prepared = prepared_dir(config)
    meaning = {
        "space": {k: space[k].model_dump() for k in sorted(space)},
        "defaults": {k: v for k, v in sorted(model.defaults.items()) if k not in space},
        "tuning_folds": config.params.tuning.folds,
        "features": config.params.features.model_dump(),
        "training": config.params.training.model_dump() if arch in DEEP_ARCHS else None,
        # Folds, held-out split, targets and features as prepared.
        "prepared": {name: hashlib.md5((prepared / name).read_bytes()).hexdigest()
                     for name in ("split.json", f"{task}.json") if (prepared / name).exists()},
        "code": code_digest(),
    }
    digest = hashlib.sha256(json.dumps(meaning, sort_keys=True, default=str).encode()).hexdigest()
    return f"{config.dataset}-{task}-{arch}-d{data_version[:8]}-s{digest[:8]}"


def is_journal(url: str) -> bool:
    """A bare path (no scheme) is an Optuna journal file."""
    return "://" not in url


def open_storage(url: str, tuning, flag: str = "tuning.storage"):
    """RDB storage with heartbeat for an SQLAlchemy URL, else a journal file storage.

    Schema creation runs under `schema_lock`, so processes starting together on an empty
    database do not race; an unreachable database or a wrong password is one UserError.
    """
    import optuna

    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url)
        if path.is_dir():
            raise UserError(f"{flag}: {url} is a directory; a journal storage needs a file path")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite:"):
        # Workers and their heartbeats share one file: wait for its lock, don't fail.
        engine_kwargs = {"connect_args": {"timeout": 120}}
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with schema_lock(url, flag):
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                              heartbeat_interval=tuning.heartbeat_interval,
                                              grace_period=tuning.grace_period)
    except UserError:
        raise
    except Exception as exc:  # bad URL, missing driver, unreachable server, wrong password
        from benchmark.stores import reason

        raise UserError(f"{flag}: cannot open Optuna storage {mask_url(url)}: {reason(exc)}") from None


def make_pruner(config: Config):
    """Pruner of `tuning.pruner`. Steps are `fold * max_epochs + epoch` over `tuning.folds` folds.

    median: prunes a trial whose best loss so far is above the median of complete trials
    at the same step, once `tuning.n_startup_trials` trials have completed, at least two
    complete trials reached that step, and only after the first `max_epochs // 3` epochs.
    `n_trials` counts complete trials, so every pruned trial is an extra one. Judging
    after a fifth of the epochs against whatever complete curves reached the step
    (measured on the bundled data) stopped 31-44 recurrent trials per study, most still
    improving and some ending near the best, and more than doubled the tune stages' time.
    A third of the way in, slow learners are still stopped early (scripts/bench_pruning.py:
    half the epochs of no pruning at the same trial count, same best value).
    """
    import optuna

    tuning, max_epochs = config.params.tuning, config.params.training.max_epochs
    if tuning.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tuning.n_startup_trials,
                                           n_warmup_steps=max_epochs // 3, n_min_trials=2)
    if tuning.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=tuning.folds * max_epochs,
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


# -- one trial -------------------------------------------------------------------------


def _host_id() -> str:
    """Hostname plus kernel boot id: containers sharing both but not a PID namespace would
    wrongly fail each other's trials."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study, grace_period: float) -> list[int]:
    """Fail RUNNING trials whose process is gone; returns their numbers.

    Optuna's heartbeat check (RDB storage) fails trials silent for `grace_period`. Beyond
    it: a trial whose owner (`host`, `pid` user attrs) is no longer alive on this host, and
    one that never recorded an owner within `grace_period` of its start (killed between
    Optuna's ask and its first heartbeat, so the heartbeat check never sees it).
    """
    from datetime import datetime

    import optuna
    from optuna.trial import TrialState

    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)  # RDB heartbeat; a no-op for journal storage
    here, now = _host_id(), datetime.now()
    still_running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    failed = running - {t.number for t in still_running}
    for trial in still_running:
        attrs = trial.user_attrs
        dead = attrs.get("host") == here and "pid" in attrs and not _alive(int(attrs["pid"]))
        unclaimed = ("pid" not in attrs and trial.datetime_start is not None
                     and (now - trial.datetime_start).total_seconds() > grace_period)
        if dead or unclaimed:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.add(trial.number)
    return sorted(failed)


@dataclass
class StudySpec:
    """Everything a worker process needs to open the study (picklable for spawn)."""

    config: Config
    task: str
    arch: str
    study_name: str
    storage_url: str
    experiment_id: Optional[str]
    parent_run_id: Optional[str]

    # Config's attribute delegation does not survive pickling: send its parts instead.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        config = state.pop("config")
        state["_config"] = (config.params.model_dump(), str(config.path), str(config.root), config.dataset)
        return state

    def __setstate__(self, state: dict) -> None:
        from benchmark.config import Params

        params, path, root, dataset = state.pop("_config")
        self.__dict__.update(state)
        self.config = Config(Params.model_validate(params), Path(path), Path(root), dataset=dataset)


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
        trial.set_user_attr("host", _host_id())
        trial.set_user_attr("pid", os.getpid())
        run_id = _start_child_run(self.spec, trial)
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
            _end_child_run(run_id, state, value, error, curve, fold_rmse)

    def _folds(self, trial, regressor, hp: dict, curve: list, fold_rmse: list) -> float:
        import math

        import numpy as np
        import optuna
        from sklearn.metrics import mean_squared_error

        from benchmark.training import fit_fold

        deep = self.spec.arch in DEEP_ARCHS
        for position, fold in enumerate(self.data.tuning_folds):
            _check_stop()
            train, val = self.data.folds[fold]

            def on_epoch(epoch: int, val_rmse: float, fold: int = fold, position: int = position) -> None:
                step = position * self.max_epochs + epoch
                curve.append((step, float(val_rmse)))
                trial.report(float(val_rmse), step)
                _check_stop()
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at fold {fold} epoch {epoch}")

            _, predicted = fit_fold(self.spec.arch, hp, self.config, self.data.X_dev, self.data.Y_dev,
                                    train, val, epoch_callback=on_epoch if deep else None, regressor=regressor)
            if not np.all(np.isfinite(predicted)):
                raise FloatingPointError("non-finite validation predictions (training diverged)")
            fold_rmse.append(math.sqrt(mean_squared_error(self.data.Y_dev[val], predicted)))
        return float(np.mean(fold_rmse))


# -- MLflow --------------------------------------------------------------------------


def _mlflow_setup(config: Config, task: str) -> str:
    """Point MLflow at the project store; the (dataset, task) experiment's id."""
    from benchmark.tracking import configure, experiment_id

    configure(config)
    return experiment_id(config, task)


def study_uid(study) -> str:
    """The study's random id, created on first use (re-read: a concurrent creator may win)."""
    import uuid

    if STUDY_UID not in study.user_attrs:
        study.set_user_attr(STUDY_UID, uuid.uuid4().hex)
    return str(study.user_attrs[STUDY_UID])


def _parent_run(config: Config, experiment: str, name: str, uid: str, task: str, arch: str,
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


def _start_child_run(spec: StudySpec, trial) -> Optional[str]:
    """Start this trial's child run under the study's parent run, with its params.

    It stays the active run of this process until `_end_child_run`.
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


def _end_child_run(run_id: Optional[str], state: str, value: Optional[float], error: Optional[str],
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


def _finish_parent(spec: StudySpec, study, result: dict) -> None:
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


# -- workers -----------------------------------------------------------------------------


# Ctrl-C / SIGTERM only set this flag; the study stops at the next safe point (between
# epochs or trials) with the running trial told FAIL. An interrupt raised in the middle of
# a storage write can leave an SQLite transaction open and the store locked. A second
# signal to the main process interrupts at once.
_STOP = threading.Event()


def _request_stop(signum, frame) -> None:
    if _STOP.is_set():
        raise KeyboardInterrupt
    _STOP.set()


def _check_stop() -> None:
    if _STOP.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_on_signals(handler=_request_stop):
    """Route SIGINT and SIGTERM to `handler` (main thread only) for the block."""
    _STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _quiet() -> None:
    """No per-trial INFO lines from Optuna, MLflow, TensorFlow."""
    import logging

    import mlflow  # noqa: F401  (MLflow resets its logger to INFO on import)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line reports each failed trial
    optuna.logging.disable_propagation()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for name in ("mlflow", "alembic", "git", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def best_of_first(study, n_trials: int):
    """The best of the study's first `n_trials` COMPLETE trials (by number), or None."""
    from optuna.trial import TrialState

    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    complete = complete[:n_trials]
    return min(complete, key=lambda t: (t.value, t.number)) if complete else None


def _n_complete(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


class _AfterTrial:
    """`study.optimize` callback: a progress line per trial; stop at `n_trials` complete,
    on Ctrl-C, or after `MAX_FAILURES_IN_A_ROW` failures (kept in `error`)."""

    def __init__(self, n_trials: int, grace_period: float):
        self.n, self.grace, self.failures, self.error = n_trials, grace_period, 0, None

    def __call__(self, study, trial) -> None:
        complete = _n_complete(study)
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
        if complete >= self.n or _STOP.is_set() or self.error:
            study.stop()


def _load_study(spec: StudySpec, worker: int = 0, create: bool = False):
    """The study, with a pruner and a TPE sampler seeded from (seed, study name, worker, trials so far)."""
    import numpy as np
    import optuna

    _quiet()
    config, tuning = spec.config, spec.config.params.tuning
    flag = "--storage" if spec.storage_url != config.storage_url else "tuning.storage"
    storage = open_storage(spec.storage_url, tuning, flag=flag)
    if create:
        study = optuna.create_study(study_name=spec.study_name, storage=storage, direction="minimize",
                                    load_if_exists=True)
        if study.metric_names != METRIC_NAMES:  # also names studies created before it was set
            study.set_metric_names(METRIC_NAMES)
    # Seeded from the study's identity too: every new study with the same tuning.seed would
    # otherwise propose the same values in the same order, whatever its data. The identity
    # is the name less the dataset's own name (task, arch, data version, what the trials
    # mean): the same matrix imported under two names is searched alike.
    identity = spec.study_name.removeprefix(f"{config.dataset}-")
    identity = int(hashlib.sha256(identity.encode()).hexdigest()[:8], 16)
    seed = [tuning.seed, identity, worker, len(optuna.load_study(study_name=spec.study_name, storage=storage).trials)]
    sampler = optuna.samplers.TPESampler(n_startup_trials=tuning.n_startup_trials,
                                         seed=int(np.random.SeedSequence(seed).generate_state(1)[0]))
    return optuna.load_study(study_name=spec.study_name, storage=storage, sampler=sampler,
                             pruner=make_pruner(config))


def _optimize(spec: StudySpec, worker: int, n_trials: int, deadline: Optional[float]) -> None:
    """Run `study.optimize` in this process until the study holds `n_trials` complete trials."""
    study = _load_study(spec, worker)
    if _n_complete(study) >= n_trials:
        return
    after = _AfterTrial(n_trials, spec.config.params.tuning.grace_period)
    timeout = None if deadline is None else max(0.0, deadline - time.time())
    study.optimize(Objective(spec), timeout=timeout, callbacks=[after], catch=(Exception,), gc_after_trial=False)
    _check_stop()
    if after.error:
        raise RuntimeError(after.error)


def _worker_main(spec: StudySpec, worker: int, n_trials: int, deadline: Optional[float]) -> None:
    """A spawned worker: Ctrl-C (to the process group) or the parent's SIGTERM only asks it
    to stop at its next epoch or trial; the parent kills it if it does not within a minute."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: _STOP.set())
    try:
        _optimize(spec, worker, n_trials, deadline)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        print(f"genebench: tuning worker {worker}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def _run_workers(spec: StudySpec, workers: int, n_trials: int, deadline: Optional[float]) -> None:
    """`workers` spawned processes, each running `_optimize`; the parent waits and forwards a stop."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(spec, w, n_trials, deadline), name=f"genebench-tune-{w}")
             for w in range(workers)]
    for proc in procs:
        proc.start()
    try:
        while any(proc.is_alive() for proc in procs) and not _STOP.is_set():
            for proc in procs:
                proc.join(POLL_S / workers)
        if _STOP.is_set():
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
    if dead and _n_complete(_load_study(spec)) < n_trials and (deadline is None or time.time() < deadline):
        raise RuntimeError(f"tuning stopped short of {n_trials} complete trials: {', '.join(dead)}")


# -- the stage -----------------------------------------------------------------------


def _empty_result(config: Config, storage_url: str) -> dict:
    return {"best_params": {}, "best_value": None, "best_trial": None, "n_complete": 0, "n_pruned": 0,
            "n_failed": 0, "n_trials": 0, "study_name": None, "storage": mask_url(storage_url)}


def tune(config: Config, task: str, arch: str, trials: Optional[int] = None, workers: int = 1,
         storage: Optional[str] = None, timeout: Optional[float] = None) -> dict:
    """Run (or resume) the study of `arch` on `task`; write and return its result.

    `trials`: COMPLETE trials wanted (default `tuning.n_trials`); `storage`: an Optuna
    storage URL or journal path (default `tuning.storage`, or `OPTUNA_STORAGE`);
    `timeout`: seconds after which no new trial starts (default `tuning.timeout`).
    """
    from collections import Counter

    tuning = config.params.tuning
    n_trials = trials if trials is not None else tuning.n_trials
    timeout = timeout if timeout is not None else tuning.timeout
    storage_url = config.resolve_url(storage) if storage else config.storage_url
    if n_trials < 1:
        raise UserError(f"--trials must be at least 1, got {n_trials}")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout must be > 0 seconds, got {timeout:g}")
    space = search_space(config, arch)
    out = tuning_result(config, task, arch)
    points = planned_points(config, arch, space) if space else []
    if exhaustive(arch, space) and trials is None:
        n_trials = len(points)  # the whole grid, whatever tuning.n_trials says
    if not space:
        result = _empty_result(config, storage_url)
        write_json(out, result)
        print(f"{arch} has an empty search space: nothing to tune; wrote {_rel(config, out)}", flush=True)
        return result

    from benchmark.data.prepare import load_task

    task_data = load_task(config, task, arch=arch)  # fails early (exit 2) when prepare has not run
    version = task_data.data_version
    # Recorded so anyone can check that evaluate never scores a sample tuning validated on.
    validated = sorted(task_data.dev_samples[i] for fold in task_data.tuning_folds for i in task_data.folds[fold][1])
    name = study_name(config, task, arch, space, version)
    spec = StudySpec(config, task, arch, name, storage_url, None, None)
    study = _load_study(spec, create=True)
    for key, value in (("dataset", config.dataset), ("task", task), ("arch", arch)):
        study.set_user_attr(key, value)
    for point in points:  # idempotent: a resumed study (or a second machine) adds none twice
        study.enqueue_trial(point, skip_if_exists=True)
    stale = fail_dead_trials(study, tuning.grace_period)
    spec.experiment_id = _mlflow_setup(config, task)
    spec.parent_run_id = _parent_run(config, spec.experiment_id, name, study_uid(study), task, arch, space,
                                     version, storage_url, n_trials)
    complete = _n_complete(study)
    print(f"study {name} on {mask_url(storage_url)}: {complete}/{n_trials} complete"
          + (f", failed {len(stale)} stale trial(s) {stale}" if stale else "")
          + (f", {workers} workers" if workers > 1 else ""), flush=True)
    deadline = time.time() + timeout if timeout is not None else None
    interrupted = True
    try:
        if complete < n_trials:
            with _stop_on_signals():
                if workers == 1:
                    _optimize(spec, 0, n_trials, deadline)
                else:
                    _run_workers(spec, workers, n_trials, deadline)
        interrupted = False
    finally:
        fail_dead_trials(study, tuning.grace_period)
        if interrupted:
            import mlflow

            mlflow.MlflowClient().set_terminated(spec.parent_run_id, "KILLED")

    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    best = best_of_first(study, n_trials)
    if best is None:
        why = "before the timeout" if deadline is not None else "(every trial was pruned or failed)"
        raise UserError(f"study {name}: no trial completed {why}; see the trials' errors in MLflow")
    result = {
        "best_params": dict(best.params),
        "best_value": float(best.value),
        "best_trial": best.number,
        "n_complete": counts.get("COMPLETE", 0),
        "n_pruned": counts.get("PRUNED", 0),
        "n_failed": counts.get("FAIL", 0),
        "n_trials": n_trials,
        "study_name": name,
        "storage": mask_url(storage_url),
        "fit_seconds": round(sum(t.user_attrs.get("fit_seconds", 0.0) for t in study.get_trials(deepcopy=False)), 1),
        "validation_folds": task_data.tuning_folds,
        "validation_samples": validated,
    }
    write_json(out, result)
    _finish_parent(spec, study, result)
    print(f"best value {result['best_value']:.4f} (trial {best.number}) "
          f"params {json.dumps(result['best_params'], sort_keys=True)}; "
          f"{result['n_complete']} complete, {result['n_pruned']} pruned, {result['n_failed']} failed; "
          f"wrote {_rel(config, out)}", flush=True)
    return result


def _rel(config: Config, path: Path) -> str:
    try:
        return str(path.relative_to(config.root))
    except ValueError:
        return str(path)
