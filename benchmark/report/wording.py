"""The verdicts in words and tables (Markdown): the one place where the report's wording
about one model against another is chosen.

Rule (DESIGN.md, protocol item 6): no sentence calls a model better than a baseline
unless its verdict is `better`; `equivalent`, `worse` and `undecided` are said as such,
with the posterior probability that decided them (or, undecided, the two largest).
Probabilities are shown rounded down (`verdicts.probability`), so a 0.949 never reads as
the 0.95 a verdict needs.
"""

from __future__ import annotations

from typing import Optional

from benchmark import ARCHS, BASELINE_ARCHS, DEEP_ARCHS
from benchmark.report.leaderboard import ORACLE
from benchmark.report.verdicts import LEADERBOARD_REFERENCE, probability, short

DASH = "–"
PHRASES = {"better": "better than", "equivalent": "practically equivalent to", "worse": "worse than",
           "undecided": "undecided against"}


def task_label(name: str, targets: int) -> str:
    """`top 50 genes` for the multi task, `one target gene` for single."""
    return "one target gene" if targets == 1 else f"top {targets} genes"


def _phrase(arch: str, entry: dict, against: str) -> str:
    """`dnn` is practically equivalent to `ridge` (P = 0.97); undecided with P(better), P(equivalent)."""
    name = entry["verdict"]
    if name == "undecided":
        if entry["p_better"] is None:
            return f"`{arch}` is undecided (fewer than two CV resamples)"
        return (f"`{arch}` is undecided (P(better) {probability(entry['p_better'])}, "
                f"P(equivalent) {probability(entry['p_equivalent'])}, P(worse) {probability(entry['p_worse'])})")
    key = {"better": "p_better", "equivalent": "p_equivalent", "worse": "p_worse"}[name]
    return f"`{arch}` is {PHRASES[name]} {against} (P = {probability(entry[key])})"


def task_sentence(dataset: str, name: str, task: dict) -> str:
    """One dataset and task's verdicts in one sentence, then the ablation's, if any deep model has a base."""
    where = f"`{dataset}`, {task_label(name, task['targets'])} (task `{name}`)"
    reference = task.get("best_baseline")
    verdicts = task.get("verdicts", {})
    if reference is None:
        return f"{where}: no baseline has results, so there is no verdict."
    ref = f"`{reference}`"
    deep = [a for a in DEEP_ARCHS if a in verdicts]
    others = [a for a in BASELINE_ARCHS if a in verdicts]
    if not deep and not others:
        return f"{where}: only `{reference}` has results, so there is nothing to compare with it."
    better = [a for a in deep if verdicts[a]["verdict"] == "better"]
    if better:
        lead = f"{where}: reference {ref} (the best baseline by CV)"
    elif deep:
        lead = f"{where}: no deep model is better than {ref} (the best baseline by CV)"
    else:
        lead = f"{where}: reference {ref} (the best baseline by CV); no deep model has results"
    parts = [_phrase(a, verdicts[a], ref) for a in deep]
    text = lead + ("; " + ", ".join(parts) if parts else "")
    if others:
        text += "; of the other baselines " + ", ".join(_phrase(a, verdicts[a], ref) for a in others)
    text += "."
    ablation = [a for a in deep if verdicts[a].get("versus_base") is not None]
    if ablation:
        text += (" What the network adds over its own base (the ridge it corrects): "
                 + ", ".join(_phrase(a, verdicts[a]["versus_base"], "its base") for a in ablation) + ".")
    return text


def meaning(rope: float, confidence: float) -> str:
    """One line on what the probabilities mean."""
    return (f"P(better), P(equivalent) and P(worse) are posterior probabilities from the Bayesian correlated t-test "
            "(Benavoli et al. 2017) over the paired CV resamples: that the model's mean CV RMSE is below the "
            f"reference's by more than the region of practical equivalence (± {rope:g} × the reference's CV RMSE), "
            f"within it, or above it by more; a verdict needs {confidence:g} or more, else it is undecided.")


def opening(summary: dict, datasets: list[str], rope: float, confidence: float) -> list[str]:
    """The report's first section: one sentence per dataset and task."""
    lines = ["## Verdicts", "", meaning(rope, confidence), ""]
    for dataset in datasets:
        for name, task in summary["datasets"][dataset].items():
            if not task["architectures"]:
                lines.append(f"- `{dataset}`, task `{name}`: no results.")
            else:
                lines.append("- " + task_sentence(dataset, name, task))
    return lines


def _held(entry: dict) -> list[str]:
    h = entry["held_out"]
    return [f"{h['difference']:+.4f} [{h['ci95'][0]:+.4f}, {h['ci95'][1]:+.4f}]",
            f"{h['win_rate']:.2f} ({h['wins']}/{h['genes']})"]


def _p(value: Optional[float]) -> str:
    return DASH if value is None else probability(value)


