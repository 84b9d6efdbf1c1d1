"""The leaderboard: held-out scores scaled between a negative and a positive control.

OpenProblems' scheme (DESIGN.md, protocol point 6). Per dataset and task, a row's
held-out score `s` on each metric m of `METRICS` is scaled

    scaled_m = (s_m - negative_m) / (positive_m - negative_m)

with `negative` the held-out score of the `mean` architecture (the negative control,
scaled 0) and `positive` that of the positive control (scaled 1): the oracle where the
dataset keeps its noiseless truth (`data/<name>/truth.npy`, the bundled `synthetic`),
else a perfect prediction (`PERFECT`). The formula needs no sign flip: for an error
metric positive < negative, so a model that errs less than the mean still scales above
0. Pearson r is left out because it is undefined for the mean's constant prediction.
A row's scaled score on a dataset is the mean of its scaled metrics; per task the rows
are ordered by the mean of that score over datasets, with the mean rank (within each
dataset, 1 = best, ties averaged) beside it.

Beside the ranking, per task, a Friedman test over datasets x architectures and Nemenyi's
critical difference (Demšar 2006, JMLR 7:1), see `friedman`; each row also carries its
CV verdict against ridge per dataset (`with_verdicts`).

Controls take the same path as the models: the oracle is scored by the same
`regression_metrics` with the same development ranges, and both controls are rows of
the leaderboard, scaled by the same `scale`. Ranks are among the architectures only:
the oracle reads the truth, so it is a yardstick, not a competitor.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

import numpy as np
from scipy.stats import rankdata

from benchmark import ARCHS, DEEP_ARCHS
from benchmark.config import Config
from benchmark.data.canonical import TRUTH_FILE, load_dataset
from benchmark.errors import UserError
from benchmark.report.results import relative

if TYPE_CHECKING:
    from benchmark.data.prepare import TaskData

METRICS = ("rmse", "mae", "mse", "r2")
PERFECT = {"rmse": 0.0, "mae": 0.0, "mse": 0.0, "r2": 1.0}
NEGATIVE_CONTROL = "mean"
ORACLE = "oracle"
PERFECT_NAME = "perfect prediction"
ROLES = {"negative": "negative control", "positive": "positive control"}
_TRUTH_ROWS = 4096  # rows of the memory-mapped truth read at a time
# Friedman's chi-square approximation and Nemenyi's test need enough blocks: Demšar (2006)
# asks for N > 10 datasets for the approximation and exact tables below; with N < 5 the
# test has almost no power and the ranks of a few datasets say little. Our rule: a claim
# across datasets needs at least 5 datasets on which every compared architecture is scored.
MIN_DATASETS = 5
ALPHA = 0.05


def scale(score: Optional[float], negative: Optional[float], positive: Optional[float]) -> Optional[float]:
    """(score - negative) / (positive - negative): the negative control maps to 0, the positive to 1.

    None when any input is None or the controls coincide (the scale is undefined).
    """
    if score is None or negative is None or positive is None or positive == negative:
        return None
    # + 0.0 turns the -0.0 that 0 / (a negative span) gives into 0.0, so JSON reads 0.0.
    return (score - negative) / (positive - negative) + 0.0


def scaled_metrics(test: Mapping, negative: Mapping, positive: Mapping) -> dict[str, Optional[float]]:
    """`scale` of every metric of `METRICS`, plus `score`: their mean (None where none is defined).

    `test`, `negative`, `positive`: held-out metric values by name (expression units).
    """
    scaled = {m: scale(test.get(m), negative.get(m), positive.get(m)) for m in METRICS}
    defined = [v for v in scaled.values() if v is not None]
    scaled["score"] = float(np.mean(defined)) if defined else None
    return scaled


def rank(scores: Mapping[str, Optional[float]]) -> dict[str, float]:
    """Rank of each defined score, 1 = highest; tied scores share their mean rank."""
    names = [name for name, value in scores.items() if value is not None]
    ranks = rankdata([-scores[name] for name in names], method="average")
    return {name: float(r) for name, r in zip(names, ranks)}


def has_truth(config: Config) -> bool:
    """Whether `config.dataset` keeps its noiseless truth (a positive control dataset)."""
    return (config.data_dir / TRUTH_FILE).exists()


def oracle_predictions(config: Config, data: TaskData) -> np.ndarray:
    """The oracle's held-out prediction: the truth of the target genes on the test samples.

    Returns (n_test, n_targets) float64 after the dataset's transform, in the units of
    `data.Y_test`. `data`: the task loaded with `held_out=True` from a config bound to a
    dataset with a truth. The truth (n_samples, n_genes, float32, value units before the
    transform) is memory-mapped and read a block of rows at a time.
    """
    from benchmark.data.validation import apply_transform

    ds = load_dataset(config.data_dir)
    if ds.truth is None:
        raise UserError(f"{relative(config, config.data_dir)}: no {TRUTH_FILE}, so there is no oracle")
    row = {s: i for i, s in enumerate(ds.samples)}
    col = {g: i for i, g in enumerate(ds.genes)}
    rows = np.asarray([row[s] for s in data.test_samples], dtype=np.int64)
    cols = np.asarray([col[g] for g in data.target_genes], dtype=np.int64)
    blocks = [np.asarray(ds.truth[rows[i:i + _TRUTH_ROWS]])[:, cols] for i in range(0, len(rows), _TRUTH_ROWS)]
    values = np.concatenate(blocks) if blocks else np.empty((0, len(cols)), dtype=np.float32)
    return apply_transform(values, data.transform).astype(np.float64)


def oracle_metrics(config: Config, data: TaskData) -> dict:
    """The oracle's held-out metrics (`regression_metrics`, development ranges), as evaluate scores a model."""
    from benchmark.metrics import regression_metrics

    predicted = oracle_predictions(config, data)
    metrics = regression_metrics(data.Y_test, predicted, data.Y_dev.min(axis=0), data.Y_dev.max(axis=0))
    metrics.pop("per_gene")
    return metrics


