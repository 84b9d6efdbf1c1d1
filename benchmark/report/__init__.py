"""The compare stage: the leaderboard across datasets, and per dataset the comparison tables, statistics and plots.

`compare(config)` (a config not bound to a dataset) reads, for every dataset listed in
`datasets` of params.yaml, both tasks and all eight architectures,
`metrics/<dataset>/<task>/<arch>.json` and `artifacts/evaluation/<dataset>/<task>/<arch>/`,
and writes

- `reports/benchmark.md`: first the leaderboard (per task: every architecture's held-out
  score scaled between the negative control `mean` (0) and the positive control (1: the
  oracle on a dataset with a truth, a perfect prediction elsewhere), averaged over
  datasets, with the mean rank; see `benchmark.report.leaderboard`), then per dataset and
  task the metrics table (CV mean ± std over the scored folds, and held-out), the scaled
  metrics beside the seed's reported figures, every other architecture against the best
  baseline (corrected resampled t-test over the scored folds, with p-values Holm-adjusted
  over the architectures of that dataset and task, per-gene win rate), the
  scores scaled between the controls, and figures;
- `reports/summary.json`: the same numbers, sorted keys, byte-identical on rerun:
  `{"leaderboard": {task: [row, ...]}, "datasets": {dataset: {task: {...}}},
  "seed_reported": {task: {...}}}`;
- `reports/figures/*.png` and, for `dvc plots show`, the data behind them in
  `reports/plots/*.csv`: `<figure>_<dataset>_<task>` per dataset and task, and
  `leaderboard_<task>` (heatmap, architecture x dataset);

then logs one summary run to the MLflow experiment `<mlflow.experiment>-leaderboard`: the
leaderboard as a table, a few headline metrics, tags, and the report, summary and
figures as artifacts. A (dataset, task) without any result is listed as missing; only
when no dataset has any result is it an error. No TensorFlow is imported: this stage
reads files only.
"""

from __future__ import annotations

import functools
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from benchmark import ARCHS, DEEP_ARCHS, TASKS
from benchmark.config import Config
from benchmark.errors import UserError
from benchmark.outputs import atomic_dir, dumps_json, write_text
from benchmark.paths import prepared_dir, reports_dir
from benchmark.report import leaderboard
from benchmark.report.results import METRICS, SCALED, ArchResult, TaskResults, load_task_results, relative

if TYPE_CHECKING:
    from benchmark.data.prepare import TaskData

__all__ = ["compare", "build", "SEED_REPORTED"]

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
EXPERIMENT_SUFFIX = "leaderboard"  # the summary run's experiment: <mlflow.experiment>-leaderboard
TABLE_FILE = "leaderboard.json"  # the leaderboard as an MLflow table artifact
LONG_COLUMNS = ("sample", "gene", "observed", "predicted")


def _check_prepared(config: Config, results: TaskResults, data) -> None:
    """The prepared split must be the one the results were evaluated on; else observed values would not match."""
    rerun = f"rerun `genebench evaluate --dataset {config.dataset} --task {results.task}`"
    source = relative(config, prepared_dir(config) / "split.json")
    if len(data.test_samples) != results.n_test:
        raise UserError(f"{source}: {len(data.test_samples)} held-out samples, but the results were evaluated on "
                        f"{results.n_test}; {rerun}")
    if set(data.target_genes) != set(results.genes):
        odd = sorted(set(data.target_genes) ^ set(results.genes))[0]
        raise UserError(f"{relative(config, prepared_dir(config) / (results.task + '.json'))}: gene {odd!r} is not "
                        f"a target of both the prepared task and the evaluated results; {rerun}")
    if results.data_version is not None and results.data_version != data.data_version:
        raise UserError(f"{relative(config, prepared_dir(config) / 'summary.json')}: data_version "
                        f"{data.data_version} differs from the evaluated {results.data_version}; {rerun}")