def verdicts_table(task: dict, base: bool = False) -> list[str]:
    """Per architecture: verdict, the three probabilities, CV and held-out differences (against
    the reference, or with `base` against each deep model's own base)."""
    header = ["architecture", "verdict", "P(better)", "P(equivalent)", "P(worse)", "CV RMSE difference",
              "rope", "held-out RMSE difference [95% bootstrap CI]", "held-out per-gene win rate"]
    rows = []
    for arch in ARCHS:
        entry = task.get("verdicts", {}).get(arch)
        if base:
            entry = None if entry is None else entry.get("versus_base")
        if entry is None:
            continue
        rows.append([f"`{arch}`", f"**{entry['verdict']}**", _p(entry["p_better"]), _p(entry["p_equivalent"]),
                     _p(entry["p_worse"]), f"{entry['difference']:+.4f}", f"± {entry['rope']:.4f}", *_held(entry)])
    return ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2),
            *("| " + " | ".join(r) + " |" for r in rows)]


def verdicts_section(task: dict) -> list[str]:
    """The per-dataset verdict subsection: against the reference, then the ablation."""
    reference = task.get("best_baseline")
    if reference is None or not task.get("verdicts"):
        return ["No comparison: " + ("no baseline has results." if reference is None
                                     else f"no architecture but `{reference}` has results.")]
    n, repeats = task["folds"], task.get("repeats", 1)
    lines = [f"Reference: `{reference}`, the best baseline by CV RMSE (it has no verdict against itself). "
             f"Differences are model − reference in RMSE (negative: lower error), CV over the {n} paired scored "
             f"resamples ({repeats} repeat{'s' * (repeats != 1)} of the folds; rho = {task['rho']:.4f}, the share of "
             "a fold's samples held out), held-out over the test samples with a paired bootstrap (2000 resamples "
             "of samples, 95% percentile interval). Win rate: the share of target genes where the model's held-out "
             "RMSE is lower (D-GEX's figure against linear regression).", "", *verdicts_table(task)]
    if any(e.get("versus_base") for e in task["verdicts"].values()):
        lines += ["", "The ablation, each deep model against its own base alone (the same folds and held-out "
                      "samples; rope relative to the base's CV RMSE): what the network adds.", "",
                  *verdicts_table(task, base=True)]
    return lines


def leaderboard_cell(entry: dict, datasets: list[str]) -> str:
    """The leaderboard's `verdict vs ridge (CV)` cell of one row."""
    if entry["arch"] == LEADERBOARD_REFERENCE:
        return "reference"
    if entry["arch"] == ORACLE:
        return DASH
    verdicts = entry.get("verdicts_vs_ridge", {})
    cells = [f"`{d}` {short(verdicts[d], against=False)}" for d in datasets if d in verdicts]
    return "; ".join(cells) or DASH


def friedman_lines(task: str, result: dict) -> list[str]:
    """The statement across datasets: the Friedman test where the rule allows a claim, else why not."""
    n, k = result["datasets"], len(result["architectures"])
    left = (f" Left out (not scored on every dataset): {', '.join(f'`{a}`' for a in result['left_out'])}."
            if result["left_out"] else "")
    if not result["claim"]:
        why = (f"{n} dataset{'s' * (n != 1)}, fewer than the {result['min_datasets']} that this report requires for a "
               "claim across datasets (a Friedman test over so few has almost no power)"
               if n < result["min_datasets"] else f"only {k} architectures scored on every dataset (3 needed)")
        lines = [f"**Across datasets: too few for a claim.** This leaderboard has {why}, so it claims no ranking "
                 "across datasets: the mean scaled score and mean rank describe these datasets only; the verdicts "
                 "per dataset are the claims." + left]
        if result["p_value"] is not None:
            lines += ["", f"For the record, not as evidence: Friedman χ² = {result['statistic']:.2f}, "
                          f"p = {result['p_value']:.3g} over {n} datasets × {k} architectures; Nemenyi's critical "
                          f"difference of mean ranks CD = {result['critical_difference']:.2f} (α = {result['alpha']}).",
                      "", f"![Critical-difference diagram, task {task}](figures/cd_{task}.png)"]
        return lines
    verdict = ("the architectures' ranks differ across datasets" if result["p_value"] < result["alpha"]
               else "the ranks do not differ beyond chance, so no architecture ranks above another across datasets")
    return [f"Friedman test over {n} datasets × {k} architectures: χ² = {result['statistic']:.2f}, "
            f"p = {result['p_value']:.3g}: {verdict} (α = {result['alpha']}). Nemenyi's critical difference of mean "
            f"ranks at α = {result['alpha']}: CD = {result['critical_difference']:.2f}; two architectures whose mean "
            "ranks (over the compared architectures) differ by more than CD differ across datasets." + left,
            "", f"![Critical-difference diagram, task {task}](figures/cd_{task}.png)"]
