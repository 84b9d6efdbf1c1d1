"""The tune stage: one Optuna study per (dataset, task, architecture), tracked in MLflow.

    tune(config.for_dataset("pbmc68k"), "multi", "dnn", trials=None, workers=1, storage=None, timeout=None)

- Search space: `models.<arch>.search_space`, turned into `trial.suggest_*` calls in one
  place (`suggest`). An empty space (`mean`) records that without trials, Optuna or
  TensorFlow.
- Objective: mean validation RMSE (original target units) over the prepared tuning
  folds (the first `tuning.folds`), development samples only (`load_task` without
  `held_out`). evaluate never scores those folds, so no sample tuning validated on is
  in the reported CV. Deep models report their per-epoch early-stopping loss at step
  `fold * max_epochs + epoch` to the pruner (`tuning.pruner`: none, median, hyperband).
- Study name: `<dataset>-<task>-<arch>-d<data version>-s<hash>`, the hash covering
  everything that changes what a trial's value means (search space, untuned defaults,
  prepared folds and genes, `tuning.folds`, `features`, `training` for deep models, and
  the source of the code that trains and scores a model: a code change starts a new
  study and never returns the old code's results). A rerun resumes the
  study and tops it up to `n_trials` COMPLETE trials; pruned and failed trials do not
  count. The result is the best of the study's first `n_trials` complete trials (by
  trial number), so a smaller `n_trials` gives the answer that budget gave.
- Coordinator: the parent process alone calls `study.ask()` and samples the parameters;
  it asks only while `complete + running < n_trials` (running counted over the whole
  study), so local workers end with exactly `n_trials` complete. Workers (spawned
  processes for `--workers N > 1`, else the parent itself) run the objective and `tell`.
  The same command on another machine joins the study; the only overshoot is the race
  between two machines' count-then-ask, at most `n_trials + workers - 1` in practice.
- Sampler: TPE with `tuning.n_startup_trials`, a fresh sampler per ask seeded from
  (`tuning.seed`, worker, trials already in the study).
- Dead trials: every trial records its owner (`host`, `pid`) in user attrs. On start and
  while waiting, RUNNING trials whose owner process is gone from this host are failed at
  once; trials of other hosts fail after `tuning.grace_period` without a heartbeat (RDB:
  Optuna's heartbeat and `fail_stale_trials`; journal file: a `heartbeat` user attr that
  this module writes and checks, since Optuna 5 has no journal heartbeat). Host identity
  is hostname plus kernel boot id: containers sharing one hostname and kernel but not a
  PID namespace would wrongly fail each other's trials.
- Interrupts: Ctrl-C or SIGTERM stops the study at the next epoch or trial boundary; the
  running trials end FAIL, their finished siblings stay, a rerun resumes (exit 130).
- MLflow: one parent run per study (tag `genebench.study_name`), each trial a child run
  (`mlflow.start_run(parent_run_id=...)`) with its params, per-epoch `val_loss`, fold
  RMSEs, `value` and a `genebench.trial_state` tag; the parent carries best params, best
  value, trial counts, `git_commit`/`git_dirty` and Optuna's optimisation-history and
  importance plots. Parameter names follow evaluate's runs: `hp.<name>` for a
  hyperparameter, `training.<key>`, `tuning.<key>`. Each Optuna trial carries its child
  run's id (user attr `mlflow_run_id`) and the study names its objective (`rmse`).
- Output: `artifacts/tuning/<dataset>/<task>/<arch>.json` (written atomically).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from benchmark import DEEP_ARCHS
from benchmark.config import Config, SearchParam, mask_url
from benchmark.errors import UserError
from benchmark.outputs import write_json
from benchmark.paths import prepared_dir, tuning_result

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
POLL_S = 1.0
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
    """RDB storage with heartbeat for an SQLAlchemy URL, else a journal file storage."""
    import optuna

    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url)
        if path.is_dir():
            raise UserError(f"{flag}: {url} is a directory; a journal storage needs a file path")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs = {"pool_pre_ping": True}
    if url.startswith("sqlite:"):
        # Workers and their heartbeats share one file: wait for its lock, don't fail.
        engine_kwargs = {"connect_args": {"timeout": 120}}
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=tuning.heartbeat_interval,
            grace_period=tuning.grace_period,
        )
    except Exception as exc:  # bad URL, missing driver, unreachable server
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{flag}: cannot open Optuna storage {mask_url(url)}: {reason}") from None


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


def make_sampler(config: Config, worker: int, n_existing: int):
    """TPE seeded from (tuning.seed, worker, trials already in the study)."""
    import numpy as np
    import optuna

    tuning = config.params.tuning
    seed = int(np.random.SeedSequence([tuning.seed, worker, n_existing]).generate_state(1)[0])
    return optuna.samplers.TPESampler(n_startup_trials=tuning.n_startup_trials, seed=seed)


# -- trial ownership and stale trials -----------------------------------------------


def _host_id() -> str:
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


def _claim(storage, trial_id: int, worker: int) -> None:
    """Record this process as the trial's owner (and a first heartbeat)."""
    storage.set_trial_user_attr(trial_id, "host", _host_id())
    storage.set_trial_user_attr(trial_id, "pid", os.getpid())
    storage.set_trial_user_attr(trial_id, "worker", worker)
    _beat(storage, trial_id)


