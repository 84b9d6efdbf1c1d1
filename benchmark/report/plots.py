"""Comparison figures (PNG, matplotlib's Agg canvas) and the tables behind them.

Per (dataset, task): CV RMSE bars, predicted vs observed, per-gene R², attention; per
task: the leaderboard heatmap (architecture x dataset, scaled score).

Each function returns the figure and the data it draws, so the same numbers can be
written as CSV for `dvc plots show`. Figures use `matplotlib.figure.Figure` directly
(no pyplot state, no GUI backend); PNGs are saved without the software-version metadata
so that the bytes depend only on the data and the matplotlib build.
"""

from __future__ import annotations

import io
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from benchmark import ARCHS, DEEP_ARCHS
from benchmark.report.results import ArchResult, TaskResults

TOP_TOKENS = 20
_DEEP_COLOUR, _BASELINE_COLOUR = "#3b6ea5", "#9a9a9a"


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _colours(archs: list[str]) -> list[str]:
    return [_DEEP_COLOUR if a in DEEP_ARCHS else _BASELINE_COLOUR for a in archs]


def cv_rmse(results: TaskResults) -> tuple[Figure, pd.DataFrame]:
    """Bars of CV RMSE mean with ± one standard deviation across folds, per architecture."""
    rows = []
    for arch in ARCHS:
        if arch in results.archs:
            mean, std = results.archs[arch].cv("rmse")
            rows.append({"arch": arch, "rmse_mean": mean, "rmse_std": std})
    data = pd.DataFrame(rows, columns=["arch", "rmse_mean", "rmse_std"])
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.bar(data["arch"], data["rmse_mean"], yerr=data["rmse_std"].fillna(0.0), capsize=4,
           color=_colours(list(data["arch"])))
    ax.set_ylabel(f"RMSE (CV mean ± std over {len(results.folds)} scored folds)")
    ax.set_title(f"{results.dataset} / {results.task}: cross-validated RMSE (blue: deep, grey: baselines)")
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return fig, data