def role(row: str) -> str:
    if row == ORACLE:
        return ROLES["positive"]
    if row == NEGATIVE_CONTROL:
        return ROLES["negative"]
    return "deep" if row in DEEP_ARCHS else "baseline"


def dataset_scores(tests: Mapping[str, Mapping], positive: Mapping, oracle: bool) -> dict[str, dict]:
    """Scaled metrics, score and rank of every row on one (dataset, task).

    `tests`: held-out metrics by architecture; it must hold the negative control `mean`.
    `positive`: the positive control's held-out metrics; with `oracle` True they are the
    oracle's and the oracle becomes a row too. Returns `{row: {metric: scaled, "score",
    "rank"}}`, rows in `ARCHS` order then the oracle; `rank` is None for the oracle.
    """
    negative = tests[NEGATIVE_CONTROL]
    rows = {arch: dict(tests[arch]) for arch in ARCHS if arch in tests}
    if oracle:
        rows[ORACLE] = dict(positive)
    scored = {row: scaled_metrics(test, negative, positive) for row, test in rows.items()}
    ranks = rank({row: s["score"] for row, s in scored.items() if row != ORACLE})
    for row, entry in scored.items():
        entry["rank"] = ranks.get(row)
    return scored


def table(scores: Mapping[str, Mapping[str, Mapping]]) -> list[dict]:
    """The leaderboard of one task from each dataset's `dataset_scores` (datasets in report order).

    One entry per row that has a score somewhere: `arch`, `role`, `mean_scaled_score`
    (mean over the datasets where it has a score), `mean_rank`, `datasets` (how many
    datasets it was scored on), `scaled_scores` and `ranks` by dataset. Ordered by mean
    scaled score (highest first), then mean rank, then `ARCHS` order.
    """
    order = list(ARCHS) + [ORACLE]
    entries = []
    for row in order:
        per = {d: s[row] for d, s in scores.items() if row in s and s[row]["score"] is not None}
        if not per:
            continue
        ranks = {d: e["rank"] for d, e in per.items() if e["rank"] is not None}
        entries.append({
            "arch": row,
            "role": role(row),
            "mean_scaled_score": float(np.mean([e["score"] for e in per.values()])),
            "mean_rank": float(np.mean(list(ranks.values()))) if ranks else None,
            "datasets": len(per),
            "scaled_scores": {d: e["score"] for d, e in per.items()},
            "ranks": ranks,
        })
    entries.sort(key=lambda e: (-e["mean_scaled_score"],
                                math.inf if e["mean_rank"] is None else e["mean_rank"], order.index(e["arch"])))
    return entries


