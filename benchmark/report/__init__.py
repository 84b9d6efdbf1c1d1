"""The compare stage: comparison tables, statistics and plots over every evaluated architecture.

`compare(config)` reads `metrics/<task>/<arch>.json` and `artifacts/evaluation/<task>/<arch>/`
for both tasks and all eight architectures and writes

- `reports/benchmark.md`: per task, the metrics table (CV mean ± std and held-out), the
  scaled metrics beside the seed's reported figures, and every other architecture
  against the best baseline (corrected resampled t-test over folds, per-gene win rate);
- `reports/summary.json`: the same numbers, sorted keys, byte-identical on rerun;
- `reports/figures/*.png` and, for `dvc plots show`, the data behind them in `reports/plots/*.csv`;

then logs one `compare` run per task to MLflow with the report, the figures and the
table values. No TensorFlow is imported: this stage reads files only.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from benchmark import ARCHS, DEEP_ARCHS, TASKS
from benchmark.config import Config
from benchmark.errors import UserError
from benchmark.outputs import atomic_dir, dumps_json, write_text
from benchmark.paths import reports_dir
from benchmark.report.results import METRICS, SCALED, ArchResult, TaskResults, load_task_results, relative

__all__ = ["compare", "SEED_REPORTED"]

# The seed's attention-LSTM figures, RMSE / MAE on min-max scaled targets (DESIGN.md).
SEED_REPORTED = {
    "multi": {"rmse_scaled": 0.1651, "mae_scaled": 0.1040, "genes": 50},
    "single": {"rmse_scaled": 0.0107, "mae_scaled": 0.0078, "genes": 1},
}
SEED_CAVEAT = ("The seed reports these figures for its attention-LSTM; its dataset, and whether they are CV or "
               "held-out numbers, are unknown, so they are context, not a like-for-like comparison.")

REPORT_FILE = "benchmark.md"
SUMMARY_FILE = "summary.json"
FIGURES_DIR = "figures"
PLOTS_DIR = "plots"
RUN_NAME = "compare"
LONG_COLUMNS = ("sample", "gene", "observed", "predicted")


def _held_out(config: Config, task: str, result: ArchResult):
    """Long table (sample, gene, observed, predicted) of one model's held-out predictions.

    evaluate writes `test_predictions.csv` in this long form. A wide file (a `sample`
    column, then one column per target gene) is accepted too; its observed values then
    come from the prepared split (`load_task(..., held_out=True)`).
    """
    import pandas as pd

    source = relative(config, result.predictions)
    try:
        predictions = pd.read_csv(result.predictions, dtype={"sample": str, "gene": str},
                                  float_precision="round_trip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    if "sample" not in predictions.columns:
        raise UserError(f"{source}: missing column 'sample'")
    if "gene" in predictions.columns or "observed" in predictions.columns:
        absent = [c for c in LONG_COLUMNS if c not in predictions.columns]
        if absent:
            raise UserError(f"{source}: missing column {absent[0]!r}")
        table = predictions[list(LONG_COLUMNS)]
        for column in ("observed", "predicted"):
            if not pd.api.types.is_numeric_dtype(table[column]) or table[column].isna().any():
                raise UserError(f"{source}: column {column!r}: expected a number in every row")
        genes = set(table["gene"])
        if genes != set(result.per_gene.index):
            odd = sorted(genes ^ set(result.per_gene.index))[0]
            raise UserError(f"{source}: gene {odd!r} is not in both this file and test_per_gene.csv")
        return table.reset_index(drop=True), None
    return _held_out_wide(config, task, result, predictions.set_index("sample"))


def _held_out_wide(config: Config, task: str, result: ArchResult, predictions):
    import pandas as pd

    from benchmark.data.prepare import load_task

    source = relative(config, result.predictions)
    data = load_task(config, task, held_out=True)
    absent = [g for g in data.target_genes if g not in predictions.columns]
    if absent:
        raise UserError(f"{source}: missing column {absent[0]!r} (a target gene of task {task!r})")
    unknown = [s for s in predictions.index if s not in set(data.test_samples)]
    lacking = [s for s in data.test_samples if s not in set(predictions.index)]
    if unknown or lacking:
        what = f"sample {unknown[0]!r} is not in" if unknown else f"held-out sample {lacking[0]!r} is missing from"
        raise UserError(f"{source}: {what} the prepared held-out split; rerun `genebench evaluate --task {task} "
                        f"--arch {result.arch}`")
    observed = pd.DataFrame(data.Y_test, index=data.test_samples, columns=data.target_genes)
    predicted = predictions.loc[data.test_samples, data.target_genes].astype("float64")
    long = pd.DataFrame({
        "sample": [s for s in data.test_samples for _ in data.target_genes],
        "gene": list(data.target_genes) * len(data.test_samples),
        "observed": observed.to_numpy(dtype="float64").reshape(-1),
        "predicted": predicted.to_numpy().reshape(-1),
    })
    return long, data.data_version


def _versus(results: TaskResults) -> dict[str, dict]:
    from benchmark.report.statistics import corrected_resampled_ttest, cv_test_train_ratio, per_gene_win_rate

    baseline_name = results.best_baseline
    if baseline_name is None:
        return {}
    baseline = results.archs[baseline_name]
    ratio = cv_test_train_ratio(results.n_dev, len(results.folds))
    out = {}
    for arch in ARCHS:
        if arch not in results.archs or arch == baseline_name:
            continue
        model = results.archs[arch]
        differences = (model.folds["rmse"] - baseline.folds["rmse"]).loc[results.folds]
        test = corrected_resampled_ttest(differences.to_numpy(), ratio)
        wins = per_gene_win_rate(model.per_gene["rmse"], baseline.per_gene["rmse"])
        out[arch] = {
            "baseline": baseline_name, "metric": "rmse",
            "mean_difference": test.mean_difference, "t": test.t, "df": test.df, "p_value": test.p_value,
            "folds": test.folds, "test_train_ratio": test.test_train_ratio,
            "win_rate": wins.rate, "wins": wins.wins, "genes": wins.genes,
        }
    return out


def _architecture(result: ArchResult) -> dict:
    return {
        "kind": "deep" if result.arch in DEEP_ARCHS else "baseline",
        "cv": {m: result.metrics["cv"].get(m) for m in METRICS + SCALED},
        "test": {m: result.metrics["test"].get(m) for m in METRICS + SCALED},
        "mlflow_run_id": result.metrics.get("mlflow_run_id"),
    }


def _seed(task: str, n_targets: int) -> dict:
    """The seed's figures for `task`, with a note when this run predicts another number of genes."""
    seed = dict(SEED_REPORTED[task], arch="attention_lstm", caveat=SEED_CAVEAT)
    if n_targets != seed["genes"]:
        seed["note"] = f"They are for the top {seed['genes']} genes; this run's {task} task has {n_targets}."
    return seed


