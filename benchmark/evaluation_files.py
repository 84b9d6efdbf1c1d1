"""The evaluate stage's files: per-fold and held-out tables, importance tables and figures.

`write_tables` writes them into the evaluation's directory (listed in `benchmark.evaluation`);
the figures use matplotlib's Agg backend, so an evaluate without a display draws them too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import pandas as pd

from benchmark.importance import ATTENTION_FILE, IMPORTANCE_FILE, importance_tables

if TYPE_CHECKING:  # annotations only: benchmark.evaluation imports this module
    from benchmark.config import Config
    from benchmark.data.prepare import TaskData
    from benchmark.evaluation import Scores, Summary

BASE_PREFIX = "base_"  # a deep model's base alone (the ablation): base_<metric> columns and metrics
IMPORTANCE_PLOT = "gene_importance.png"
IMPORTANCE_TOP = 20  # tokens (genes or modules) in the importance plot


def write_tables(tmp: Path, config: Config, task: str, arch: str, data: TaskData, scores: Scores,
                 summary: Summary) -> None:
    """The evaluation's files into `tmp`, `run.json` aside: `scores` and `summary` are
    `benchmark.evaluation`'s `Scores` and `Summary` of `data` (a `TaskData`)."""
    pd.DataFrame(scores.fold_rows).to_csv(tmp / "folds.csv", index=False)
    pd.DataFrame([(fold, data.dev_samples[i]) for fold in data.scored_folds for i in data.folds[fold][1]],
                 columns=["fold", "sample"]).to_csv(tmp / "cv_samples.csv", index=False)
    (pd.concat(scores.fold_gene_frames, ignore_index=True)[["fold", "gene", "r2", "rmse"]]
     .to_csv(tmp / "fold_per_gene.csv", index=False))
    predictions_frame(data, scores.test_pred, scores.base_test_pred).to_csv(tmp / "test_predictions.csv", index=False)
    per_gene = per_gene_frame(data.target_genes, summary.test_full)
    if summary.base_full is not None:
        per_gene = per_gene.join(per_gene_frame(data.target_genes, summary.base_full).set_index("gene")
                                 .add_prefix(BASE_PREFIX), on="gene")
    per_gene.to_csv(tmp / "test_per_gene.csv", index=False)
    attention = scores.regressor.attention(data.X_test)
    pca = config.params.features.pca_components is not None  # importance: benchmark.importance
    tables = importance_tables(scores.regressor, data, attention, pca, seed=config.params.training.seed)
    for name, table in tables.items():
        table.to_csv(tmp / name, index=False)
    held_out_figures(tmp, f"{task} / {arch}", data.Y_test, scores.test_pred, summary.test, tables.get(ATTENTION_FILE))
    if IMPORTANCE_FILE in tables:
        importance_figure(tmp / IMPORTANCE_PLOT, f"{data.dataset} / {task} / {arch}", tables[IMPORTANCE_FILE])


def per_gene_frame(genes: list[str], metrics: dict) -> pd.DataFrame:
    """Per target gene its R^2 and RMSE (`metrics`: a `regression_metrics` dict)."""
    return pd.DataFrame({"gene": genes, "r2": metrics["per_gene"]["r2"], "rmse": metrics["per_gene"]["rmse"]})


def predictions_frame(data: TaskData, predicted: np.ndarray, base: Optional[np.ndarray] = None) -> pd.DataFrame:
    """Long table: one row per (held-out sample, target gene) with observed and predicted
    (and `base_predicted`, the model's base alone, where it has one)."""
    n, k = predicted.shape
    frame = pd.DataFrame({
        "sample": np.repeat(np.asarray(data.test_samples, dtype=object), k),
        "gene": np.tile(np.asarray(data.target_genes, dtype=object), n),
        "observed": np.asarray(data.Y_test, dtype=np.float64).reshape(-1),
        "predicted": predicted.reshape(-1),
    })
    if base is not None:
        frame[f"{BASE_PREFIX}predicted"] = base.reshape(-1)
    return frame


def format_score(value: Optional[float]) -> str:
    """A score as printed and plotted: four decimals, `-` when undefined."""
    return "-" if value is None else f"{value:.4f}"


def held_out_figures(directory, title: str, observed: np.ndarray, predicted: np.ndarray, test: dict,
                     attention: Optional[pd.DataFrame]) -> None:
    """`test_scatter.png` (held-out `observed` vs `predicted`, both (n_test, n_targets)) and, given
    the attention table, `attention.png` (mean weight per token). `title`: `<task> / <arch>`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    observed = np.asarray(observed, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(observed.ravel(), predicted.ravel(), s=6, alpha=0.5, linewidths=0)
    low, high = float(min(observed.min(), predicted.min())), float(max(observed.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
    ax.set_xlabel("observed expression (held-out)")
    ax.set_ylabel("predicted expression")
    ax.set_title(f"{title}: RMSE {format_score(test['rmse'])}, R$^2$ {format_score(test['r2'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(directory / "test_scatter.png", dpi=100)
    plt.close(fig)
    if attention is not None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.12 * len(attention)), 3.0))
        ax.bar(attention["token"], attention["mean_weight"], width=0.8)
        ax.set_xlabel("token (gene module, in sequence order)")
        ax.set_ylabel("mean attention (held-out)")
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(directory / "attention.png", dpi=100)
        plt.close(fig)


def importance_figure(path, title: str, importance: pd.DataFrame) -> None:
    """The most attended tokens, `IMPORTANCE_TOP` bars of mean attention ± its per-sample sd, each
    named by its genes (a gene, or a module's three most important genes and how many more),
    with the uniform level 1/steps dashed, so a flat map is seen to be flat."""
    from matplotlib.figure import Figure

    modules = (importance.sort_values(["weight", "gene"], ascending=[False, True], kind="stable")
               .groupby("module", sort=False)
               .agg(weight=("token_weight", "first"), std=("token_std", "first"), genes=("gene", list))
               .sort_values("weight", ascending=False, kind="stable"))
    steps = len(modules)
    modules = modules.head(IMPORTANCE_TOP)
    labels = [", ".join(genes[:3]) + (f" +{len(genes) - 3}" if len(genes) > 3 else "") + f" (token {module})"
              for module, genes in zip(modules.index, modules["genes"])]
    fig = Figure(figsize=(7.0, 0.24 * len(modules) + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(labels[::-1], modules["weight"].to_numpy()[::-1], xerr=modules["std"].to_numpy()[::-1], height=0.7)
    ax.axvline(1.0 / steps, color="black", linestyle="--", linewidth=0.9, label=f"uniform 1/{steps} = {1 / steps:.4f}")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_xlabel("attention weight (mean ± sd over held-out samples)")
    ax.set_title(f"{title}: top {len(modules)} of {steps} tokens\n(genes listed by attention x contribution)",
                 fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
