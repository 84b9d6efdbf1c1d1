"""`reports/benchmark.md`, rendered from the summary dict that `reports/summary.json` holds.

Layout: the verdicts in words (one sentence per dataset and task, `benchmark.report.wording`),
the leaderboard (per task, with each row's verdict against ridge and the Friedman test or
the statement that there are too few datasets for one), then one section per dataset with
one subsection per task (metrics, scaled metrics beside the seed's figures, the verdicts,
the frequentist table, the scores scaled between the controls, figures).
"""

from __future__ import annotations

from typing import Optional

from benchmark import ARCHS, BASELINE_ARCHS
from benchmark.report.leaderboard import METRICS as SCALED_METRICS
from benchmark.report.leaderboard import NEGATIVE_CONTROL, ORACLE, figure_stem
from benchmark.report.wording import friedman_lines, leaderboard_cell, opening, verdicts_section

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
              "p (Holm)", "held-out per-gene win rate"]
    rows = []
    for arch in ARCHS:
        c = task["versus_best_baseline"].get(arch)
        if c is None:
            continue
        rows.append([f"`{arch}`", f"{c['mean_difference']:+.4f}", _num(c["t"], ".2f"), str(c["df"]),
                     _num(c["p_value"], ".3g"), _num(c.get("p_value_holm"), ".3g"),
                     f"{c['win_rate']:.2f} ({c['wins']}/{c['genes']})"])
    return _table(header, rows)


def _tested(task: dict) -> str:
    """'N architectures whose test is defined', for the Holm sentence."""
    n = sum(c["p_value"] is not None for c in task["versus_best_baseline"].values())
    return f"{n} architecture{'s' * (n != 1)} whose test is defined"


def _role_name(arch: str, role: str) -> str:
    return f"`{arch}`" + (f" ({role})" if "control" in role else "")


def _leaderboard_table(entries: list[dict], datasets: list[str]) -> list[str]:
    header = ["architecture", "mean scaled score", "mean rank", "datasets", *(f"`{d}`" for d in datasets),
              "verdict vs ridge (CV)"]
    rows = [[_role_name(e["arch"], e["role"]), _num(e["mean_scaled_score"]), _num(e["mean_rank"], ".2f"),
             f"{e['datasets']}/{len(datasets)}", *(_num(e["scaled_scores"].get(d)) for d in datasets),
             leaderboard_cell(e, datasets)]
            for e in entries]
    return _table(header, rows, ["---"] + ["---:"] * (len(header) - 2) + ["---"])


def _positive_check(name: str, section: dict) -> list[str]:
    """The explicit positive-control check of a dataset with an oracle: the oracle's and ridge's scaled scores."""
    scaled = section["scaled"]
    lines = []
    for row in (ORACLE, "ridge"):
        entry = scaled.get(row)
        if entry is None:
            continue
        metrics = ", ".join(f"{LABELS[m]} {_num(entry[m])}" for m in SCALED_METRICS)
        what = "by construction 1 on every metric" if row == ORACLE else "the linear reference"
        lines.append(f"`{row}` on `{name}` scores {_num(entry['score'])} ({what}: {metrics}).")
    return [" ".join(lines)] if lines else []


