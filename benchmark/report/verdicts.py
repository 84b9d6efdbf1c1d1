"""The verdicts of one (dataset, task) (DESIGN.md, protocol item 6), and the frequentist table beside them.

Each architecture is compared with the reference, the best baseline by CV RMSE
(`TaskResults.best_baseline`); the reference itself gets no entry (it would be compared
with itself). A deep model whose files score its base alone is also compared with that
base (`versus_base`: what the network adds). Each comparison is

- the Bayesian correlated t-test over the paired scored CV resamples (every repeat x
  fold, paired by fold id), rope = `compare.rope` x the reference's mean CV RMSE, decided
  at `compare.confidence` (`benchmark.report.statistics`);
- on the held-out split, the paired bootstrap of the RMSE difference over samples (95%
  percentile interval) and the per-gene win rate.

The same CV test against `ridge` gives the leaderboard's verdict column. The corrected
resampled t-test (Nadeau & Bengio) with Holm's adjustment is kept as a table; it decides
no wording.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import pandas as pd

from benchmark import ARCHS, DEEP_ARCHS
from benchmark.config import Config
from benchmark.report.held_out import HeldOut, check_paired
from benchmark.report.results import BASE, TaskResults
from benchmark.report.statistics import (bayesian_correlated_ttest, corrected_resampled_ttest, cv_test_train_ratio,
                                         holm_adjusted, paired_bootstrap_rmse, per_gene_win_rate, stable_seed,
                                         verdict)

LEADERBOARD_REFERENCE = "ridge"  # the leaderboard's verdict column is against ridge (DESIGN.md, item 7)


def rho(config: Config, results: TaskResults) -> float:
    """n_test / n_total of the scored folds (their recorded sizes); without sizes in folds.csv,
    that of a K-fold split, 1 / `split.folds`."""
    recorded = results.rho
    return recorded if recorded is not None else 1.0 / config.params.split.folds


def cv_verdict(model_rmse: pd.Series, reference_rmse: pd.Series, rho_: float, rope: float, confidence: float) -> dict:
    """The correlated t-test of one pair over the resamples (`fold` id -> CV RMSE, same ids).

    `rope`: relative to the reference's mean CV RMSE. Returns the summary keys `verdict`,
    `p_better`, `p_equivalent`, `p_worse`, `rope` (absolute, RMSE units), `difference`
    (mean CV RMSE difference, model − reference), `resamples`, `rho`.
    """
    folds = sorted(reference_rmse.index)
    d = (model_rmse.loc[folds] - reference_rmse.loc[folds]).to_numpy(dtype=np.float64)
    test = bayesian_correlated_ttest(d, rho_, rope * float(reference_rmse.loc[folds].mean()))
    return {"verdict": verdict(test, confidence), "p_better": test.p_better, "p_equivalent": test.p_equivalent,
            "p_worse": test.p_worse, "rope": test.rope, "difference": test.location, "resamples": test.n,
            "rho": test.rho}


def _held_out(model: np.ndarray, reference: np.ndarray, observed: np.ndarray, model_genes: pd.Series,
              reference_genes: pd.Series, seed: int) -> dict:
    boot = paired_bootstrap_rmse(observed, model, reference, seed)
    wins = per_gene_win_rate(model_genes, reference_genes)
    return {"difference": boot.difference, "ci95": list(boot.ci95), "win_rate": wins.rate, "wins": wins.wins,
            "genes": wins.genes}


def task_verdicts(config: Config, results: TaskResults, held_out: Callable[[str], HeldOut]) -> dict:
    """`{arch: entry}` for every architecture but the reference (none without a baseline).

    `held_out(arch)`: that architecture's aligned held-out matrices. An entry holds the
    `cv_verdict` keys, `against` (the reference), `held_out` (`difference`: held-out RMSE,
    model − reference; `ci95`: [lo, hi] of the paired bootstrap; `win_rate`, `wins`,
    `genes`: the per-gene win rate) and `versus_base` (the same keys with `against:
    "base"`, or None for a model without base columns).
    """
    reference_name = results.best_baseline
    if reference_name is None:
        return {}
    params = config.params.compare
    rho_ = rho(config, results)
    reference = results.archs[reference_name]
    ref_held = held_out(reference_name)
    out = {}
    for arch in ARCHS:
        if arch not in results.archs or arch == reference_name:
            continue
        model, model_held = results.archs[arch], held_out(arch)
        check_paired(model_held, ref_held)
        seed = stable_seed(results.dataset, results.task, arch, reference_name)
        entry = {"against": reference_name,
                 **cv_verdict(model.folds["rmse"], reference.folds["rmse"], rho_, params.rope, params.confidence),
                 "held_out": _held_out(model_held.predicted, ref_held.predicted, model_held.observed,
                                       model.per_gene["rmse"], reference.per_gene["rmse"], seed),
                 "versus_base": None}
        if arch in DEEP_ARCHS and model.has_base and model_held.base is not None:
            entry["versus_base"] = {
                "against": "base",
                **cv_verdict(model.folds["rmse"], model.folds[BASE + "rmse"], rho_, params.rope, params.confidence),
                "held_out": _held_out(model_held.predicted, model_held.base, model_held.observed,
                                      model.per_gene["rmse"], model.per_gene[BASE + "rmse"],
                                      stable_seed(results.dataset, results.task, arch, "base")),
            }
        out[arch] = entry
    return out


def versus_ridge(config: Config, results: TaskResults) -> dict[str, dict]:
    """Every other architecture's CV verdict against ridge (`cv_verdict` keys plus `against`);
    {} where ridge has no results."""
    if LEADERBOARD_REFERENCE not in results.archs:
        return {}
    params = config.params.compare
    ridge = results.archs[LEADERBOARD_REFERENCE].folds["rmse"]
    return {arch: {"against": LEADERBOARD_REFERENCE,
                   **cv_verdict(r.folds["rmse"], ridge, rho(config, results), params.rope, params.confidence)}
            for arch, r in results.archs.items() if arch != LEADERBOARD_REFERENCE}


def frequentist(config: Config, results: TaskResults) -> dict[str, dict]:
    """Every other architecture against the best baseline: corrected resampled t-test over the
    scored folds (raw p, and Holm-adjusted over this (dataset, task)'s architectures) and
    the held-out per-gene win rate. Shown beside the verdicts; it decides no wording."""
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


def probability(p: float) -> str:
    """A posterior probability to two decimals, rounded down: 0.949 (short of 0.95) must not
    read as 0.95, nor 0.996 as a certain 1.00."""
    return f"{math.floor(p * 100 + 1e-9) / 100:.2f}"


def decisive(entry: dict) -> Optional[float]:
    """The probability that decided a verdict (None for `undecided`)."""
    key = {"better": "p_better", "equivalent": "p_equivalent", "worse": "p_worse"}.get(entry["verdict"])
    return None if key is None else entry[key]


def short(entry: Optional[dict], against: bool = True) -> str:
    """A verdict in a few words, e.g. `better vs ridge (P=0.97)`, `undecided vs ridge (P(better)=0.41,
    P(equivalent)=0.52)`; without `against`, the same less `vs ...`."""
    if entry is None:
        return "–"
    name = entry["verdict"] + (f" vs {entry['against']}" if against else "")
    if entry["verdict"] == "undecided":
        if entry["p_better"] is None:
            return f"{name} (too few resamples)"
        return (f"{name} (P(better)={probability(entry['p_better'])}, "
                f"P(equivalent)={probability(entry['p_equivalent'])})")
    return f"{name} (P={probability(decisive(entry))})"
