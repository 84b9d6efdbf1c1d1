"""The compare stage: the leaderboard across datasets, and per dataset the comparison tables, statistics and plots.

`compare(config)` (a config not bound to a dataset) reads, for every dataset listed in
`datasets` of params.yaml, both tasks and all eight architectures,
`metrics/<dataset>/<task>/<arch>.json` and `artifacts/evaluation/<dataset>/<task>/<arch>/`,
and writes

- `reports/benchmark.md`: first the leaderboard (per task: every architecture's held-out
  score scaled between the negative control `mean` (0) and the positive control (1: the
  oracle on a dataset with a truth, a perfect prediction elsewhere), averaged over
  datasets, with the mean rank, the Friedman test and each row's verdict against ridge;
  see `benchmark.report.leaderboard`), opened by the verdicts in words; then per dataset
  and task the metrics table (CV mean ± std over the scored resamples, and held-out), the
  scaled metrics beside the seed's reported figures, the verdicts (Bayesian correlated
  t-test against the best baseline and against each deep model's own base, held-out
  bootstrap and win rate; see `benchmark.report.verdicts`), the frequentist corrected
  t-test with Holm's adjustment (shown, deciding no wording), the scores scaled between
  the controls, each importance's AUROC against the planted genes (where the dataset's
  generator is known) and the attention-permutation rank correlation
  (`benchmark.report.importance`), and figures;
- `reports/summary.json`: the same numbers, sorted keys, byte-identical on rerun:
  `{"leaderboard": {task: [row, ...]}, "friedman": {task: {...}}, "datasets": {dataset:
  {task: {..., "verdicts": {arch: {...}}, "versus_ridge": {arch: {...}}, "importance": {arch:
  {"attention_auroc", "token_ceiling_auroc", "permutation_auroc", "rmse_increase_auroc", "rank_correlation",
  "targets"}}, "importance_ceiling": {"permutation_auroc", "rmse", "targets"} or null, "budget": {arch:
  {"trials", "best_values", "last_improvement"}} (`benchmark.report.budget`)}}},
  "seed_reported": {task: {...}}}`; `verdicts` leaves out the reference (the best
  baseline) itself: it has nothing to be compared with;
- `reports/figures/*.png` and, for `dvc plots show`, the data behind them in
  `reports/plots/*.csv`: `<figure>_<dataset>_<task>` per dataset and task, and
  `leaderboard_<task>` (heatmap, architecture x dataset) and, where the task has enough
  datasets for a claim across them, `cd_<task>` (critical-difference diagram);

then logs one summary run to the MLflow experiment `<mlflow.experiment>-leaderboard`: the
leaderboard as a table, a few headline metrics, tags, and the report, summary and
figures as artifacts. A (dataset, task) without any result is listed as missing; only
when no dataset has any result is it an error. No TensorFlow is imported: this stage
reads files only.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from benchmark import ARCHS, DEEP_ARCHS, TASKS
from benchmark.config import Config
from benchmark.errors import UserError
from benchmark.outputs import atomic_dir, dumps_json, write_text
from benchmark.paths import reports_dir
from benchmark.report import leaderboard
from benchmark.report.held_out import check_prepared, held_out_table, matrices
from benchmark.report.mlflow_run import leaderboard_table, log_run
from benchmark.report.results import METRICS, SCALED, ArchResult, TaskResults, load_task_results, relative

if TYPE_CHECKING:
    from benchmark.data.prepare import TaskData

__all__ = ["compare", "build", "leaderboard_table", "SEED_REPORTED"]

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


def _architecture(result: ArchResult) -> dict:
    entry = {
        "kind": "deep" if result.arch in DEEP_ARCHS else "baseline",
        "cv": {m: result.metrics["cv"].get(m) for m in METRICS + SCALED},
        "test": {m: result.metrics["test"].get(m) for m in METRICS + SCALED},
        "mlflow_run_id": result.metrics.get("mlflow_run_id"),
    }
    base = result.metrics.get("base")
    if isinstance(base, dict):  # the deep model's own base scored alone (the ablation)
        entry["base"] = {part: {m: base.get(part, {}).get(m) for m in METRICS + SCALED} for part in ("cv", "test")}
    return entry


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
        check_prepared(config, results, data)
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
    from benchmark.report import plots, verdicts
    from benchmark.report.budget import budget_figure, task_budget
    from benchmark.report.importance import near_oracle_importance, task_importance

    task, suffix = results.task, f"{results.dataset}_{results.task}"
    held_out_data = functools.cache(lambda: load_task(config, task, held_out=True))
    tables = {arch: held_out_table(config, results, r, held_out_data) for arch, r in results.archs.items()}
    aligned = functools.cache(lambda arch: matrices(config, results.archs[arch], tables[arch]))
    best = results.best()
    held_out = tables[best][["sample", "gene", "observed", "predicted"]]
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

    budget = task_budget(config, results)
    fig, data = budget_figure(results.dataset, task, budget)
    if fig is not None:
        figures[f"budget_{suffix}.png"], plot_data[f"budget_{suffix}.csv"] = plots.png_bytes(fig), _csv(data)
        titles["Best validation RMSE against trials (the search budget)"] = f"budget_{suffix}.png"

    controls, scaled = _controls(config, results, held_out_data)
    section = {
        "targets": len(results.genes), "n_dev": results.n_dev, "n_test": results.n_test,
        "folds": len(results.folds), "repeats": results.repeats, "scored_folds": [int(f) for f in results.folds],
        "rho": verdicts.rho(config, results), "data_version": version,
        "architectures": {arch: _architecture(r) for arch, r in results.archs.items()},
        "missing": dict(results.missing),
        "best_model": best, "best_baseline": results.best_baseline,
        "verdicts": verdicts.task_verdicts(config, results, aligned),
        "versus_ridge": verdicts.versus_ridge(config, results),
        "versus_best_baseline": verdicts.frequentist(config, results),
        "controls": controls, "scaled": scaled,
        "importance": task_importance(config, results),
        "importance_ceiling": near_oracle_importance(config, held_out_data()),
        "budget": budget,
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
                     "datasets": {}, "leaderboard": {}, "friedman": {},
                     "compare": {"rope": config.params.compare.rope, "confidence": config.params.compare.confidence}}
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
        versus_ridge = {name: summary["datasets"][name][task]["versus_ridge"] for name in scores}
        entries = leaderboard.with_verdicts(leaderboard.table(scores), versus_ridge)
        summary["leaderboard"][task] = entries
        summary["friedman"][task] = leaderboard.friedman(scores)
        if entries:
            fig, data = plots.leaderboard_heatmap(task, entries, list(scores))
            stem = leaderboard.figure_stem(task)
            figures[f"{stem}.png"], plot_data[f"{stem}.csv"] = plots.png_bytes(fig), _csv(data)
        if summary["friedman"][task]["p_value"] is not None:
            fig, data = plots.critical_difference(task, summary["friedman"][task])
            figures[f"cd_{task}.png"], plot_data[f"cd_{task}.csv"] = plots.png_bytes(fig), _csv(data)
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
    log_run(config, summary, out, files=(REPORT_FILE, SUMMARY_FILE), folders=(FIGURES_DIR, PLOTS_DIR))
    print(f"wrote {relative(config, out / REPORT_FILE)} and {relative(config, out / SUMMARY_FILE)}")
    return out