def _leaderboard(summary: dict, datasets: list[str]) -> list[str]:
    lines = [
        "## Leaderboard", "",
        "Per dataset and task, each architecture's held-out RMSE, MAE, MSE and R² are scaled between the "
        f"negative control (`{NEGATIVE_CONTROL}`, 0) and the positive control (1): the oracle, which predicts the "
        "noiseless truth of the held-out samples, on a dataset that keeps one; a perfect prediction (RMSE = MAE = "
        "MSE = 0, R² = 1) elsewhere. Scaled = (s − s_negative) / (s_positive − s_negative), so a score above 0 "
        "lies above the negative control's and 1 matches the positive control. Pearson r is left out: it is "
        "undefined for the mean's constant prediction. A dataset's scaled score is the mean over the four "
        "metrics; the mean scaled score "
        "averages it over datasets, and the mean rank averages the rank within each dataset (1 = best, ties share "
        "their mean rank; the oracle reads the truth, so it is not ranked). Rows are ordered by mean scaled score; "
        "`datasets` says on how many of the leaderboard's datasets a row was scored, and a row scored on fewer is "
        "averaged over those only (its results elsewhere are missing, see the dataset sections). The last "
        "column is each row's verdict against `ridge` on each dataset (Bayesian correlated t-test over the CV "
        "resamples, as in the verdicts above); the ranking itself decides no verdict.",
    ]
    for task, entries in summary["leaderboard"].items():
        on = [d for d in datasets if summary["datasets"][d][task].get("scaled")]
        lines += ["", f"### Task `{task}`", ""]
        if not entries:
            lines += ["No dataset has results for this task that include the negative control "
                      f"`{NEGATIVE_CONTROL}`, so there is no leaderboard."]
        else:
            lines += _leaderboard_table(entries, on)
        for name in on:
            section = summary["datasets"][name][task]
            if ORACLE in section["scaled"]:
                lines += ["", *_positive_check(name, section)]
        off = []
        for name in datasets:
            section = summary["datasets"][name][task]
            if not section["architectures"]:
                off.append(f"`{name}` (no results)")
            elif not section.get("scaled"):
                off.append(f"`{name}` (`{NEGATIVE_CONTROL}`, the negative control, has no results)")
        if off:
            lines += ["", f"Not on this leaderboard: {', '.join(off)}."]
        if entries:
            lines += ["", f"![Leaderboard, task {task}](figures/{figure_stem(task)}.png)"]
            if task in summary.get("friedman", {}):
                lines += ["", *friedman_lines(task, summary["friedman"][task])]
    return lines


def _controls_table(section: dict) -> list[str]:
    header = ["architecture", *(LABELS[m] for m in SCALED_METRICS), *(f"scaled {LABELS[m]}" for m in SCALED_METRICS),
              "scaled score", "rank"]
    positive = section["controls"]["positive"]
    rows = []
    for row, entry in section["scaled"].items():
        test = positive["test"] if row == ORACLE else section["architectures"][row]["test"]
        role = "positive control" if row == ORACLE else "negative control" if row == NEGATIVE_CONTROL else ""
        rows.append([f"`{row}`" + (f" ({role})" if role else ""), *(_num(test.get(m)) for m in SCALED_METRICS),
                     *(_num(entry[m]) for m in SCALED_METRICS), _num(entry["score"]), _num(entry["rank"], ".1f")])
    return _table(header, rows)


def _versus(task: dict) -> list[str]:
    genes = task["targets"]
    baseline = task["best_baseline"]
    if baseline is None:
        return [f"No baseline ({', '.join(BASELINE_ARCHS)}) has results for this task, so there is no comparison."]
    ratio = next(iter(task["versus_best_baseline"].values()), {}).get("test_train_ratio")
    return [
        f"Best baseline: `{baseline}` (lowest CV RMSE among {', '.join(BASELINE_ARCHS)}).",
        "",
        *(_versus_table(task) if task["versus_best_baseline"] else ["No other architecture has results for this task."]),
        "",
        "These frequentist columns are shown for reference and decide no wording: the verdicts above do. The "
        f"difference is the mean over the {task['folds']} scored folds of (model RMSE − baseline RMSE); negative: "
        "the model's CV RMSE is lower on average. t and p come from the corrected resampled t-test (Nadeau & "
        "Bengio, 2003) over the paired folds: t = mean(d) / sqrt((1/k + n_test/n_train) · var(d)), df = k − 1"
        + (f", with n_test/n_train = {ratio:.4f} from the fold sizes" if ratio is not None else "")
        + "; it widens the plain paired t-test, which ignores that the folds' training sets overlap. "
        f"{DASH} means the per-fold differences do not vary, so t is undefined. p (Holm) adjusts p for the "
        f"{_tested(task)} compared with the same baseline in this task (Holm's step-down method: calling "
        "every p (Holm) < α a difference keeps the chance of any false call among them at most α); an undefined "
        "p is not counted.",
        "",
        "Win rate: the fraction of target genes where the model's held-out per-gene RMSE is lower than "
        "the baseline's (the figure D-GEX reports against linear regression)."
        + (" This task has one target gene, so the win rate is 0 or 1: it says whether the model's "
           "held-out RMSE on that gene is the lower and carries no more information than the held-out RMSE."
           if genes == 1 else ""),
    ]


