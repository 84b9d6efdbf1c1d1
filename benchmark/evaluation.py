"""The evaluate stage: K-fold CV on development samples, refit, one held-out score.

`evaluate(config.for_dataset(name), task, arch)`:

1. Hyperparameters: `models.<arch>.defaults` overlaid with the tuning result
   `artifacts/tuning/<dataset>/<task>/<arch>.json` (`best_params`) when it exists; the
   source is recorded (`params_source`).
2. CV over the prepared scored folds (every fold but those tuning validated on, so no
   sample that chose the hyperparameters is scored) with `training.fit_fold`
   (everything fitted on the training part of each fold); per-fold metrics with that
   training part's per-gene ranges for the scaled metrics; mean and sample std across
   the scored folds.
3. Refit on all development samples; one score on the held-out split (scaled metrics
   with the development ranges).
4. One MLflow run `evaluate-<arch>` in the (dataset, task) experiment: params, its two
   datasets (`<dataset>-development`, `<dataset>-held-out`), the refit model as a pyfunc,
   then `cv_<m>_mean`, `cv_<m>_std`, `fold_<m>` per fold (step = fold) and `test_<m>`, each
   on the logged model too and naming its dataset, and the artifact files below.

Outputs: `artifacts/evaluation/<dataset>/<task>/<arch>/` (`folds.csv`, `cv_samples.csv`
(the samples each scored fold validated on), `fold_per_gene.csv`,
`test_predictions.csv`, `test_per_gene.csv`, `test_scatter.png`, for attention models
`attention.csv` and `attention.png` (per token) and, mapped back to genes unless the
inputs are PCA components, `gene_importance.csv` and `gene_importance.png`; for every
architecture `permutation_importance.csv` and `permutation_importance_targets.csv`
(see `benchmark.importance`); `run.json`) and, written last so that a failed evaluate
leaves the previous result in place, `metrics/<dataset>/<task>/<arch>.json`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd

from benchmark import DEEP_ARCHS
from benchmark.config import Config, mask_url
from benchmark.data.prepare import TaskData, load_task
from benchmark.errors import UserError
from benchmark.evaluation_files import BASE_PREFIX, format_score, per_gene_frame, write_tables
from benchmark.metrics import METRICS, SCALED_METRICS, fold_summary, regression_metrics
from benchmark.outputs import atomic_dir, dumps_json, write_json
from benchmark.paths import evaluation_dir, metrics_file, tuning_result

ALL_METRICS = METRICS + SCALED_METRICS
RUN_NAME = "evaluate-{arch}"
OWNER_HOST_TAG = "genebench.host"
OWNER_PID_TAG = "genebench.pid"


def resolve_params(config: Config, task: str, arch: str) -> tuple[dict[str, Any], str]:
    """`(hp, source)`: `models.<arch>.defaults` overlaid with the tuned `best_params`.

    `source` is `"defaults"` or `"tuning:<path relative to the root>"`.
    """
    hp = dict(config.params.model(arch).defaults)
    path = tuning_result(config, task, arch)
    if not path.exists():
        return hp, "defaults"
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}); rerun "
                        f"`genebench tune --dataset {config.dataset} --task {task} --arch {arch}`") from None
    best = result.get("best_params") if isinstance(result, dict) else None
    if not isinstance(best, dict):
        raise UserError(f"{path}: best_params: expected a mapping of hyperparameters")
    unknown = sorted(set(best) - set(hp) - set(config.params.model(arch).search_space))
    if unknown:
        raise UserError(f"{path}: best_params: {unknown[0]!r} is not a hyperparameter of models.{arch}")
    rel = path.relative_to(config.root) if path.is_relative_to(config.root) else path
    return {**hp, **best}, f"tuning:{rel.as_posix()}"


def _clean(value: Optional[float]) -> Optional[float]:
    """JSON/MLflow-safe float: None for undefined (None or NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _scalar_metrics(metrics: dict) -> dict[str, Optional[float]]:
    return {name: _clean(metrics.get(name)) for name in ALL_METRICS}


def _cv_summary(fold_metrics: list[dict]) -> dict[str, dict[str, Optional[float]]]:
    summary = fold_summary([_scalar_metrics(m) for m in fold_metrics])
    cv = {}
    for name in ALL_METRICS:
        entry = summary.get(name) or {}
        cv[name] = {"mean": _clean(entry.get("mean")), "std": _clean(entry.get("std"))}
    return cv


def _ranges(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return Y.min(axis=0), Y.max(axis=0)


def _mlflow_params(config: Config, arch: str, hp: dict, source: str, data: TaskData) -> dict[str, Any]:
    from benchmark.tracking import TRAINING_PARAMS

    training = config.params.training
    params = {f"hp.{k}": v for k, v in sorted(hp.items())}
    params.update({f"training.{k}": getattr(training, k) for k in TRAINING_PARAMS})
    params.update({
        "dataset": data.dataset,
        "arch": arch,
        "params_source": source,
        "split.folds": len(data.folds),
        "scored_folds": ",".join(map(str, data.scored_folds)),
        "split.repeats": config.params.split.repeats,
        "split.test_size": config.params.split.test_size,
        "split.seed": config.params.split.seed,
        "features.pca_components": config.params.features.pca_components,
        "features.max_genes": config.params.features.max_genes,
        "transform": data.transform,
        "n_features": len(data.feature_genes),
        "n_targets": len(data.target_genes),
        "n_dev": len(data.X_dev),
        "n_test": len(data.X_test),
    })
    return params


def _log_metrics(prefix: str, values: dict[str, Optional[float]], step: Optional[int] = None,
                 model_id: Optional[str] = None, dataset=None) -> dict[str, str]:
    """Log the defined values as `<prefix><name>` (on `model_id`, naming `dataset`); returns tags
    for the undefined ones."""
    import mlflow

    defined = {f"{prefix}{k}": v for k, v in values.items() if v is not None}
    if defined:
        mlflow.log_metrics(defined, step=step, model_id=model_id, dataset=dataset)
    return {f"undefined.{prefix}{k}": "null" for k, v in values.items() if v is None}


@dataclass
class Scores:
    """What CV and the refit gave: per scored fold its metrics (`fold_metrics`, `regression_metrics`
    dicts) and folds.csv row, the held-out predictions `test_pred` (n_test, n_targets), and
    for a deep model on a base the same for its base alone (`base_fold_metrics`,
    `base_test_pred`; None otherwise): the ablation, on the same folds and split."""

    regressor: Any
    fold_metrics: list[dict]
    fold_rows: list[dict]
    fold_gene_frames: list[pd.DataFrame]
    test_pred: np.ndarray
    base_fold_metrics: Optional[list[dict]] = None
    base_test_pred: Optional[np.ndarray] = None


def _fit_and_score(config: Config, arch: str, hp: dict, data: TaskData) -> Scores:
    """CV over the scored folds (every repeat), then the refit and its held-out predictions."""
    from benchmark.training import fit_fold, make_regressor

    # One Regressor refitted on every fold and then on all development samples: each fit
    # starts from the same initial state, and a deep model is built and traced once.
    regressor = make_regressor(arch, hp, config)
    fold_metrics, fold_rows, fold_gene_frames, base_metrics = [], [], [], []
    for fold, repeat in zip(data.scored_folds, data.scored_repeats):
        train, val = data.folds[fold]
        regressor, predicted = fit_fold(arch, hp, config, data.X_dev, data.Y_dev, train, val, regressor=regressor)
        ranges = _ranges(data.Y_dev[train])
        metrics = regression_metrics(data.Y_dev[val], predicted, *ranges)
        fold_metrics.append(metrics)
        row = {"fold": fold, "repeat": repeat, "n_train": len(train), "n_val": len(val), **_scalar_metrics(metrics),
               "pearson_undefined": metrics["pearson_undefined"], "epochs_trained": regressor.epochs_trained}
        if regressor.base is not None:
            base = regression_metrics(data.Y_dev[val], regressor.predict_base(data.X_dev[val]), *ranges)
            base_metrics.append(base)
            row.update({f"{BASE_PREFIX}{k}": v for k, v in _scalar_metrics(base).items()})
        fold_rows.append(row)
        fold_gene_frames.append(per_gene_frame(data.target_genes, metrics).assign(fold=fold))
    regressor.fit(data.X_dev, data.Y_dev)
    test_pred = np.asarray(regressor.predict(data.X_test), dtype=np.float64)
    base_test = None if regressor.base is None else np.asarray(regressor.predict_base(data.X_test), dtype=np.float64)
    return Scores(regressor, fold_metrics, fold_rows, fold_gene_frames, test_pred,
                  base_metrics or None, base_test)


def _shape_only(X) -> np.ndarray:
    """`X` itself, or for a streamed `RowView` a zero-copy stand-in of its shape and dtype:
    the runs table shows a dataset's name, digest (given) and shape, never its values."""
    if isinstance(X, np.ndarray):
        return X
    return np.broadcast_to(np.zeros((1, X.shape[1]), dtype=X.dtype), X.shape)


def _owner() -> dict[str, str]:
    """Tags naming the process that owns an evaluation run (see `_end_abandoned_runs`)."""
    return {OWNER_HOST_TAG: socket.gethostname(), OWNER_PID_TAG: str(os.getpid())}


def _process_gone(pid: str) -> bool:
    import psutil

    return pid.isdecimal() and not psutil.pid_exists(int(pid))  # no owner tag: not known to be gone


def _end_abandoned_runs(experiment: str, arch: str) -> list[str]:
    """End as KILLED this key's evaluation runs left RUNNING by a process of this host that
    is gone (a SIGKILL, a power cut): the runs table then shows what really happened."""
    import mlflow

    client = mlflow.MlflowClient()
    query = (f"attributes.status = 'RUNNING' and attributes.run_name = '{RUN_NAME.format(arch=arch)}' "
             f"and tags.`{OWNER_HOST_TAG}` = '{socket.gethostname()}'")
    ended = []
    for run in client.search_runs([experiment], filter_string=query, max_results=200):
        if _process_gone(run.data.tags.get(OWNER_PID_TAG, "")):
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
    return ended


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt for the block (main thread only), so a terminated
    evaluate ends its MLflow run as KILLED rather than leaving it RUNNING."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def evaluate(config: Config, task: str, arch: str) -> dict:
    """Run the evaluate stage for one task and architecture; returns the metrics document.

    The MLflow run spans the whole evaluation (its duration is the work's), records the
    dataset as its input, and ends FAILED on an error or KILLED on Ctrl-C or SIGTERM.
    """
    import mlflow

    from benchmark import tracking

    started = time.monotonic()
    hp, source = resolve_params(config, task, arch)
    data = load_task(config, task, held_out=True, arch=arch)
    tracking.configure(config)
    experiment = tracking.experiment_id(config, task)
    _end_abandoned_runs(experiment, arch)
    tags = {**tracking.standard_tags(config, task, arch, data), "params_source": source, **_owner()}
    with _sigterm_interrupts(), mlflow.start_run(experiment_id=experiment, run_name=RUN_NAME.format(arch=arch),
                                                 tags=tags) as run:
        try:
            return _evaluate_in_run(config, task, arch, hp, source, data, experiment, run.info.run_id, started)
        except KeyboardInterrupt:
            mlflow.end_run(status="KILLED")
            raise


def _evaluate_in_run(config: Config, task: str, arch: str, hp: dict, source: str, data: TaskData,
                     experiment: str, run_id: str, started: float) -> dict:
    """The run's stages in order: inputs, fits, scores, the logged model and its metrics, the
    files; then the metrics document, written last."""
    import mlflow

    mlflow.log_params(_mlflow_params(config, arch, hp, source, data))
    development, held_out = _mlflow_datasets(data)
    # The runs table's Dataset column: each split's name, the data version as digest.
    mlflow.log_input(development, context="training")
    mlflow.log_input(held_out, context="testing")
    scores = _fit_and_score(config, arch, hp, data)
    summary = _summarise(scores, data)
    with atomic_dir(evaluation_dir(config, task, arch)) as tmp:
        # The model first, so every metric is logged on it too: its page in the UI then lists
        # the datasets it was scored on, CV and held-out apart.
        model_info = _log_model(config, task, arch, scores.regressor, data)
        _log_scores(scores, summary, model_info.model_id, development, held_out)
        write_tables(tmp, config, task, arch, data, scores, summary)
        (tmp / "run.json").write_text(dumps_json(_run_record(config, hp, source, data, scores, summary, model_info,
                                                             experiment, run_id, started)))
        mlflow.log_artifacts(str(tmp), artifact_path="evaluation")

    document = {"dataset": data.dataset, "task": task, "arch": arch, "n_dev": int(len(data.X_dev)),
                "n_test": int(len(data.X_test)), "cv": summary.cv, "test": summary.test, "mlflow_run_id": run_id}
    if summary.base is not None:
        document["base"] = summary.base
    write_json(metrics_file(config, task, arch), document)
    print(f"evaluate {data.dataset}/{task}/{arch}: cv rmse {format_score(summary.cv['rmse']['mean'])} "
          f"+- {format_score(summary.cv['rmse']['std'])}, test rmse {format_score(summary.test['rmse'])}, "
          f"r2 {format_score(summary.test['r2'])} (params: {source}; mlflow run {run_id})")
    return document


def _mlflow_datasets(data: TaskData):
    """`(development, held_out)` MLflow datasets, `<dataset>-development` and `<dataset>-held-out`,
    each with the data version's first 8 hex digits as digest and its shape, never its values."""
    import mlflow

    return tuple(mlflow.data.from_numpy(_shape_only(X), targets=Y, name=f"{data.dataset}-{split}",
                                        digest=data.data_version[:8])
                 for split, X, Y in (("development", data.X_dev, data.Y_dev), ("held-out", data.X_test, data.Y_test)))


@dataclass
class Summary:
    """What the scores add up to: CV mean and std per metric (`cv`), the refit's held-out metrics
    (`test`: scalars; `test_full`: the `regression_metrics` dict, per gene included), and for a
    deep model its base alone (`base`: `{"cv", "test"}`, `base_full`; None otherwise)."""

    cv: dict
    test: dict
    test_full: dict
    base: Optional[dict] = None
    base_full: Optional[dict] = None


def _summarise(scores: Scores, data: TaskData) -> Summary:
    """CV summaries of the folds and held-out metrics (scaled with the development ranges)."""
    ranges = _ranges(data.Y_dev)
    test_full = regression_metrics(data.Y_test, scores.test_pred, *ranges)
    summary = Summary(cv=_cv_summary(scores.fold_metrics), test=_scalar_metrics(test_full), test_full=test_full)
    if scores.base_fold_metrics is not None:
        summary.base_full = regression_metrics(data.Y_test, scores.base_test_pred, *ranges)
        summary.base = {"cv": _cv_summary(scores.base_fold_metrics), "test": _scalar_metrics(summary.base_full)}
    return summary


def _log_model(config: Config, task: str, arch: str, regressor, data: TaskData):
    """The refit model as the run's pyfunc (`benchmark.tracking.log_model`); MLflow's `ModelInfo`."""
    from benchmark import tracking

    example = tracking.raw_features(config, data, "dev", limit=tracking.INPUT_EXAMPLE_ROWS)
    return tracking.log_model(regressor, data, example, deep=arch in DEEP_ARCHS,
                              tags={"task": task, "arch": arch, "data_version": data.data_version})


def _log_scores(scores: Scores, summary: Summary, model_id: str, development, held_out) -> None:
    """Metrics on the run and its logged model, each naming its dataset: `fold_*` (step = fold) and
    `cv_*` on the development samples, `test_*` on the held-out ones; undefined ones as tags."""
    import mlflow

    on_development = {"model_id": model_id, "dataset": development}
    on_held_out = {"model_id": model_id, "dataset": held_out}
    for row in scores.fold_rows:  # a fold's undefined metric is a blank in folds.csv
        _log_metrics("fold_", {k: row[k] for k in ALL_METRICS}, step=row["fold"], **on_development)
    undefined = _log_metrics("cv_", {f"{name}_{stat}": summary.cv[name][stat]
                                     for name in ALL_METRICS for stat in ("mean", "std")}, **on_development)
    undefined.update(_log_metrics("test_", summary.test, **on_held_out))
    if summary.base is not None:  # the ablation: the model's base alone, same folds and split
        undefined.update(_log_metrics(f"{BASE_PREFIX}cv_", {f"{name}_mean": summary.base["cv"][name]["mean"]
                                                             for name in ALL_METRICS}, **on_development))
        undefined.update(_log_metrics(f"{BASE_PREFIX}test_", summary.base["test"], **on_held_out))
    # training cost, comparable across runs
    mlflow.log_metric("fit_seconds", scores.regressor.fit_seconds, model_id=model_id)
    if undefined:
        mlflow.set_tags(undefined)


def _run_record(config: Config, hp: dict, source: str, data: TaskData, scores: Scores, summary: Summary,
                model_info, experiment: str, run_id: str, started: float) -> dict:
    """`run.json`: where the run and its model are, what they were fitted with, how long it took."""
    return {
        "run_id": run_id,
        "experiment_id": experiment,
        "tracking_uri": mask_url(config.tracking_uri),
        "model_uri": model_info.model_uri,
        "model_id": getattr(model_info, "model_id", None),
        "params": hp,
        "params_source": source,
        "data_version": data.data_version,
        "target_genes": list(data.target_genes),
        "seconds": round(time.monotonic() - started, 1),
        "fit_seconds": round(scores.regressor.fit_seconds, 1),
        # Genes whose held-out Pearson r is undefined (constant prediction or truth);
        # test pearson is the mean over the others.
        "test_pearson_undefined": summary.test_full["pearson_undefined"],
    }