def _beat(storage, trial_id: int) -> None:
    from optuna.storages import RDBStorage
    from optuna.storages.journal import JournalStorage

    if isinstance(storage, RDBStorage):
        storage.record_heartbeat(trial_id)
    elif isinstance(storage, JournalStorage):
        storage.set_trial_user_attr(trial_id, "heartbeat", time.time())


class _Heartbeat:
    """Background heartbeat for one running trial (RDB natively, journal via user attr)."""

    def __init__(self, storage, trial_id: int, interval: float):
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                _beat(self._storage, self._trial_id)
            except Exception:  # the trial may have been finished meanwhile
                return

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def fail_stale_trials(study, storage, grace_period: float) -> list[int]:
    """Fail RUNNING trials whose process is dead; returns their numbers.

    Same host: the owner pid no longer exists. Any host: no heartbeat for `grace_period`
    seconds (RDB through Optuna, journal through the `heartbeat` user attr).
    """
    import optuna
    from optuna.storages.journal import JournalStorage
    from optuna.trial import TrialState

    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)  # RDB heartbeat; a no-op for other storages
    here, now = _host_id(), time.time()
    still_running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    failed = sorted(running - {t.number for t in still_running})
    for trial in still_running:
        attrs = trial.user_attrs
        dead = attrs.get("host") == here and "pid" in attrs and not _alive(int(attrs["pid"]))
        silent = (isinstance(storage, JournalStorage) and "heartbeat" in attrs
                  and now - float(attrs["heartbeat"]) > grace_period)
        # Asked, then killed before it recorded an owner or a heartbeat.
        unclaimed = ("host" not in attrs and trial.datetime_start is not None
                     and (datetime.now() - trial.datetime_start).total_seconds() > grace_period)
        if dead or silent or unclaimed:
            try:
                storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
                failed.append(trial.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
    return failed


# -- running one trial ---------------------------------------------------------------


@dataclass
class Outcome:
    """What a finished trial reports back to the coordinator."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    value: Optional[float] = None
    epochs: int = 0
    error: Optional[str] = None


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


def _quiet() -> None:
    """No per-trial INFO lines from Optuna, MLflow, TensorFlow."""
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_propagation()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*Trial .* failed because.*")
    # We run the heartbeat ourselves around ask/tell trials.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    _quiet_mlflow()


def _quiet_mlflow() -> None:
    """MLflow resets its logger to INFO on import: set it after importing."""
    import logging

    import mlflow  # noqa: F401

    for name in ("mlflow", "alembic", "git", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


class TrialRunner:
    """Runs trials of one study in this process: objective, pruning, MLflow child run."""

    def __init__(self, spec: StudySpec, study, storage, worker: int = 0):
        from benchmark.data.prepare import load_task

        self.spec, self.study, self.storage, self.worker = spec, study, storage, worker
        self.config = spec.config
        self.data = load_task(self.config, spec.task)  # development samples only
        self.deep = spec.arch in DEEP_ARCHS
        self.max_epochs = self.config.params.training.max_epochs

    def objective(self, trial, curve: list, fold_rmse: list) -> float:
        from benchmark.training import make_regressor

        hp = dict(trial.params)  # sampled by the coordinator at ask time
        regressor = make_regressor(self.spec.arch, hp, self.config)  # one per trial, refitted per fold
        try:
            return self._folds(trial, regressor, hp, curve, fold_rmse)
        finally:  # pruned and failed trials cost fitting time too
            trial.set_user_attr("fit_seconds", round(regressor.fit_seconds, 3))

    def _folds(self, trial, regressor, hp: dict, curve: list, fold_rmse: list) -> float:
        import numpy as np
        import optuna
        from sklearn.metrics import mean_squared_error

        from benchmark.training import fit_fold

        for position, fold in enumerate(self.data.tuning_folds):
            _check_stop()
            train, val = self.data.folds[fold]

            def on_epoch(epoch: int, val_loss: float, fold: int = fold, position: int = position) -> None:
                step = position * self.max_epochs + epoch
                curve.append((step, float(val_loss)))
                trial.report(float(val_loss), step)
                _check_stop()
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at fold {fold} epoch {epoch}")

            _, predicted = fit_fold(self.spec.arch, hp, self.config, self.data.X_dev, self.data.Y_dev,
                                    train, val, epoch_callback=on_epoch if self.deep else None,
                                    regressor=regressor)
            if not np.all(np.isfinite(predicted)):
                raise FloatingPointError("non-finite validation predictions (training diverged)")
            fold_rmse.append(math.sqrt(mean_squared_error(self.data.Y_dev[val], predicted)))
        return float(np.mean(fold_rmse))

    def run(self, trial_id: int) -> Outcome:
        """Run the trial `trial_id` (already asked and sampled) to its end and tell the study."""
        import optuna
        from optuna.trial import TrialState

        trial = optuna.trial.Trial(self.study, trial_id)
        _claim(self.storage, trial_id, self.worker)
        run = _start_child_run(self.spec, trial)
        if run is not None:
            trial.set_user_attr(RUN_ID_ATTR, run)
        curve: list[tuple[int, float]] = []
        fold_rmse: list[float] = []
        outcome = Outcome(trial.number, "FAIL")
        try:
            with _Heartbeat(self.storage, trial_id, self.config.params.tuning.heartbeat_interval):
                try:
                    outcome.value = self.objective(trial, curve, fold_rmse)
                    outcome.state = "COMPLETE"
                except optuna.TrialPruned:
                    outcome.state = "PRUNED"
                except Exception as exc:
                    outcome.error = f"{type(exc).__name__}: {exc}".strip()[:500]
                    trial.set_user_attr("error", outcome.error)
                    trial.set_user_attr("traceback", traceback.format_exc()[-2000:])
        finally:  # KeyboardInterrupt included: the trial ends FAIL, not RUNNING
            outcome.epochs = len(curve)
            try:
                trial.set_user_attr("epochs", outcome.epochs)
            except Exception:
                pass
            state = TrialState[outcome.state]
            self.study.tell(trial, outcome.value if state == TrialState.COMPLETE else None,
                            state=state, skip_if_finished=True)
            _end_child_run(run, outcome, curve, fold_rmse)
        return outcome


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
    return run.info.run_id


def _end_child_run(run_id: Optional[str], outcome: Outcome, curve, fold_rmse) -> None:
    """Per-epoch validation loss (step = fold * max_epochs + epoch), fold RMSEs, value, state."""
    if run_id is None:
        return
    import mlflow
    from mlflow.entities import Metric, RunTag

    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    metrics = [Metric("val_loss", v, now, step) for step, v in curve]
    metrics += [Metric("fold_rmse", v, now, fold) for fold, v in enumerate(fold_rmse)]
    if outcome.value is not None:
        metrics.append(Metric("value", outcome.value, now, 0))
    metrics.append(Metric("epochs", float(outcome.epochs), now, 0))
    tags = [RunTag(STATE_TAG, outcome.state)] + ([RunTag("error", outcome.error)] if outcome.error else [])
    for start in range(0, len(metrics), 900):  # log_batch takes at most 1000 entries
        client.log_batch(run_id, metrics=metrics[start:start + 900], tags=tags if start == 0 else [])
    mlflow.end_run("FAILED" if outcome.state == "FAIL" else "FINISHED")


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


# -- coordinator ---------------------------------------------------------------------


class _InlinePool:
    """One worker: the coordinator's own process runs each trial when it waits."""

    def __init__(self, runner: TrialRunner):
        self.runner = runner
        self._pending: Optional[int] = None

    def start(self) -> list[int]:
        return [0]

    def submit(self, worker: int, trial_id: int) -> None:
        self._pending = trial_id

    def wait(self, timeout: float) -> tuple[Optional[int], Optional[Outcome]]:
        trial_id, self._pending = self._pending, None
        return 0, self.runner.run(trial_id)

    def close(self, graceful: bool = True) -> None:
        pass


# Ctrl-C / SIGTERM only set this flag; the study stops at the next safe point (between
# epochs, trials or queue polls) with the running trials told FAIL. An interrupt raised
# in the middle of a storage write can leave an SQLite transaction open and the store
# locked. A second signal interrupts at once.
_STOP = threading.Event()


def _request_stop(signum, frame) -> None:
    if _STOP.is_set():
        raise KeyboardInterrupt
    _STOP.set()


def _check_stop() -> None:
    if _STOP.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_on_signals():
    """Route SIGINT and SIGTERM to `_request_stop` (main thread only) for the block."""
    _STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker_main(spec: StudySpec, worker: int, tasks, results) -> None:
    """Spawned worker: open the study, then run the trials the coordinator hands over."""
    import multiprocessing

    # A worker only ever stops at a safe point: Ctrl-C reaches it and then the parent's
    # terminate(); the parent kills it if it does not stop within a minute.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: _STOP.set())
    try:
        _quiet()
        study, storage = _load_study(spec)
        runner = TrialRunner(spec, study, storage, worker)
        results.put(("ready", worker, None))
        parent = multiprocessing.parent_process()
        while True:
            try:
                trial_id = tasks.get(timeout=POLL_S)
            except queue.Empty:
                if _STOP.is_set() or (parent is not None and not parent.is_alive()):
                    return
                continue
            if trial_id is None:
                return
            results.put(("done", worker, runner.run(trial_id)))
    except KeyboardInterrupt:
        return
    except Exception as exc:
        results.put(("error", worker, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


class _ProcessPool:
    """N spawned workers (fork after TensorFlow loads hangs), one task queue each."""

    def __init__(self, spec: StudySpec, workers: int, storage):
        import multiprocessing

        self.spec, self.n, self.storage = spec, workers, storage
        self.ctx = multiprocessing.get_context("spawn")
        self.results = self.ctx.Queue()
        self.tasks = [self.ctx.Queue() for _ in range(workers)]
        self.procs: list = []
        self.current: dict[int, int] = {}  # worker -> trial id

    def start(self) -> list[int]:
        for w in range(self.n):
            proc = self.ctx.Process(target=_worker_main, args=(self.spec, w, self.tasks[w], self.results),
                                    name=f"genebench-tune-{w}", daemon=False)
            proc.start()
            self.procs.append(proc)
        return []  # workers announce themselves when ready

    def submit(self, worker: int, trial_id: int) -> None:
        self.current[worker] = trial_id
        self.tasks[worker].put(trial_id)

    def wait(self, timeout: float) -> tuple[Optional[int], Optional[Outcome]]:
        try:
            kind, worker, payload = self.results.get(timeout=timeout)
        except queue.Empty:
            # On Ctrl-C or SIGTERM to the process group the workers stop too, and may exit
            # before this poll ends: that is the requested stop, not a crash.
            _check_stop()
            for w, proc in enumerate(self.procs):
                if proc.exitcode is not None:
                    self._fail_current(w)
                    raise RuntimeError(f"tuning worker {w} exited unexpectedly (exit code {proc.exitcode})")
            return None, None
        if kind == "error":
            self._fail_current(worker)
            raise RuntimeError(f"tuning worker {worker} failed: {payload}")
        if kind == "ready":
            return worker, None
        self.current.pop(worker, None)
        return worker, payload

    def _fail_current(self, worker: int) -> None:
        from optuna.trial import TrialState

        trial_id = self.current.pop(worker, None)
        if trial_id is not None:
            try:
                self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
            except Exception:
                pass

    def close(self, graceful: bool = True) -> None:
        """Stop the workers: let them finish their trial, or (not graceful) terminate them;
        a trial whose worker was terminated ends FAIL."""
        for q in self.tasks:
            try:
                q.put(None)
            except Exception:
                pass
        if not graceful:  # workers stop at their next epoch and tell their trial FAIL
            for proc in self.procs:
                if proc.is_alive():
                    proc.terminate()
        deadline = time.monotonic() + 60
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for w, proc in enumerate(self.procs):
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            if proc.exitcode != 0:
                self._fail_current(w)


class _Progress:
    """A tqdm bar over complete trials on a terminal; plain lines in logs."""

    def __init__(self, n_trials: int, complete: int, label: str):
        self.n = n_trials
        self.bar = None
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=n_trials, initial=min(complete, n_trials), desc=label, unit="trial",
                            file=sys.stderr, dynamic_ncols=True)
        self.complete = complete

    def trial(self, outcome: Outcome, complete: int, best: Optional[float]) -> None:
        value = f" value={outcome.value:.4f}" if outcome.value is not None else ""
        best_text = f" best={best:.4f}" if best is not None else ""
        error = f" ({outcome.error})" if outcome.error else ""
        line = (f"trial {outcome.number} {outcome.state.lower()}{value}{best_text}"
                f" [{min(complete, self.n)}/{self.n} complete]{error}")
        if self.bar is not None:
            self.bar.update(max(0, min(complete, self.n) - self.bar.n))
            if best is not None:
                self.bar.set_postfix(best=f"{best:.4f}")
            if outcome.state != "COMPLETE":
                self.bar.write(line, file=sys.stderr)
        else:
            print(line, flush=True)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _counts(study) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(t.state.name for t in study.get_trials(deepcopy=False)))


def best_of_first(study, n_trials: int):
    """The best of the study's first `n_trials` COMPLETE trials (by number), or None."""
    from optuna.trial import TrialState

    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    complete = complete[:n_trials]
    return min(complete, key=lambda t: (t.value, t.number)) if complete else None


def _coordinate(spec: StudySpec, study, storage, pool, n_trials: int, deadline: Optional[float],
                progress: _Progress) -> None:
    """Ask while `complete + running < n_trials`; hand trials to idle workers; wait."""
    from optuna.trial import TrialState

    config = spec.config
    space = search_space(config, spec.arch)
    grace = config.params.tuning.grace_period
    idle = pool.start()
    running: dict[int, int] = {}  # worker -> trial number
    failures_in_a_row = 0
    noted_wait = noted_timeout = False
    last_stale_check = 0.0
    while True:
        _check_stop()
        timed_out = deadline is not None and time.monotonic() >= deadline
        if timed_out and not noted_timeout:
            noted_timeout = True
            progress.note("timeout reached: starting no new trials")
        trials = study.get_trials(deepcopy=False)
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        busy = sum(t.state == TrialState.RUNNING for t in trials)
        if (complete >= n_trials or timed_out) and not running:
            return
        asked = 0
        while not timed_out and idle and complete + busy < n_trials:
            worker = idle.pop(0)
            study.sampler = make_sampler(config, worker, len(trials) + asked)
            trial = study.ask()
            suggest(trial, space)
            _claim(storage, trial._trial_id, worker)
            pool.submit(worker, trial._trial_id)
            running[worker] = trial.number
            busy += 1
            asked += 1
        if not running and idle:
            # The remaining trials run elsewhere (another machine, or a dead process not
            # yet past its grace period): wait for them and keep failing stale ones.
            if not noted_wait:
                noted_wait = True
                progress.note(f"waiting for {busy} trial(s) running in other processes "
                              f"(a dead one fails after tuning.grace_period={grace}s)")
            if time.monotonic() - last_stale_check > POLL_S:
                last_stale_check = time.monotonic()
                fail_stale_trials(study, storage, grace)
            time.sleep(POLL_S)
            continue
        worker, outcome = pool.wait(POLL_S)
        if worker is None:
            continue
        if outcome is None:  # a worker became ready
            idle.append(worker)
            continue
        running.pop(worker, None)
        idle.append(worker)
        best = best_of_first(study, n_trials)
        complete = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
        progress.trial(outcome, complete, best.value if best else None)
        failures_in_a_row = failures_in_a_row + 1 if outcome.state == "FAIL" else 0
        if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            raise RuntimeError(f"{failures_in_a_row} trials in a row failed; the last one: {outcome.error}")


def _load_study(spec: StudySpec, create: bool = False):
    import optuna

    _quiet()
    storage = open_storage(spec.storage_url, spec.config.params.tuning,
                           flag="--storage" if spec.storage_url != spec.config.storage_url else "tuning.storage")
    pruner = make_pruner(spec.config)
    sampler = make_sampler(spec.config, 0, 0)
    if create:
        study = optuna.create_study(study_name=spec.study_name, storage=storage, sampler=sampler,
                                    pruner=pruner, direction="minimize", load_if_exists=True)
        if study.metric_names != METRIC_NAMES:  # also names studies created before it was set
            study.set_metric_names(METRIC_NAMES)
    else:
        study = optuna.load_study(study_name=spec.study_name, storage=storage, sampler=sampler, pruner=pruner)
    return study, storage


# -- the stage -----------------------------------------------------------------------


def _empty_result(config: Config, storage_url: str) -> dict:
    return {"best_params": {}, "best_value": None, "best_trial": None, "n_complete": 0, "n_pruned": 0,
            "n_failed": 0, "n_trials": 0, "study_name": None, "storage": mask_url(storage_url)}


def tune(config: Config, task: str, arch: str, trials: Optional[int] = None, workers: int = 1,
         storage: Optional[str] = None, timeout: Optional[float] = None) -> dict:
    """Run (or resume) the study of `arch` on `task`; write and return its result.

    `trials`: COMPLETE trials wanted (default `tuning.n_trials`); `storage`: an Optuna
    storage URL or journal path (default `tuning.storage`); `timeout`: seconds after
    which no new trial starts (default `tuning.timeout`).
    """
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
    if not space:
        result = _empty_result(config, storage_url)
        write_json(out, result)
        print(f"{arch} has an empty search space: nothing to tune; wrote {_rel(config, out)}", flush=True)
        return result

    from benchmark.data.prepare import load_task

    task_data = load_task(config, task)  # fails early (exit 2) when prepare has not run
    version = task_data.data_version
    # Recorded so anyone can check that evaluate never scores a sample tuning validated on.
    validated = sorted(task_data.dev_samples[i] for fold in task_data.tuning_folds for i in task_data.folds[fold][1])
    name = study_name(config, task, arch, space, version)
    _quiet()
    spec = StudySpec(config, task, arch, name, storage_url, None, None)
    study, optuna_storage = _load_study(spec, create=True)
    study.set_user_attr("dataset", config.dataset)
    study.set_user_attr("task", task)
    study.set_user_attr("arch", arch)
    stale = fail_stale_trials(study, optuna_storage, tuning.grace_period)
    spec.experiment_id = _mlflow_setup(config, task)
    spec.parent_run_id = _parent_run(config, spec.experiment_id, name, study_uid(study), task, arch, space,
                                     version, storage_url, n_trials)
    counts = _counts(study)
    complete = counts.get("COMPLETE", 0)
    print(f"study {name} on {mask_url(storage_url)}: {complete}/{n_trials} complete"
          + (f", failed {len(stale)} stale trial(s) {stale}" if stale else "")
          + (f", {workers} workers" if workers > 1 else ""), flush=True)
    progress = _Progress(n_trials, complete, f"tune {config.dataset}/{task}/{arch}")
    deadline = time.monotonic() + timeout if timeout is not None else None
    interrupted = True
    try:
        if complete < n_trials:
            pool = (_InlinePool(TrialRunner(spec, study, optuna_storage)) if workers == 1
                    else _ProcessPool(spec, workers, optuna_storage))
            try:
                with _stop_on_signals():
                    _coordinate(spec, study, optuna_storage, pool, n_trials, deadline, progress)
            finally:
                pool.close(graceful=sys.exc_info()[0] is None)
                fail_stale_trials(study, optuna_storage, tuning.grace_period)
        interrupted = False
    finally:
        progress.close()
        if interrupted:
            import mlflow

            mlflow.MlflowClient().set_terminated(spec.parent_run_id, "KILLED")

    counts = _counts(study)
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