def _importance_table(task: dict) -> list[str]:
    """AUROC of each importance against the genes that share a programme with the target, what
    the attention's tokens and a near-oracle reach at best, and Spearman's rho between the
    attention and the permutation importance."""
    header = ["architecture", "attention x contribution AUROC", "its tokens' ceiling",
              "permutation AUROC (prediction change)", "permutation AUROC (RMSE increase)",
              "rank correlation (attention, permutation)"]
    rows = [[f"`{arch}`", _num(e.get("attention_auroc"), ".3f"), _num(e.get("token_ceiling_auroc"), ".3f"),
             _num(e.get("permutation_auroc"), ".3f"), _num(e.get("rmse_increase_auroc"), ".3f"),
             _num(e.get("rank_correlation"), ".3f")]
            for arch in ARCHS if (e := task["importance"].get(arch)) is not None]
    scored = max((e.get("targets", 0) for e in task["importance"].values()), default=0)
    if scored:
        note = ("AUROC 0.5 is chance, 1 ranks every driving gene first; truth: the feature genes that share a "
                f"latent programme with the target (`programmes.json`), mean over {scored} target"
                f"{'s' * (scored != 1)}. A model's permutation importance shows what that model uses: a linear "
                "model cannot use the genes of an interaction. Genes are ranked by how far permuting one moves "
                "the prediction; the RMSE increase under the same permutation is the noisier statistic where "
                "many genes carry one signal. The tokens' ceiling is the best any attention over that model's "
                "tokens reaches when a token's genes share its weight: the share of driving genes in each token, "
                "as a score.")
        ceiling = task.get("importance_ceiling")
        if ceiling:
            note += (f" The ceiling of the permutation AUROC: a near-oracle that knows the generator's formula "
                     f"and decodes the programmes from the features by ridge (held-out RMSE "
                     f"{ceiling['rmse']:.4f}), scored the same way, reaches {_num(ceiling['permutation_auroc'], '.3f')}.")
    else:
        note = f"No planted truth for this dataset: AUROCs are {DASH}; the rank correlation needs no truth."
    return [note, "", *_table(header, rows)]


def _budget_table(budget: dict) -> list[str]:
    header = ["architecture", "complete trials", "defaults (trial 0)", "best", "last improvement at trial"]
    rows = [[f"`{arch}`", str(e["trials"]), f"{e['best_values'][0]:.4f}", f"{e['best_values'][-1]:.4f}",
             str(e["last_improvement"])] for arch, e in budget.items()]
    note = ("Best validation RMSE on the tuning folds (never scored by CV) after each complete trial; trial 0 is "
            "the defaults. A last improvement at the last trial says more search may still pay for that "
            "architecture, and could change its place.")
    return [note, "", *_table(header, rows)]


