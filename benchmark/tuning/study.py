"""A study's identity and storage: its name, where it lives, and how a process opens it.

- Study name: `<dataset>-<task>-<arch>-d<data version>-s<hash>-c<code>`, the hash covering
  what changes a trial's meaning through params and data (search space, untuned defaults,
  prepared folds and genes, `features`, `training` for deep models), the code part the
  source of the code that trains and scores a model. A rerun resumes the study and tops
  it up to `n_trials` COMPLETE trials; the result is the best of its first `n_trials`
  complete trials (by number).
- Storage: an SQLAlchemy URL is RDB storage with Optuna's heartbeat; a bare path is a
  journal file. The same study name in two storages is two studies: each carries a
  random id (`study_uid`) that its MLflow parent run repeats.
- Sampler: TPE with `tuning.n_startup_trials`, seeded from (`tuning.seed`, the study's
  identity, worker, trials already in the study); pruner: `tuning.pruner`. The identity
  leaves out the dataset's own name and the code part: a new version of the training code
  starts a new study that proposes the same configurations as the old one did, so a
  before/after comparison of a code change is not also a comparison of two searches' luck.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from benchmark import DEEP_ARCHS
from benchmark.config import Config, SearchParam, mask_url
from benchmark.errors import UserError
from benchmark.paths import prepared_dir
from benchmark.stores import schema_lock

STUDY_UID = "genebench.study_uid"
METRIC_NAMES = ["rmse"]  # the objective, named for optuna-dashboard (mean validation RMSE)

# The code a trial's value depends on: fitting, models, preprocessing, the task arrays.
# Each is a module (`<entry>.py`) or a package (`<entry>/`), whichever the tree holds.
_TRAINING_CODE = ("training", "models", "metrics", "data/prepare", "data/validation")


def code_digest() -> str:
    """sha256 over the source of the modules that train and score a model (`_TRAINING_CODE`)."""
    package = Path(__file__).parents[1]
    digest = hashlib.sha256()
    for entry in _TRAINING_CODE:
        module = package / f"{entry}.py"
        files = [module] if module.is_file() else sorted((package / entry).rglob("*.py"))
        if not files:  # a moved module would silently drop out of every study's name
            raise RuntimeError(f"benchmark/{entry} is gone: update tuning.study._TRAINING_CODE")
        for file in files:
            digest.update(file.relative_to(package).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def study_name(config: Config, task: str, arch: str, space: dict[str, SearchParam], data_version: str) -> str:
    """`<dataset>-<task>-<arch>-d<data version[:8]>-s<hash[:8]>-c<code digest[:8]>`: equal names
    mean comparable trials."""
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
    }
    digest = hashlib.sha256(json.dumps(meaning, sort_keys=True, default=str).encode()).hexdigest()
    return f"{config.dataset}-{task}-{arch}-d{data_version[:8]}-s{digest[:8]}-c{code_digest()[:8]}"


def sampler_identity(study_name: str, dataset: str) -> str:
    """What seeds a study's sampler: its name less the dataset's own name and the code part."""
    return re.sub(r"-c[0-9a-f]{8}$", "", study_name.removeprefix(f"{dataset}-"))


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

    The median pruner judges a trial against complete trials only, which are the survivors
    of earlier pruning: each one raises the bar, and a study can reach a point where no
    new trial completes (a 90-sample study measured here pruned 511 trials in a row
    without a fifth complete one). It is therefore bounded: a trial is pruned only while
    the study holds fewer pruned trials than complete ones, so at most half the trials
    are pruned and a study of `n` complete trials stops within about `2n` (parallel
    workers may add one each).
    """
    import optuna

    tuning, max_epochs = config.params.tuning, config.params.training.max_epochs
    if tuning.pruner == "median":
        median = optuna.pruners.MedianPruner(n_startup_trials=tuning.n_startup_trials,
                                             n_warmup_steps=max_epochs // 3, n_min_trials=2)
        return BoundedPruner(median)
    if tuning.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=tuning.folds * max_epochs,
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


@functools.cache
def _bounded_pruner_class():
    import optuna
    from optuna.trial import TrialState

    class _BoundedPruner(optuna.pruners.BasePruner):
        """`pruner`'s decision while the study holds fewer pruned trials than complete ones."""

        def __init__(self, pruner):
            self.pruner = pruner

        def prune(self, study, trial) -> bool:
            if not self.pruner.prune(study, trial):  # the usual answer: no count needed
                return False
            finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            pruned = sum(t.state == TrialState.PRUNED for t in finished)
            return pruned < len(finished) - pruned

    return _BoundedPruner


def BoundedPruner(pruner):  # noqa: N802 - a class, built lazily (no Optuna at import)
    return _bounded_pruner_class()(pruner)


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


def load_study(spec: StudySpec, worker: int = 0, create: bool = False):
    """The study (created first with `create`), with its pruner and a seeded TPE sampler."""
    import numpy as np
    import optuna

    quiet()
    config, tuning = spec.config, spec.config.params.tuning
    flag = "--storage" if spec.storage_url != config.storage_url else "tuning.storage"
    storage = open_storage(spec.storage_url, tuning, flag=flag)
    try:  # counted through the storage: the sampler's seed is known before the study is opened
        trials_so_far = storage.get_n_trials(storage.get_study_id_from_name(spec.study_name))
    except KeyError:  # no such study yet
        if not create:
            raise
        trials_so_far = 0
    # Seeded from the study's identity too: every new study with the same tuning.seed would
    # otherwise propose the same values in the same order, whatever its data. The identity
    # is the name less the dataset's own name and the code part (task, arch, data version,
    # what the params make the trials mean): the same matrix imported under two names is
    # searched alike, and so is the same study after an edit of the training code.
    identity = sampler_identity(spec.study_name, config.dataset)
    identity = int(hashlib.sha256(identity.encode()).hexdigest()[:8], 16)
    seed = np.random.SeedSequence([tuning.seed, identity, worker, trials_so_far]).generate_state(1)[0]
    sampler = optuna.samplers.TPESampler(n_startup_trials=tuning.n_startup_trials, seed=int(seed))
    if not create:
        return optuna.load_study(study_name=spec.study_name, storage=storage, sampler=sampler,
                                 pruner=make_pruner(config))
    study = optuna.create_study(study_name=spec.study_name, storage=storage, direction="minimize",
                                sampler=sampler, pruner=make_pruner(config), load_if_exists=True)
    if study.metric_names != METRIC_NAMES:  # also names studies created before it was set
        study.set_metric_names(METRIC_NAMES)
    return study


def study_uid(study) -> str:
    """The study's random id, created on first use (re-read: a concurrent creator may win)."""
    import uuid

    if STUDY_UID not in study.user_attrs:
        study.set_user_attr(STUDY_UID, uuid.uuid4().hex)
    return str(study.user_attrs[STUDY_UID])


def n_complete(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def best_of_first(study, n_trials: int):
    """The best of the study's first `n_trials` COMPLETE trials (by number), or None."""
    from optuna.trial import TrialState

    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    complete = complete[:n_trials]
    return min(complete, key=lambda t: (t.value, t.number)) if complete else None


def budget_curve(study, n_trials: int) -> list[dict]:
    """The search as it went: per COMPLETE trial among the first `n_trials` (by number), its
    value and the best value so far. The first is the defaults (enqueued before any search),
    so entry 0 is what no search buys and the last entry is `best_of_first`'s value."""
    from optuna.trial import TrialState

    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    curve, best = [], float("inf")
    for trial in complete[:n_trials]:
        best = min(best, float(trial.value))
        curve.append({"trial": trial.number, "value": float(trial.value), "best_value": best})
    return curve


def quiet() -> None:
    """No per-trial INFO lines from Optuna, MLflow, TensorFlow."""
    import logging

    import mlflow  # noqa: F401  (MLflow resets its logger to INFO on import)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line reports each failed trial
    optuna.logging.disable_propagation()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for name in ("mlflow", "alembic", "git", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
