"""Importance scored against planted truth: `datasets.<d>.<task>.importance.<arch>` of the summary.

Inputs (files only, no TensorFlow): evaluate's `gene_importance.csv` (gene, weight:
attention x contribution, attention models) and `permutation_importance.csv` (gene,
importance) with `permutation_importance_targets.csv` (gene, target, importance), see
`benchmark.importance`; and, where the dataset's generator is known (`synthetic`),
`data/<dataset>/programmes.json`, the latent programmes each gene reads.

Truth: for a target gene, the feature genes that share a programme with it drive it
(positives); the others do not. Per architecture:

- `attention_auroc`, `permutation_auroc`, `rmse_increase_auroc`: `sklearn.metrics.roc_auc_score`
  of the importance (permutation: the prediction's change, `importance`; and the loss-based
  `rmse_increase` beside it, null where the table has no such column)
  against that truth, over the genes the importance covers; for several targets, the mean
  over targets of the per-target AUROC (permutation: each target's own columns;
  attention, shared by all targets: the same gene weights against each target's truth),
  over the targets whose truth has both classes. Pooling targets ("shares a programme
  with any target") would make every feature gene a positive on `synthetic`'s 50 targets.
  null without a truth, a table, or a target with both classes;
- `rank_correlation`: Spearman's rho between the attention and the permutation importance
  over the genes both cover (attention models; null for the others);
- `targets`: how many targets the AUROCs average over (0 without a truth).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from benchmark.config import Config
from benchmark.data.canonical import PROGRAMMES_FILE
from benchmark.errors import UserError
from benchmark.importance import IMPORTANCE_FILE, PERMUTATION_FILE, PERMUTATION_TARGETS_FILE
from benchmark.paths import evaluation_dir
from benchmark.report.results import TaskResults, read_table, relative

KEYS = ("attention_auroc", "permutation_auroc", "rmse_increase_auroc", "rank_correlation")


def programmes(config: Config) -> Optional[dict[str, set[int]]]:
    """gene id -> the programmes it reads, from `data/<dataset>/programmes.json`; None without one."""
    path = config.data_dir / PROGRAMMES_FILE
    if not path.exists():
        return None
    import json

    source = relative(config, path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{source}: not valid JSON") from None
    genes = content.get("genes") if isinstance(content, dict) else None
    if not isinstance(genes, dict):
        raise UserError(f"{source}: missing key 'genes' (gene id -> {{\"programmes\": [...]}})")
    out = {}
    for gene, entry in genes.items():
        read = entry.get("programmes") if isinstance(entry, dict) else None
        if not isinstance(read, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in read):
            raise UserError(f"{source}: genes.{gene}.programmes: expected a list of programme numbers")
        out[str(gene)] = set(read)
    return out


def truth(reads: dict[str, set[int]], target: str, genes: list[str], source: str = PROGRAMMES_FILE) -> np.ndarray:
    """1 for each of `genes` that shares a programme with `target`, else 0: `(len(genes),)` int."""
    missing = next((g for g in [target, *genes] if g not in reads), None)
    if missing is not None:
        raise UserError(f"{source}: genes: no entry for gene {missing!r}")
    return np.array([int(bool(reads[g] & reads[target])) for g in genes])


def auroc(scores: pd.Series, labels: np.ndarray) -> Optional[float]:
    """ROC AUC of `scores` (higher = more important) against 0/1 `labels`; None with one class."""
    from sklearn.metrics import roc_auc_score

    if len(set(labels.tolist())) < 2:
        return None
    return float(roc_auc_score(labels, scores.to_numpy(dtype=np.float64)))


def _mean(values: list[Optional[float]]) -> Optional[float]:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _read(config: Config, path: Path, columns: tuple[str, ...]) -> Optional[pd.DataFrame]:
    return read_table(config, path, columns) if path.exists() else None


def arch_importance(config: Config, task: str, arch: str, targets: list[str],
                    reads: Optional[dict[str, set[int]]]) -> dict:
    """One architecture's entry: `KEYS` and `targets` (see the module docstring)."""
    edir = evaluation_dir(config, task, arch)
    attention = _read(config, edir / IMPORTANCE_FILE, ("gene", "weight"))
    pooled = _read(config, edir / PERMUTATION_FILE, ("gene", "importance"))
    per_target = _read(config, edir / PERMUTATION_TARGETS_FILE, ("gene", "target", "importance"))
    entry: dict = {key: None for key in KEYS}
    entry["targets"] = 0
    if attention is not None and pooled is not None:
        both = attention.set_index("gene")["weight"].to_frame().join(pooled.set_index("gene")["importance"],
                                                                      how="inner")
        if len(both) > 2 and both["weight"].nunique() > 1 and both["importance"].nunique() > 1:
            from scipy.stats import spearmanr

            rho = float(spearmanr(both["weight"], both["importance"]).statistic)
            entry["rank_correlation"] = rho if math.isfinite(rho) else None
    if reads is None:
        return entry
    source = relative(config, config.data_dir / PROGRAMMES_FILE)
    attention_scores, permutation_scores, increase_scores = [], [], []
    for target in targets:
        if attention is not None:
            genes = list(attention["gene"])
            attention_scores.append(auroc(attention["weight"], truth(reads, target, genes, source)))
        own = None if per_target is None else per_target[per_target["target"] == target]
        if (own is None or own.empty) and len(targets) == 1:
            own = pooled  # one target: the pooled importance is its own
        if own is not None and not own.empty:
            genes = list(own["gene"])
            labels = truth(reads, target, genes, source)
            permutation_scores.append(auroc(own["importance"], labels))
            if "rmse_increase" in own.columns:
                if not pd.api.types.is_numeric_dtype(own["rmse_increase"]) or own["rmse_increase"].isna().any():
                    table = PERMUTATION_TARGETS_FILE if own is not pooled else PERMUTATION_FILE
                    raise UserError(f"{relative(config, edir / table)}: column 'rmse_increase': "
                                    "expected a number in every row")
                increase_scores.append(auroc(own["rmse_increase"], labels))
    entry["attention_auroc"] = _mean(attention_scores)
    entry["permutation_auroc"] = _mean(permutation_scores)
    entry["rmse_increase_auroc"] = _mean(increase_scores)
    entry["targets"] = max(sum(v is not None for v in attention_scores), sum(v is not None for v in permutation_scores))
    return entry


def task_importance(config: Config, results: TaskResults) -> dict[str, dict]:
    """`{arch: entry}` for every architecture with results on this (dataset, task)."""
    reads = programmes(config)
    return {arch: arch_importance(config, results.task, arch, results.genes, reads) for arch in results.archs}