def _task_section(dataset: str, name: str, task: dict, seed: dict) -> list[str]:
    genes = task["targets"]
    lines = ["", f"### `{dataset}`, task `{name}`: {genes} target gene{'s' * (genes != 1)}", "",
             f"{task['n_dev']} development samples, {task['folds']} scored CV folds (the folds tuning validated on "
             f"are not scored), {task['n_test']} held-out samples; data version `{task['data_version']}`."]
    if task["missing"]:
        listed = ", ".join(f"`{arch}` (`{path}` missing)" for arch, path in task["missing"].items())
        lines += ["", f"**Not in this report**: {listed}. Run `genebench evaluate --dataset {dataset} --task {name} "
                      "--arch ARCH` (or `dvc repro`) and compare again."]
    lines += ["", "#### Metrics (expression units)", "", *_metrics_table(task)]
    lines += ["", "#### Scaled metrics (each target gene min-max scaled to [0, 1] with its training-fold range)",
              "", *_scaled_table(task, seed), "", f"† {seed['caveat']}"]
    if seed.get("note"):
        lines[-1] += " " + seed["note"]
    lines += ["", "#### Verdicts", "", *verdicts_section(task)]
    lines += ["", "#### Frequentist tests against the best baseline (decide no wording)", "", *_versus(task)]
    positive = task["controls"]["positive"]
    lines += ["", "#### Held-out scores scaled between the controls", ""]
    if not task["scaled"]:
        lines += [f"`{NEGATIVE_CONTROL}`, the negative control, has no results, so nothing is scaled and this "
                  "dataset is off the leaderboard for this task."]
    else:
        where = (f"the oracle, the noiseless truth in `{positive['truth']}` on the held-out samples, scored like a "
                 "model" if positive["truth"] else "a perfect prediction (RMSE = MAE = MSE = 0, R² = 1)")
        lines += [f"Negative control (scaled 0): `{NEGATIVE_CONTROL}`. Positive control (scaled 1): {where}. "
                  "Held-out values in expression units, then scaled; rank among the architectures (1 = best).", "",
                  *_controls_table(task)]
    if task.get("importance"):
        lines += ["", "#### Importance against the planted genes", "", *_importance_table(task)]
    if task.get("budget"):
        lines += ["", "#### What the search bought", "", *_budget_table(task["budget"])]
    lines += ["", "#### Figures", ""]
    for title, path in task["figures"].items():
        lines += [f"![{title}]({path})", ""]
    lines += [f"Predicted vs observed shows `{task['best_model']}`, the architecture with the lowest CV RMSE "
              "(chosen on CV, not on the held-out split)."]
    return lines


def render(summary: dict, datasets: Optional[list[str]] = None) -> str:
    """The report's Markdown; `datasets` gives the order of the dataset sections (default: the summary's)."""
    datasets = list(summary["datasets"]) if datasets is None else datasets
    lines = [
        "# genebench: benchmark report",
        "",
        *opening(summary, datasets, **summary.get("compare", {"rope": 0.01, "confidence": 0.95})),
        "",
        "## How to read this report",
        "",
        "Written by `genebench compare` from `metrics/` and `artifacts/evaluation/`; the same numbers are in "
        "`reports/summary.json`. Datasets: " + ", ".join(f"`{d}`" for d in datasets) + ". CV: mean ± standard "
        "deviation (ddof=1) over the scored development folds, every architecture on the same folds. Test: "
        "refitted on all development samples, scored once on the held-out split. RMSE, MAE and MSE pool all "
        "target genes; R² is the mean over genes; Pearson r is the mean over the genes where it is defined (a "
        "gene whose prediction or observed values are constant on the scored samples has no r and is left out of "
        "the mean, not counted as 0; the metrics count such genes as `pearson_undefined`); "
        f"{DASH} marks a value that is undefined (Pearson r of a constant prediction, such as the mean baseline's).",
        "",
        *_leaderboard(summary, datasets),
    ]
    for dataset in datasets:
        tasks = summary["datasets"][dataset]
        lines += ["", f"## Dataset `{dataset}`"]
        for name, task in tasks.items():
            if not task["architectures"]:
                first = next(iter(task["missing"].values()))
                lines += ["", f"### `{dataset}`, task `{name}`", "",
                          f"**No results**: `{first}` and the files of every other architecture are missing. Run "
                          f"`genebench evaluate --dataset {dataset} --task {name} --arch ARCH` (or `dvc repro`) "
                          "and compare again."]
                continue
            lines += _task_section(dataset, name, task, summary["seed_reported"][name])
    return "\n".join(lines).rstrip() + "\n"