def _csv(frame) -> bytes:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n", float_format="%.10g")
    return buf.getvalue().encode("utf-8")


def build(config: Config) -> tuple[dict, dict[str, bytes], dict[str, bytes]]:
    """The summary dict and the figure / plot-data files (name -> bytes) of every task."""
    from benchmark.report import plots

    loaded = {task: load_task_results(config, task) for task in TASKS}
    summary: dict = {"seed_reported": {task: _seed(task, len(loaded[task].genes)) for task in TASKS}, "tasks": {}}
    figures: dict[str, bytes] = {}
    plot_data: dict[str, bytes] = {}
    for task, results in loaded.items():
        best = results.best()
        held_out, version = _held_out(config, task, results.archs[best])
        if results.data_version is not None:
            version = results.data_version
        elif version is None:
            from benchmark.data.prepare import data_version

            version = data_version(config)
        task_figures = {}

        fig, data = plots.cv_rmse(results)
        figures[f"cv_rmse_{task}.png"], plot_data[f"cv_rmse_{task}.csv"] = plots.png_bytes(fig), _csv(data)
        task_figures["CV RMSE per architecture"] = f"cv_rmse_{task}.png"

        fig = plots.predicted_vs_observed(held_out, task, best, results.archs[best].test("rmse"))
        figures[f"predicted_vs_observed_{task}.png"] = plots.png_bytes(fig)
        plot_data[f"predicted_vs_observed_{task}.csv"] = _csv(held_out)
        task_figures[f"Predicted vs observed, {best}, held-out split"] = f"predicted_vs_observed_{task}.png"

        fig, data = plots.per_gene_r2(results)
        figures[f"per_gene_r2_{task}.png"], plot_data[f"per_gene_r2_{task}.csv"] = plots.png_bytes(fig), _csv(data)
        task_figures["Held-out R² per target gene"] = f"per_gene_r2_{task}.png"

        fig, data = plots.attention_top(results)
        if fig is not None:
            figures[f"attention_{task}.png"], plot_data[f"attention_{task}.csv"] = plots.png_bytes(fig), _csv(data)
            task_figures["Top tokens by attention weight"] = f"attention_{task}.png"

        summary["tasks"][task] = {
            "targets": len(results.genes), "n_dev": results.n_dev, "n_test": results.n_test,
            "folds": len(results.folds), "data_version": version,
            "architectures": {arch: _architecture(r) for arch, r in results.archs.items()},
            "missing": dict(results.missing),
            "best_model": best, "best_baseline": results.best_baseline,
            "versus_best_baseline": _versus(results),
            "figures": {title: f"{FIGURES_DIR}/{name}" for title, name in task_figures.items()},
        }
    return summary, figures, plot_data


