"""`reports/benchmark.md`, rendered from the summary dict that `reports/summary.json` holds."""

from __future__ import annotations

from typing import Optional

from benchmark import ARCHS, BASELINE_ARCHS

DASH = "–"  # shown for undefined values (Pearson r of a constant prediction, an undefined t)
LABELS = {"rmse": "RMSE", "mae": "MAE", "mse": "MSE", "r2": "R²", "pearson": "Pearson r"}


def _num(value: Optional[float], fmt: str = ".4f") -> str:
    return DASH if value is None else format(value, fmt)


def _cv(entry: Optional[dict]) -> str:
    if entry is None or entry.get("mean") is None:
        return DASH
    if entry.get("std") is None:
        return _num(entry["mean"])
    return f"{_num(entry['mean'])} ± {_num(entry['std'])}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]], align: Optional[list[str]] = None) -> list[str]:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    return [_row(header), _row(align), *(_row(r) for r in rows)]


def _name(arch: str, task: dict) -> str:
    marks = []
    if arch == task["best_model"]:
        marks.append("best CV RMSE")
    if arch == task["best_baseline"]:
        marks.append("best baseline")
    return f"`{arch}`" + (f" ({', '.join(marks)})" if marks else "")


def _metrics_table(task: dict) -> list[str]:
    header = ["architecture"]
    for metric in LABELS.values():
        header += [f"{metric} CV", f"{metric} test"]
    rows = []
    for arch in ARCHS:
        result = task["architectures"].get(arch)
        if result is None:
            continue
        cells = [_name(arch, task)]
        for metric in LABELS:
            cells += [_cv(result["cv"].get(metric)), _num(result["test"].get(metric))]
        rows.append(cells)
    return _table(header, rows)


def _scaled_table(task: dict, seed: dict) -> list[str]:
    header = ["architecture", "scaled RMSE CV", "scaled RMSE test", "scaled MAE CV", "scaled MAE test",
              "seed's reported RMSE / MAE †"]
    rows = []
    for arch in ARCHS:
        result = task["architectures"].get(arch)
        if result is None:
            continue
        reported = DASH
        if arch == seed["arch"]:
            reported = f"{seed['rmse_scaled']:.4f} / {seed['mae_scaled']:.4f}"
        rows.append([_name(arch, task), _cv(result["cv"].get("rmse_scaled")), _num(result["test"].get("rmse_scaled")),
                     _cv(result["cv"].get("mae_scaled")), _num(result["test"].get("mae_scaled")), reported])
    return _table(header, rows)


def _versus_table(task: dict) -> list[str]:
    header = ["architecture", "CV RMSE difference (model − baseline)", "t", "df", "p (two-sided)",
              "held-out per-gene win rate"]
    rows = []
    for arch in ARCHS:
        c = task["versus_best_baseline"].get(arch)
        if c is None:
            continue
        rows.append([f"`{arch}`", f"{c['mean_difference']:+.4f}", _num(c["t"], ".2f"), str(c["df"]),
                     _num(c["p_value"], ".3g"), f"{c['win_rate']:.2f} ({c['wins']}/{c['genes']})"])
    return _table(header, rows)


def render(summary: dict) -> str:
    lines = [
        "# genebench: benchmark report",
        "",
        "Written by `genebench compare` from `metrics/` and `artifacts/evaluation/`; the same numbers are in "
        "`reports/summary.json`. CV: mean ± standard deviation (ddof=1) over the K development folds, every "
        "architecture on the same folds. Test: refitted on all development samples, scored once on the "
        "held-out split. RMSE, MAE and MSE pool all target genes; R² and Pearson r are means over genes; "
        f"{DASH} marks a value that is undefined (Pearson r of a constant prediction, such as the mean baseline's).",
    ]
    for name, task in summary["tasks"].items():
        seed = summary["seed_reported"][name]
        genes = task["targets"]
        lines += ["", f"## Task `{name}`: {genes} target gene{'s' * (genes != 1)}", "",
                  f"{task['n_dev']} development samples in {task['folds']} CV folds, {task['n_test']} held-out "
                  f"samples; data version `{task['data_version']}`."]
        if task["missing"]:
            listed = ", ".join(f"`{arch}` (`{path}` missing)" for arch, path in task["missing"].items())
            lines += ["", f"**Not in this report**: {listed}. Run `genebench evaluate --task {name} --arch ARCH` "
                          "(or `dvc repro`) and compare again."]
        lines += ["", "### Metrics (expression units)", "", *_metrics_table(task)]
        lines += ["", "### Scaled metrics (each target gene min-max scaled to [0, 1] with its training-fold range)",
                  "", *_scaled_table(task, seed), "",
                  f"† {seed['caveat']}"]
        if seed.get("note"):
            lines[-1] += " " + seed["note"]
        lines += ["", "### Each architecture against the best baseline", ""]
        baseline = task["best_baseline"]
        if baseline is None:
            lines += [f"No baseline ({', '.join(BASELINE_ARCHS)}) has results for this task, so there is no comparison."]
        else:
            ratio = next(iter(task["versus_best_baseline"].values()), {}).get("test_train_ratio")
            lines += [
                f"Best baseline: `{baseline}` (lowest CV RMSE among {', '.join(BASELINE_ARCHS)}).",
                "",
                *(_versus_table(task) if task["versus_best_baseline"] else ["No other architecture has results for this task."]),
                "",
                "The difference is the mean over folds of (model RMSE − baseline RMSE): negative means the "
                "model is better than the baseline. t and p come from the corrected resampled t-test (Nadeau & Bengio, 2003) "
                "over the paired folds: t = mean(d) / sqrt((1/k + n_test/n_train) · var(d)), df = k − 1"
                + (f", with n_test/n_train = {ratio:.4f} from the fold sizes" if ratio is not None else "")
                + "; it widens the plain paired t-test, which ignores that the folds' training sets overlap. "
                f"{DASH} means the per-fold differences do not vary, so t is undefined. The p-values are not "
                "adjusted for the several models compared.",
                "",
                "Win rate: the fraction of target genes where the model's held-out per-gene RMSE is lower than "
                "the baseline's (the figure D-GEX reports against linear regression)."
                + (" This task has one target gene, so the win rate is 0 or 1: it says whether the model beat "
                   "the baseline on that gene and carries no more information than the held-out RMSE."
                   if genes == 1 else ""),
            ]
        lines += ["", "### Figures", ""]
        for title, path in task["figures"].items():
            lines += [f"![{title}]({path})", ""]
        lines += [f"Predicted vs observed shows `{task['best_model']}`, the architecture with the lowest CV RMSE "
                  "(chosen on CV, not on the held-out split)."]
    return "\n".join(lines).rstrip() + "\n"
