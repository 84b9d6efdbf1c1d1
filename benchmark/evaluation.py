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
4. One MLflow run `evaluate-<arch>` in the (dataset, task) experiment: params, `cv_<m>_mean`,
   `cv_<m>_std`, `test_<m>`, `fold_<m>` per fold (step = fold), the artifact files
   below, and the refit model as a pyfunc.

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
from benchmark.importance import ATTENTION_FILE, IMPORTANCE_FILE, importance_tables
from benchmark.metrics import METRICS, SCALED_METRICS, fold_summary, regression_metrics
from benchmark.outputs import atomic_dir, dumps_json, write_json
from benchmark.paths import evaluation_dir, metrics_file, tuning_result

ALL_METRICS = METRICS + SCALED_METRICS
RUN_NAME = "evaluate-{arch}"
BASE_PREFIX = "base_"  # a deep model's base alone (the ablation): base_<metric> columns and metrics
IMPORTANCE_PLOT = "gene_importance.png"
IMPORTANCE_TOP = 20  # tokens (genes or modules) in the importance plot
OWNER_HOST_TAG = "genebench.host"
OWNER_PID_TAG = "genebench.pid"
# training.* keys logged with every run (the rest of the section is in params.yaml too)


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


def _per_gene_frame(genes: list[str], metrics: dict) -> pd.DataFrame:
    return pd.DataFrame({"gene": genes, "r2": metrics["per_gene"]["r2"], "rmse": metrics["per_gene"]["rmse"]})


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


def _log_metrics(prefix: str, values: dict[str, Optional[float]], step: Optional[int] = None) -> dict[str, str]:
    """Log the defined values as `<prefix><name>`; returns tags for the undefined ones."""
    import mlflow

    defined = {f"{prefix}{k}": v for k, v in values.items() if v is not None}
    if defined:
        mlflow.log_metrics(defined, step=step)
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
        fold_gene_frames.append(_per_gene_frame(data.target_genes, metrics).assign(fold=fold))
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
    import mlflow

    from benchmark import tracking

    mlflow.log_params(_mlflow_params(config, arch, hp, source, data))
    # The runs table's Dataset column: the dataset's name, its data version as digest.
    mlflow.log_input(mlflow.data.from_numpy(_shape_only(data.X_dev), targets=data.Y_dev, name=data.dataset,
                                            digest=data.data_version[:8]), context="training")
    scores = _fit_and_score(config, arch, hp, data)
    regressor, fold_rows, fold_gene_frames, test_pred = (scores.regressor, scores.fold_rows, scores.fold_gene_frames,
                                                         scores.test_pred)
    test_full = regression_metrics(data.Y_test, test_pred, *_ranges(data.Y_dev))
    test = _scalar_metrics(test_full)
    cv = _cv_summary(scores.fold_metrics)
    base = None
    if scores.base_fold_metrics is not None:
        base_full = regression_metrics(data.Y_test, scores.base_test_pred, *_ranges(data.Y_dev))
        base = {"cv": _cv_summary(scores.base_fold_metrics), "test": _scalar_metrics(base_full)}
    attention = regressor.attention(data.X_test)
    out_dir = evaluation_dir(config, task, arch)
    with atomic_dir(out_dir) as tmp:
        for row in fold_rows:  # a fold's undefined metric is a blank in folds.csv
            _log_metrics("fold_", {k: row[k] for k in ALL_METRICS}, step=row["fold"])
        undefined = {}
        for name in ALL_METRICS:
            undefined.update(_log_metrics("cv_", {f"{name}_mean": cv[name]["mean"], f"{name}_std": cv[name]["std"]}))
        undefined.update(_log_metrics("test_", test))
        if base is not None:  # the ablation: the model's base alone, same folds and split
            undefined.update(_log_metrics(f"{BASE_PREFIX}cv_", {f"{name}_mean": base["cv"][name]["mean"]
                                                                 for name in ALL_METRICS}))
            undefined.update(_log_metrics(f"{BASE_PREFIX}test_", base["test"]))
        mlflow.log_metric("fit_seconds", regressor.fit_seconds)  # training cost, comparable across runs
        if undefined:
            mlflow.set_tags(undefined)

        pd.DataFrame(fold_rows).to_csv(tmp / "folds.csv", index=False)
        pd.DataFrame([(fold, data.dev_samples[i]) for fold in data.scored_folds for i in data.folds[fold][1]],
                     columns=["fold", "sample"]).to_csv(tmp / "cv_samples.csv", index=False)
        (pd.concat(fold_gene_frames, ignore_index=True)[["fold", "gene", "r2", "rmse"]]
         .to_csv(tmp / "fold_per_gene.csv", index=False))
        _predictions_frame(data, test_pred, scores.base_test_pred).to_csv(tmp / "test_predictions.csv", index=False)
        per_gene = _per_gene_frame(data.target_genes, test_full)
        if base is not None:
            per_gene = per_gene.join(_per_gene_frame(data.target_genes, base_full).set_index("gene")
                                     .add_prefix(BASE_PREFIX), on="gene")
        per_gene.to_csv(tmp / "test_per_gene.csv", index=False)
        pca = config.params.features.pca_components is not None  # importance: benchmark.importance
        tables = importance_tables(regressor, data, attention, pca, seed=config.params.training.seed)
        for name, table in tables.items():
            table.to_csv(tmp / name, index=False)
        _plots(tmp, task, arch, data, test_pred, test, tables.get(ATTENTION_FILE))
        if IMPORTANCE_FILE in tables:
            _importance_plot(tmp / IMPORTANCE_PLOT, f"{data.dataset} / {task} / {arch}", tables[IMPORTANCE_FILE])

        example = tracking.raw_features(config, data, "dev", limit=tracking.INPUT_EXAMPLE_ROWS)
        model_info = tracking.log_model(regressor, data, example, deep=arch in DEEP_ARCHS,
                                        tags={"task": task, "arch": arch, "data_version": data.data_version})
        run_record = {
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
            "fit_seconds": round(regressor.fit_seconds, 1),
            # Genes whose held-out Pearson r is undefined (constant prediction or truth);
            # test pearson is the mean over the others.
            "test_pearson_undefined": test_full["pearson_undefined"],
        }
        (tmp / "run.json").write_text(dumps_json(run_record))
        mlflow.log_artifacts(str(tmp), artifact_path="evaluation")

    document = {
        "dataset": data.dataset,
        "task": task,
        "arch": arch,
        "n_dev": int(len(data.X_dev)),
        "n_test": int(len(data.X_test)),
        "cv": cv,
        "test": test,
        "mlflow_run_id": run_id,
    }
    if base is not None:
        document["base"] = base
    write_json(metrics_file(config, task, arch), document)
    print(f"evaluate {data.dataset}/{task}/{arch}: cv rmse {_fmt(cv['rmse']['mean'])} +- {_fmt(cv['rmse']['std'])}, "
          f"test rmse {_fmt(test['rmse'])}, r2 {_fmt(test['r2'])} (params: {source}; mlflow run {run_id})")
    return document


