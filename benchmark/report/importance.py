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
- `token_ceiling_auroc` (attention models with a gene table): the highest AUROC any map
  constant within each of the model's tokens reaches (`token_ceiling`), i.e. a perfect
  attention when a token's genes share its weight; attention x contribution can pass it only
  through the genes' shares within their tokens. With modules mixing driving and other genes
  it is well below 1 (0.795 for the default run's attention_lstm on `synthetic` single, 8
  tokens);
- `rank_correlation`: Spearman's rho between the attention and the permutation importance
  over the genes both cover (attention models; null for the others);
- `targets`: how many targets the AUROCs average over (0 without a truth).

Per (dataset, task), `importance_ceiling` (`near_oracle_importance`, the bundled positive
control only, else null): the permutation AUROC of a predictor that knows the generator's
formula and decodes the programmes from the features, scored the same way. About 0.9 on
`synthetic` (0.908 single, 0.922 top 50 in the default run): the truth counts every gene
that shares a programme with the target, and the best decoder also reads genes that share
none, to cancel the other programmes a readout mixes in. A model's permutation AUROC is
read against it, not against 1.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import pandas as pd

from benchmark.config import Config
from benchmark.data.canonical import PROGRAMMES_FILE
from benchmark.errors import UserError
from benchmark.importance import IMPORTANCE_FILE, PERMUTATION_FILE, PERMUTATION_TARGETS_FILE
from benchmark.paths import evaluation_dir
from benchmark.report.results import TaskResults, read_table, relative

if TYPE_CHECKING:
    from benchmark.data.prepare import TaskData

KEYS = ("attention_auroc", "token_ceiling_auroc", "permutation_auroc", "rmse_increase_auroc", "rank_correlation")


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


def token_ceiling(tokens: pd.Series, labels: np.ndarray) -> Optional[float]:
    """The highest AUROC of any importance constant within each token: what the attention
    reaches, against `labels`, if it ranks the tokens perfectly and gives every gene its
    token's weight. `tokens`: the token (module) of each gene, aligned with `labels`.

    Scoring each gene by the share of positives in its token is such a map: ordering the
    tokens by that share maximises the pairs ranked right (an exchange of two adjacent
    tokens out of that order loses pairs), and a token's genes tie (half a pair each).
    Gene-level importance (attention x contribution) can pass it only through the genes'
    shares within their tokens."""
    share = pd.Series(np.asarray(labels, dtype=np.float64)).groupby(np.asarray(tokens)).transform("mean")
    return auroc(share, labels)


def _mean(values: list[Optional[float]]) -> Optional[float]:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _read(config: Config, path: Path, columns: tuple[str, ...]) -> Optional[pd.DataFrame]:
    return read_table(config, path, columns) if path.exists() else None


def arch_importance(config: Config, task: str, arch: str, targets: list[str],
                    reads: Optional[dict[str, set[int]]]) -> dict:
    """One architecture's entry: `KEYS` and `targets` (see the module docstring)."""
    edir = evaluation_dir(config, task, arch)
    attention = _read(config, edir / IMPORTANCE_FILE, ("gene", "module", "weight"))
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
    attention_scores, ceiling_scores, permutation_scores, increase_scores = [], [], [], []
    for target in targets:
        if attention is not None:
            labels = truth(reads, target, list(attention["gene"]), source)
            attention_scores.append(auroc(attention["weight"], labels))
            ceiling_scores.append(token_ceiling(attention["module"], labels))
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
    entry["token_ceiling_auroc"] = _mean(ceiling_scores)
    entry["permutation_auroc"] = _mean(permutation_scores)
    entry["rmse_increase_auroc"] = _mean(increase_scores)
    entry["targets"] = max(sum(v is not None for v in attention_scores), sum(v is not None for v in permutation_scores))
    return entry


def task_importance(config: Config, results: TaskResults) -> dict[str, dict]:
    """`{arch: entry}` for every architecture with results on this (dataset, task)."""
    reads = programmes(config)
    return {arch: arch_importance(config, results.task, arch, results.genes, reads) for arch in results.archs}


def near_oracle_importance(config: Config, data: "TaskData") -> Optional[dict]:
    """The permutation importance a model that knows the generator reaches: `importance_ceiling`.

    Only for the bundled positive control (`benchmark.data.positive_control`), regenerated
    from its seed: where `data`'s development and held-out values, feature and target genes
    are its own, and every target is one of its nonlinear genes (the formulas it knows). A
    near-oracle (`positive_control.near_oracle`: the programmes decoded by ridge from the
    development rows' features, then each target's own formula) is scored as evaluate
    scores a model: `benchmark.importance.permutation_importance` on the same held-out rows,
    budget and seed (`training.seed`), against the same truth. Returns `{"permutation_auroc":
    mean per-target AUROC, "rmse": its held-out RMSE over every target, "targets": n}`, or
    None for any other dataset (a `synthetic` of one's own included).
    """
    from benchmark.data.positive_control import near_oracle, positive_control_latents
    from benchmark.importance import permutation_importance
    from benchmark.models.blockwise_fit import is_row_view

    reads = programmes(config)
    if reads is None or is_row_view(data.X_dev) or is_row_view(data.X_test) or data.X_test is None:
        return None
    control, latents = positive_control_latents()
    samples = {s: i for i, s in enumerate(control.samples)}
    genes = {g: i for i, g in enumerate(control.genes)}
    ids = [*data.dev_samples, *data.test_samples]
    if (any(s not in samples for s in ids) or any(g not in genes for g in [*data.feature_genes, *data.target_genes])
            or any(t not in latents["nonlinear"] for t in data.target_genes)):
        return None
    dev, test = [samples[s] for s in data.dev_samples], [samples[s] for s in data.test_samples]
    features, targets = [genes[g] for g in data.feature_genes], [genes[g] for g in data.target_genes]
    X = control.X
    same = all(np.array_equal(X[np.ix_(rows, columns)], np.asarray(values, dtype=np.float32))
               for rows, columns, values in ((dev, features, data.X_dev), (dev, targets, data.Y_dev),
                                             (test, features, data.X_test), (test, targets, data.Y_test)))
    if not same:  # other values under the control's ids (another transform, another seed)
        return None
    predict, _ = near_oracle(X[np.ix_(dev, features)], latents["Z"][dev],
                             [latents["nonlinear"][t] for t in data.target_genes])
    X_test, Y_test = np.asarray(data.X_test, dtype=np.float32), np.asarray(data.Y_test, dtype=np.float64)
    rmse = float(np.sqrt(np.mean(np.square(predict(X_test) - Y_test.reshape(len(X_test), -1)))))
    pooled, per_target = permutation_importance(predict, X_test, Y_test, list(data.feature_genes),
                                                list(data.target_genes), seed=config.params.training.seed)
    scores = []
    for target in data.target_genes:
        own = pooled if len(data.target_genes) == 1 else per_target[per_target["target"] == target]
        scores.append(auroc(own["importance"], truth(reads, target, list(own["gene"]))))
    return {"permutation_auroc": _mean(scores), "rmse": rmse, "targets": sum(v is not None for v in scores)}