def compare(config: Config) -> Path:
    """Write the report, summary, figures and plot data into `reports/`; log a summary run per task."""
    from benchmark.report.markdown import render

    summary, figures, plot_data = build(config)
    out = reports_dir(config)
    # reports/ also holds promote's output, so only this stage's own files and folders are replaced.
    for folder, files in ((FIGURES_DIR, figures), (PLOTS_DIR, plot_data)):
        with atomic_dir(out / folder) as tmp:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
    write_text(out / SUMMARY_FILE, dumps_json(summary))
    write_text(out / REPORT_FILE, render(summary))
    _log_to_mlflow(config, summary, out)
    print(f"wrote {relative(config, out / REPORT_FILE)} and {relative(config, out / SUMMARY_FILE)}")
    return out


def _flat_metrics(task: dict) -> dict[str, float]:
    values: dict[str, float] = {}
    for arch, result in task["architectures"].items():
        for metric, entry in result["cv"].items():
            for stat in ("mean", "std"):
                if entry is not None and entry.get(stat) is not None:
                    values[f"{arch}.cv_{metric}_{stat}"] = entry[stat]
        for metric, value in result["test"].items():
            if value is not None:
                values[f"{arch}.test_{metric}"] = value
    for arch, c in task["versus_best_baseline"].items():
        for key in ("mean_difference", "t", "p_value", "win_rate"):
            if c[key] is not None:
                values[f"{arch}.vs_best_baseline_{key}"] = c[key]
    return values


def _log_to_mlflow(config: Config, summary: dict, out: Path) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from benchmark import tracking

    client = MlflowClient(tracking_uri=tracking.configure(config))
    commit = tracking.git_commit(config.root)
    for name, task in summary["tasks"].items():
        tags = {"task": name, "stage": "compare", "data_version": task["data_version"], "git_commit": commit,
                "best_model": task["best_model"], "best_baseline": str(task["best_baseline"]),
                "missing_archs": ",".join(task["missing"]) or "none"}
        run = client.create_run(tracking.experiment_id(config, name), run_name=RUN_NAME, tags=tags)
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            metrics = [Metric(key, float(value), now, 0) for key, value in sorted(_flat_metrics(task).items())]
            for start in range(0, len(metrics), 1000):
                client.log_batch(run_id, metrics=metrics[start:start + 1000])
            client.log_artifact(run_id, str(out / REPORT_FILE))
            client.log_artifact(run_id, str(out / SUMMARY_FILE))
            for path in task["figures"].values():
                client.log_artifact(run_id, str(out / path), artifact_path=FIGURES_DIR)
            for path in sorted((out / PLOTS_DIR).glob(f"*_{name}.csv")):
                client.log_artifact(run_id, str(path), artifact_path=PLOTS_DIR)
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