def _plots(directory, task: str, arch: str, data: TaskData, predicted: np.ndarray, test: dict,
           attention: Optional[pd.DataFrame]) -> None:
    """`test_scatter.png` (observed vs predicted, held-out) and `attention.png` (mean weight per token)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    observed = np.asarray(data.Y_test, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(observed.ravel(), predicted.ravel(), s=6, alpha=0.5, linewidths=0)
    low, high = float(min(observed.min(), predicted.min())), float(max(observed.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
    ax.set_xlabel("observed expression (held-out)")
    ax.set_ylabel("predicted expression")
    ax.set_title(f"{task} / {arch}: RMSE {_fmt(test['rmse'])}, R$^2$ {_fmt(test['r2'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(directory / "test_scatter.png", dpi=100)
    plt.close(fig)
    if attention is not None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.12 * len(attention)), 3.0))
        ax.bar(attention["token"], attention["mean_weight"], width=0.8)
        ax.set_xlabel("token (gene module, in sequence order)")
        ax.set_ylabel("mean attention (held-out)")
        ax.set_title(f"{task} / {arch}", fontsize=9)
        fig.tight_layout()
        fig.savefig(directory / "attention.png", dpi=100)
        plt.close(fig)


def _importance_plot(path, title: str, importance: pd.DataFrame) -> None:
    """The most attended tokens, `IMPORTANCE_TOP` bars of mean attention ± its per-sample sd, each
    named by its genes (a gene, or a module's three most important genes and how many more),
    with the uniform level 1/steps dashed, so a flat map is seen to be flat."""
    from matplotlib.figure import Figure

    modules = (importance.sort_values(["weight", "gene"], ascending=[False, True], kind="stable")
               .groupby("module", sort=False)
               .agg(weight=("token_weight", "first"), std=("token_std", "first"), genes=("gene", list))
               .sort_values("weight", ascending=False, kind="stable"))
    steps = len(modules)
    modules = modules.head(IMPORTANCE_TOP)
    labels = [", ".join(genes[:3]) + (f" +{len(genes) - 3}" if len(genes) > 3 else "") + f" (token {module})"
              for module, genes in zip(modules.index, modules["genes"])]
    fig = Figure(figsize=(7.0, 0.24 * len(modules) + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(labels[::-1], modules["weight"].to_numpy()[::-1], xerr=modules["std"].to_numpy()[::-1], height=0.7)
    ax.axvline(1.0 / steps, color="black", linestyle="--", linewidth=0.9, label=f"uniform 1/{steps} = {1 / steps:.4f}")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_xlabel("attention weight (mean ± sd over held-out samples)")
    ax.set_title(f"{title}: top {len(modules)} of {steps} tokens\n(genes listed by attention x contribution)",
                 fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _predictions_frame(data: TaskData, predicted: np.ndarray, base: Optional[np.ndarray] = None) -> pd.DataFrame:
    """Long table: one row per (held-out sample, target gene) with observed and predicted
    (and `base_predicted`, the model's base alone, where it has one)."""
    n, k = predicted.shape
    frame = pd.DataFrame({
        "sample": np.repeat(np.asarray(data.test_samples, dtype=object), k),
        "gene": np.tile(np.asarray(data.target_genes, dtype=object), n),
        "observed": np.asarray(data.Y_test, dtype=np.float64).reshape(-1),
        "predicted": predicted.reshape(-1),
    })
    if base is not None:
        frame[f"{BASE_PREFIX}predicted"] = base.reshape(-1)
    return frame


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"