def _held_out(config: Config, results: TaskResults, result: ArchResult, held_out_data: Callable[[], TaskData]):
    """Long table (sample, gene, observed, predicted) of one model's held-out predictions.

    evaluate writes `test_predictions.csv` in this long form. A wide file (a `sample`
    column, then one column per target gene) is accepted too; its observed values then
    come from the prepared split (`held_out_data()`, the task loaded with `held_out=True`).
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
        return table.reset_index(drop=True)
    return _held_out_wide(config, results.task, result, predictions.set_index("sample"), held_out_data())


def _held_out_wide(config: Config, task: str, result: ArchResult, predictions, data: TaskData):
    import pandas as pd

    source = relative(config, result.predictions)
    absent = [g for g in data.target_genes if g not in predictions.columns]
    if absent:
        raise UserError(f"{source}: missing column {absent[0]!r} (a target gene of task {task!r})")
    unknown = [s for s in predictions.index if s not in set(data.test_samples)]
    lacking = [s for s in data.test_samples if s not in set(predictions.index)]
    if unknown or lacking:
        what = f"sample {unknown[0]!r} is not in" if unknown else f"held-out sample {lacking[0]!r} is missing from"
        raise UserError(f"{source}: {what} the prepared held-out split; rerun `genebench evaluate "
                        f"--dataset {config.dataset} --task {task} --arch {result.arch}`")
    observed = pd.DataFrame(data.Y_test, index=data.test_samples, columns=data.target_genes)
    predicted = predictions.loc[data.test_samples, data.target_genes].astype("float64")
    long = pd.DataFrame({
        "sample": [s for s in data.test_samples for _ in data.target_genes],
        "gene": list(data.target_genes) * len(data.test_samples),
        "observed": observed.to_numpy(dtype="float64").reshape(-1),
        "predicted": predicted.to_numpy().reshape(-1),
    })
    return long


def _versus(config: Config, results: TaskResults) -> dict[str, dict]:
    """Every other architecture against the best baseline: corrected resampled t-test over the
    scored folds (raw p, and Holm-adjusted over this (dataset, task)'s architectures) and
    the held-out per-gene win rate."""
    from benchmark.report.statistics import (corrected_resampled_ttest, cv_test_train_ratio, holm_adjusted,
                                             per_gene_win_rate)

    baseline_name = results.best_baseline
    if baseline_name is None:
        return {}
    baseline = results.archs[baseline_name]
    ratio = results.test_train_ratio
    if ratio is None:  # folds.csv without fold sizes: those of a K-fold split over n_dev
        ratio = cv_test_train_ratio(results.n_dev, config.params.split.folds)
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
    # One family per (dataset, task): the architectures tested against the same baseline.
    adjusted = holm_adjusted({arch: entry["p_value"] for arch, entry in out.items()})
    for arch, entry in out.items():
        entry["p_value_holm"] = adjusted[arch]
    return out


def _architecture(result: ArchResult) -> dict:
    return {
        "kind": "deep" if result.arch in DEEP_ARCHS else "baseline",
        "cv": {m: result.metrics["cv"].get(m) for m in METRICS + SCALED},
        "test": {m: result.metrics["test"].get(m) for m in METRICS + SCALED},
        "mlflow_run_id": result.metrics.get("mlflow_run_id"),
    }


def _seed(task: str, n_targets: Optional[int]) -> dict:
    """The seed's figures for `task`, with a note when this run predicts another number of genes."""
    seed = dict(SEED_REPORTED[task], arch="attention_lstm", caveat=SEED_CAVEAT)
    if n_targets is not None and n_targets != seed["genes"]:
        seed["note"] = f"They are for the top {seed['genes']} genes; this run's {task} task has {n_targets}."
    return seed


def _controls(config: Config, results: TaskResults, held_out_data: Callable[[], TaskData]) -> tuple[dict, dict]:
    """The controls of one (dataset, task) and every row's scores scaled between them.

    Returns (`controls`, `scaled`): `controls` holds the negative (`mean`) and positive
    control's held-out metrics; `scaled` is `leaderboard.dataset_scores` ({} when `mean`
    has no results, which leaves this dataset off the task's leaderboard).
    """
    tests = {arch: {m: r.test(m) for m in leaderboard.METRICS} for arch, r in results.archs.items()}
    if leaderboard.has_truth(config):
        data = held_out_data()
        _check_prepared(config, results, data)
        positive = {"name": leaderboard.ORACLE, "test": leaderboard.oracle_metrics(config, data),
                    "truth": relative(config, config.data_dir / leaderboard.TRUTH_FILE)}
    else:
        positive = {"name": leaderboard.PERFECT_NAME, "test": dict(leaderboard.PERFECT), "truth": None}
    negative = {"name": leaderboard.NEGATIVE_CONTROL, "test": tests.get(leaderboard.NEGATIVE_CONTROL)}
    controls = {"negative": negative, "positive": positive, "metrics": list(leaderboard.METRICS)}
    if negative["test"] is None:
        return controls, {}
    return controls, leaderboard.dataset_scores(tests, positive["test"], oracle=positive["truth"] is not None)


def _csv(frame) -> bytes:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n", float_format="%.10g")
    return buf.getvalue().encode("utf-8")


def _task_section(config: Config, results: TaskResults) -> tuple[dict, dict[str, bytes], dict[str, bytes]]:
    """One (dataset, task)'s summary entry and its figures and plot data (file name -> bytes)."""
    from benchmark.data.prepare import load_task
    from benchmark.report import plots

    task, suffix = results.task, f"{results.dataset}_{results.task}"
    held_out_data = functools.cache(lambda: load_task(config, task, held_out=True))
    best = results.best()
    held_out = _held_out(config, results, results.archs[best], held_out_data)
    version = results.data_version
    if version is None:
        from benchmark.data.prepare import data_version

        version = data_version(config)
    figures, plot_data, titles = {}, {}, {}

    fig, data = plots.cv_rmse(results)
    figures[f"cv_rmse_{suffix}.png"], plot_data[f"cv_rmse_{suffix}.csv"] = plots.png_bytes(fig), _csv(data)
    titles["CV RMSE per architecture"] = f"cv_rmse_{suffix}.png"

    fig = plots.predicted_vs_observed(held_out, f"{results.dataset} / {task}", best, results.archs[best].test("rmse"))
    figures[f"predicted_vs_observed_{suffix}.png"] = plots.png_bytes(fig)
    plot_data[f"predicted_vs_observed_{suffix}.csv"] = _csv(held_out)
    titles[f"Predicted vs observed, {best}, held-out split"] = f"predicted_vs_observed_{suffix}.png"

    fig, data = plots.per_gene_r2(results)
    figures[f"per_gene_r2_{suffix}.png"], plot_data[f"per_gene_r2_{suffix}.csv"] = plots.png_bytes(fig), _csv(data)
    titles["Held-out R² per target gene"] = f"per_gene_r2_{suffix}.png"

    fig, data = plots.attention_top(results)
    if fig is not None:
        figures[f"attention_{suffix}.png"], plot_data[f"attention_{suffix}.csv"] = plots.png_bytes(fig), _csv(data)
        titles["Top tokens by attention weight"] = f"attention_{suffix}.png"

    controls, scaled = _controls(config, results, held_out_data)
    section = {
        "targets": len(results.genes), "n_dev": results.n_dev, "n_test": results.n_test,
        "folds": len(results.folds), "scored_folds": [int(f) for f in results.folds], "data_version": version,
        "architectures": {arch: _architecture(r) for arch, r in results.archs.items()},
        "missing": dict(results.missing),
        "best_model": best, "best_baseline": results.best_baseline,
        "versus_best_baseline": _versus(config, results),
        "controls": controls, "scaled": scaled,
        "figures": {title: f"{FIGURES_DIR}/{name}" for title, name in titles.items()},
    }
    return section, figures, plot_data


def build(config: Config) -> tuple[dict, dict[str, bytes], dict[str, bytes]]:
    """The summary dict and the figure / plot-data files (name -> bytes) over every dataset and task."""
    from benchmark.report import plots

    loaded = {name: {task: load_task_results(config.for_dataset(name), task) for task in TASKS}
              for name in config.datasets}
    if not any(results.archs for tasks in loaded.values() for results in tasks.values()):
        first = loaded[config.datasets[0]][TASKS[0]].missing[ARCHS[0]]
        raise UserError(f"{first}: not found, and no dataset has results for any task; run `genebench evaluate "
                        f"--dataset D --task T --arch ARCH` (or `dvc repro`) first")
    targets = {task: next((len(tasks[task].genes) for tasks in loaded.values() if tasks[task].archs), None)
               for task in TASKS}
    summary: dict = {"seed_reported": {task: _seed(task, targets[task]) for task in TASKS},
                     "datasets": {}, "leaderboard": {}}
    figures: dict[str, bytes] = {}
    plot_data: dict[str, bytes] = {}
    for name, tasks in loaded.items():
        summary["datasets"][name] = {}
        for task, results in tasks.items():
            if not results.archs:
                summary["datasets"][name][task] = {"architectures": {}, "missing": dict(results.missing)}
                continue
            section, task_figures, task_plots = _task_section(config.for_dataset(name), results)
            summary["datasets"][name][task] = section
            figures.update(task_figures)
            plot_data.update(task_plots)
    for task in TASKS:
        scores = {name: summary["datasets"][name][task]["scaled"] for name in config.datasets
                  if summary["datasets"][name][task].get("scaled")}
        entries = leaderboard.table(scores)
        summary["leaderboard"][task] = entries
        if entries:
            fig, data = plots.leaderboard_heatmap(task, entries, list(scores))
            stem = leaderboard.figure_stem(task)
            figures[f"{stem}.png"], plot_data[f"{stem}.csv"] = plots.png_bytes(fig), _csv(data)
    return summary, figures, plot_data


def compare(config: Config) -> Path:
    """Write the report, summary, figures and plot data into `reports/`; log one summary run to MLflow."""
    from benchmark.report.markdown import render

    summary, figures, plot_data = build(config)
    out = reports_dir(config)
    # reports/ also holds promote's output, so only this stage's own files and folders are replaced.
    for folder, files in ((FIGURES_DIR, figures), (PLOTS_DIR, plot_data)):
        with atomic_dir(out / folder) as tmp:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
    write_text(out / SUMMARY_FILE, dumps_json(summary))
    write_text(out / REPORT_FILE, render(summary, config.datasets))
    _log_to_mlflow(config, summary, out)
    print(f"wrote {relative(config, out / REPORT_FILE)} and {relative(config, out / SUMMARY_FILE)}")
    return out


def leaderboard_table(summary: dict, datasets: list[str]):
    """The leaderboards of every task as one DataFrame, one row per (task, leaderboard row).

    Columns: task, position (1 = top), arch, role, mean_scaled_score, mean_rank,
    datasets (how many scored it), then `scaled_<dataset>` per dataset (NaN where absent).
    """
    import pandas as pd

    rows = []
    for task in TASKS:
        for position, entry in enumerate(summary["leaderboard"][task], start=1):
            row = {"task": task, "position": position, "arch": entry["arch"], "role": entry["role"],
                   "mean_scaled_score": entry["mean_scaled_score"], "mean_rank": entry["mean_rank"],
                   "datasets": entry["datasets"]}
            row.update({f"scaled_{d}": entry["scaled_scores"].get(d) for d in datasets})
            rows.append(row)
    columns = ["task", "position", "arch", "role", "mean_scaled_score", "mean_rank", "datasets"]
    return pd.DataFrame(rows, columns=columns + [f"scaled_{d}" for d in datasets])


def _headline_metrics(summary: dict) -> dict[str, float]:
    """A handful of numbers for the runs table: per task the top architecture's mean scaled
    score and mean rank and how many datasets are on the leaderboard; per dataset with an
    oracle, ridge's scaled score (how far the linear reference falls short of the truth)."""
    values: dict[str, float] = {}
    for task, entries in summary["leaderboard"].items():
        top = next((e for e in entries if e["arch"] != leaderboard.ORACLE), None)
        if top is None:
            continue
        values[f"{task}.best_mean_scaled_score"] = top["mean_scaled_score"]
        if top["mean_rank"] is not None:
            values[f"{task}.best_mean_rank"] = top["mean_rank"]
        values[f"{task}.datasets_scored"] = float(max(e["datasets"] for e in entries))
    for name, tasks in summary["datasets"].items():
        for task, section in tasks.items():
            ridge = section.get("scaled", {}).get("ridge")
            if leaderboard.ORACLE in section.get("scaled", {}) and ridge and ridge["score"] is not None:
                values[f"{name}.{task}.ridge_scaled_score"] = ridge["score"]
    return values


def _log_to_mlflow(config: Config, summary: dict, out: Path) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from benchmark import tracking

    client = MlflowClient(tracking_uri=tracking.configure(config))
    missing = [f"{name}/{task}" for name, tasks in summary["datasets"].items()
               for task, section in tasks.items() if not section["architectures"]]
    tags = {"stage": "compare", "git_commit": tracking.git_commit(config.root),
            "git_dirty": tracking.git_dirty(config.root), "datasets": ",".join(config.datasets),
            "missing": ",".join(missing) or "none"}
    for task, entries in summary["leaderboard"].items():
        tags[f"best_model_{task}"] = str(leaderboard.best(entries))
    for name, tasks in summary["datasets"].items():
        version = next((s["data_version"] for s in tasks.values() if s.get("data_version")), None)
        if version is not None:
            tags[f"data_version.{name}"] = version
    experiment = tracking.named_experiment_id(config, f"{config.params.mlflow.experiment}-{EXPERIMENT_SUFFIX}")
    run = client.create_run(experiment, run_name=RUN_NAME, tags=tags)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0)
                                          for k, v in sorted(_headline_metrics(summary).items())])
        client.log_table(run_id, data=leaderboard_table(summary, config.datasets), artifact_file=TABLE_FILE)
        client.log_artifact(run_id, str(out / REPORT_FILE))
        client.log_artifact(run_id, str(out / SUMMARY_FILE))
        client.log_artifacts(run_id, str(out / FIGURES_DIR), artifact_path=FIGURES_DIR)
        client.log_artifacts(run_id, str(out / PLOTS_DIR), artifact_path=PLOTS_DIR)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