def predicted_vs_observed(data: pd.DataFrame, title: str, arch: str, rmse: Optional[float] = None) -> Figure:
    """Held-out predictions against observed values, every (sample, target gene) one point.

    `data`: columns sample, gene, observed, predicted (expression units of the task);
    `title`: what the figure shows, e.g. `<dataset> / <task>`.
    """
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.scatter(data["observed"], data["predicted"], s=6, alpha=0.4, color=_DEEP_COLOUR, linewidths=0)
    both = np.concatenate([data["observed"].to_numpy(), data["predicted"].to_numpy()])
    low, high = float(np.min(both)), float(np.max(both))
    ax.plot([low, high], [low, high], color="black", linewidth=0.8, label="y = x")
    ax.set_xlabel("observed expression")
    ax.set_ylabel("predicted expression")
    genes = data["gene"].nunique()
    score = f", RMSE {rmse:.4f}" if rmse is not None else ""
    ax.set_title(f"{title}: {arch} on the held-out split\n"
                 f"({data['sample'].nunique()} samples x {genes} gene{'s' * (genes != 1)}{score})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def per_gene_r2(results: TaskResults) -> tuple[Figure, pd.DataFrame]:
    """Distribution over target genes of the held-out R^2, one box per architecture."""
    rows = []
    for arch in ARCHS:
        if arch in results.archs:
            r2 = results.archs[arch].per_gene["r2"]
            rows += [{"arch": arch, "gene": gene, "r2": float(v)} for gene, v in r2.items() if pd.notna(v)]
    data = pd.DataFrame(rows, columns=["arch", "gene", "r2"])
    archs = [a for a in ARCHS if a in set(data["arch"])]
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    values = [data.loc[data["arch"] == a, "r2"].to_numpy() for a in archs]
    if archs:
        ax.boxplot(values, tick_labels=archs, showfliers=False)
        for i, v in enumerate(values, start=1):
            # Deterministic horizontal spread so single-gene tasks still show their point.
            offsets = np.linspace(-0.15, 0.15, len(v)) if len(v) > 1 else np.zeros(1)
            ax.scatter(i + offsets, v, s=8, alpha=0.5, color=_colours([archs[i - 1]])[0], linewidths=0)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylabel("held-out R² per target gene")
    ax.set_title(f"{results.dataset} / {results.task}: per-gene R² ({len(results.genes)} target gene{'s' * (len(results.genes) != 1)})")
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return fig, data


def attention_table(result: ArchResult, top: int = TOP_TOKENS) -> tuple[pd.DataFrame, bool]:
    """The `top` genes (or tokens) by mean attention weight over held-out samples, and whether they are genes.

    Returns columns rank, label, weight, std (per-sample sd), uniform (the level of a flat
    map: 1/genes or 1/steps) and, for genes, token_min, token_max, token_uniform.
    """
    table, by_gene = result.attention, result.attention_by_gene
    table = table.sort_values(["weight", "label"], ascending=[False, True], kind="stable").head(top)
    table = table.reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table, by_gene


def attention_top(results: TaskResults, top: int = TOP_TOKENS) -> tuple[Optional[Figure], pd.DataFrame]:
    """Horizontal bars of the most attended genes (attention x contribution; tokens where genes are
    not known) per attention model, ± the per-sample sd, with the uniform level dashed, so a
    flat map is seen to be flat; for genes, the title gives the tokens' range against 1/steps."""
    tables = {}
    for arch in ("attention_lstm", "attention_gru"):
        result = results.archs.get(arch)
        if result is not None and result.attention is not None:
            tables[arch] = attention_table(result, top)
    columns = ["arch", "kind", "rank", "label", "weight", "std", "uniform"]
    rows = [dict(arch=arch, kind="gene" if by_gene else "token", **row)
            for arch, (table, by_gene) in tables.items() for row in table.to_dict("records")]
    data = pd.DataFrame(rows)
    data = data.reindex(columns=columns + [c for c in data.columns if c not in columns])
    if not tables:
        return None, data
    fig = Figure(figsize=(6 * len(tables), 0.25 * top + 1.8))
    for i, (arch, (table, by_gene)) in enumerate(tables.items(), start=1):
        ax = fig.add_subplot(1, len(tables), i)
        spread = table["std"].fillna(0.0).to_numpy()[::-1]
        ax.barh(table["label"][::-1], table["weight"][::-1], xerr=spread, color=_DEEP_COLOUR, capsize=2)
        uniform = float(table["uniform"].iloc[0])
        ax.axvline(uniform, color="black", linestyle="--", linewidth=0.9,
                   label=f"uniform 1/{round(1 / uniform)} = {uniform:.4g}")
        ax.legend(loc="lower right", fontsize=7)
        what = "attention x contribution per gene" if by_gene else "attention per token"
        ax.set_xlabel(f"{what}, mean ± sd over held-out samples")
        title = f"{results.dataset} / {results.task}: {arch}, top {len(table)} {'genes' if by_gene else 'tokens'}"
        if by_gene and "token_uniform" in table.columns and pd.notna(table["token_uniform"].iloc[0]):
            title += (f"\ntokens' mean attention {table['token_min'].iloc[0]:.4f}–{table['token_max'].iloc[0]:.4f}, "
                      f"uniform 1/{round(1 / table['token_uniform'].iloc[0])} = {table['token_uniform'].iloc[0]:.4f}")
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig, data


def leaderboard_heatmap(task: str, entries: list[dict], datasets: list[str]) -> tuple[Figure, pd.DataFrame]:
    """Scaled held-out score of every leaderboard row (y, in leaderboard order) on every dataset (x).

    `entries`: `leaderboard.table` rows; `datasets`: the columns, in report order. The data
    is long: arch, role, dataset, scaled_score, rank (None where the row has no score).
    Colours run from the negative control (0) to the positive control (1); values outside
    take the end colours, and every cell is annotated with its value.
    """
    rows = [{"arch": e["arch"], "role": e["role"], "dataset": d, "scaled_score": e["scaled_scores"].get(d),
             "rank": e["ranks"].get(d)} for e in entries for d in datasets]
    data = pd.DataFrame(rows, columns=["arch", "role", "dataset", "scaled_score", "rank"])
    labels = [e["arch"] + (f" ({e['role']})" if "control" in e["role"] else "") for e in entries]
    grid = np.array([[np.nan if e["scaled_scores"].get(d) is None else e["scaled_scores"][d] for d in datasets]
                     for e in entries], dtype=np.float64).reshape(len(entries), len(datasets))
    fig = Figure(figsize=(4.5 + 1.2 * max(len(datasets), 1), 1.6 + 0.45 * max(len(entries), 1)))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        text = "–" if np.isnan(value) else f"{value:.3f}"
        # Light text on the dark low end of viridis, dark text on its bright high end.
        colour = "black" if not np.isnan(value) and value > 0.6 else "white"
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if np.isnan(value) else colour)
    ax.set_xticks(range(len(datasets)), datasets, rotation=30, ha="right")
    ax.set_yticks(range(len(entries)), labels)
    ax.set_title(f"{task}: held-out score scaled between the controls")
    ax.set_xlabel("dataset (0 = mean, 1 = oracle or perfect prediction)")
    fig.colorbar(image, ax=ax, label="scaled score")
    fig.tight_layout()
    return fig, data