def nemenyi_critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of mean ranks: q_alpha · sqrt(k (k + 1) / (6 N)) for k
    architectures over N datasets, q_alpha the studentized range quantile (infinite df) / sqrt 2
    (Demšar 2006, table 5: 2.343 for k = 3, 3.031 for k = 8 at alpha 0.05)."""
    from scipy.stats import studentized_range

    q = float(studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    return q * math.sqrt(k * (k + 1) / (6 * n))


def friedman(scores: Mapping[str, Mapping[str, Mapping]]) -> dict:
    """Friedman's test of one task over datasets (blocks) x architectures (treatments).

    `scores`: dataset -> `dataset_scores` (scaled scores). The test needs a complete
    design: the architectures scored on every dataset of `scores` are compared (the others
    are listed in `left_out`; the oracle is a yardstick and never compared). Returns
    `datasets` (N), `architectures` (compared, in `ARCHS` order), `left_out`, `mean_ranks`
    (within each dataset, 1 = highest scaled score, ties averaged), `min_datasets`, `alpha`,
    `claim` (whether N >= `MIN_DATASETS` and at least 3 architectures: the rule for a
    claim across datasets), and wherever the test can run (N >= 2 datasets and >= 3
    architectures) `statistic` (chi-square), `p_value` and `critical_difference` (Nemenyi,
    at `alpha`), shown beside the leaderboard even where `claim` is False (the report then
    says that they support no claim); else those three are None.
    """
    from scipy.stats import friedmanchisquare

    datasets = list(scores)
    present = [a for a in ARCHS if datasets and all(scores[d].get(a, {}).get("score") is not None for d in datasets)]
    left_out = [a for a in ARCHS if a not in present and any(a in scores[d] for d in datasets)]
    matrix = np.array([[scores[d][a]["score"] for a in present] for d in datasets], dtype=np.float64)
    ranks = np.array([rankdata(-row, method="average") for row in matrix]) if matrix.size else matrix
    result = {"datasets": len(datasets), "architectures": present, "left_out": left_out,
              "mean_ranks": {a: float(r) for a, r in zip(present, ranks.mean(axis=0))} if matrix.size else {},
              "min_datasets": MIN_DATASETS, "alpha": ALPHA,
              "claim": len(datasets) >= MIN_DATASETS and len(present) >= 3,
              "statistic": None, "p_value": None, "critical_difference": None}
    if len(datasets) >= 2 and len(present) >= 3:  # scipy: at least 3 treatments
        if bool(np.all(ranks == ranks[0, 0])):  # every dataset ties every architecture: no evidence, 0/0 in scipy
            result["statistic"], result["p_value"] = 0.0, 1.0
        else:
            test = friedmanchisquare(*matrix.T)
            result["statistic"], result["p_value"] = float(test.statistic), float(test.pvalue)
        result["critical_difference"] = nemenyi_critical_difference(len(present), len(datasets))
    return result


def with_verdicts(entries: list[dict], versus_ridge: Mapping[str, Mapping[str, dict]]) -> list[dict]:
    """`entries` with `verdicts_vs_ridge`: dataset -> the row's CV verdict against ridge there
    (`verdict`, `p_better`, `p_equivalent`, `p_worse`), where it has one; ridge itself (the
    reference) and the oracle get none. `versus_ridge`: dataset -> arch -> verdict entry."""
    keys = ("against", "verdict", "p_better", "p_equivalent", "p_worse")
    for entry in entries:
        entry["verdicts_vs_ridge"] = {d: {k: v[entry["arch"]][k] for k in keys}
                                      for d, v in versus_ridge.items() if entry["arch"] in v}
    return entries


def figure_stem(task: str) -> str:
    """The heatmap's name without suffix: `reports/figures/<stem>.png`, its data `reports/plots/<stem>.csv`."""
    return f"leaderboard_{task}"


def best(entries: Sequence[dict]) -> Optional[str]:
    """The leaderboard's top architecture (the oracle is not one)."""
    return next((e["arch"] for e in entries if e["arch"] != ORACLE), None)