def cliques(mean_ranks: dict[str, float], critical_difference: float) -> list[list[str]]:
    """The maximal groups of architectures whose mean ranks lie within `critical_difference`
    of each other (Nemenyi: not told apart), each in rank order; singletons left out."""
    order = sorted(mean_ranks, key=lambda a: (mean_ranks[a], a))
    groups: list[list[str]] = []
    for i, first in enumerate(order):
        group = [a for a in order[i:] if mean_ranks[a] - mean_ranks[first] < critical_difference]
        if len(group) > 1 and not any(set(group) <= set(g) for g in groups):
            groups.append(group)
    return groups


def critical_difference(task: str, result: dict) -> tuple[Figure, pd.DataFrame]:
    """Demšar's critical-difference diagram of one task: mean ranks on an axis (1 = best, left),
    Nemenyi's CD as a bar, thick lines joining architectures it cannot tell apart.

    `result`: `leaderboard.friedman` with `claim` true. The data: arch, mean_rank, and the
    clique numbers (0, 1, ...) each architecture belongs to, `;`-joined.
    """
    ranks, cd = result["mean_ranks"], result["critical_difference"]
    order = sorted(ranks, key=lambda a: (ranks[a], a))
    k = len(order)
    groups = cliques(ranks, cd)
    data = pd.DataFrame({"arch": order, "mean_rank": [ranks[a] for a in order],
                         "cliques": [";".join(str(i) for i, g in enumerate(groups) if a in g) for a in order]})
    half = (k + 1) // 2
    fig = Figure(figsize=(8, 1.6 + 0.3 * (half + len(groups))))
    ax = fig.add_subplot()
    ax.set_xlim(-1.5, k + 2.5)  # room for the labels beside the axis
    height = half + len(groups) + 2
    ax.set_ylim(-height, 2.2)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black")
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.15, color="black")
        ax.text(r, 0.3, str(r), ha="center", va="bottom", fontsize=9)
    ax.hlines(1.5, 1, 1 + cd, color="black", linewidth=2)
    ax.text(1 + cd / 2, 1.65, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    for i, arch in enumerate(order):
        left = i < half
        y = -(len(groups) + 1 + (i if left else k - 1 - i))
        x_end = 0.6 if left else k + 0.4
        ax.plot([ranks[arch], ranks[arch], x_end], [0, y, y], color="#444444", linewidth=0.8)
        ax.text(x_end, y, f"{arch} ({ranks[arch]:.2f})", ha="right" if left else "left", va="center", fontsize=9)
    for j, group in enumerate(groups):
        y = -(j + 0.6)
        ax.hlines(y, ranks[group[0]] - 0.05, ranks[group[-1]] + 0.05, color="#3b6ea5", linewidth=3)
    ax.set_title(f"task {task}: mean rank over {result['datasets']} datasets (Friedman p = {result['p_value']:.3g}; "
                 f"Nemenyi at α = {result['alpha']})", fontsize=10)
    fig.tight_layout()
    return fig, data
