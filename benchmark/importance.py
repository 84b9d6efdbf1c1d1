"""Which feature genes a fitted model uses: attention mapped to genes, and permutation importance.

Two importances, both on the held-out split, written by evaluate beside its other
artifacts (`artifacts/evaluation/<dataset>/<task>/<arch>/`):

**Attention x contribution** (attention models; `attention_tables`). The sequence models
sum their genes into tokens (`benchmark.models.gene_tokens.GeneTokens`): token t of sample
s is `sum_{g in t} (x_sg * E_g + B_g) / sqrt(m_t)`, x the standardised expression, E_g the
gene's value embedding and B_g its identity embedding (constant over samples, so it
carries nothing about the sample and is left out). A gene's contribution to its token is
its share of the token's sample-dependent input,

    share_sg = |x_sg| * ||E_g||_2 / sum_{h in t(g)} |x_sh| * ||E_h||_2      (0 for an all-zero token)

and its importance in sample s is `a_{s, t(g)} * share_sg`, a the attention weights
(rows sum to 1, so a sample's gene importances sum to 1 as well). `gene_importance.csv`
reports the mean (`weight`) and standard deviation (`std`, population sd over held-out
samples) of that product per gene, with the token's own mean attention (`token_weight`,
`token_std`) and the gene's mean `share`. A uniform map gives every token 1/steps and,
with equal shares, every gene 1/genes. An ensemble averages the members' products, each
with its own embedding and attention. With PCA on, tokens hold components, not genes:
only the per-token `attention.csv` is written.

**Permutation importance** (every architecture; `permutation_importance`). For each
feature gene, its column is permuted across the held-out samples (one permutation of the
rows per repeat, seeded and shared by all genes, so genes are compared on the same
shuffle). Its importance is how far that moves the prediction: the root mean squared
change, sqrt(mean_s (f(x_s with gene g permuted) - f(x_s))^2), in target expression
units (pooled over every held-out sample and target; and per target). Its square is,
up to a factor 2, Jansen's estimator of the gene's total-effect sensitivity index (Sobol
indices: Saltelli et al. 2010, Comput. Phys. Commun. 181:259), the share of the
prediction's variance the gene takes part in. The increase of the held-out RMSE under
the same permutation (`rmse_increase`, the loss-based statistic of Breiman 2001 and
scikit-learn) is kept beside it, but genes are not ranked by it: it is the mean of
that squared change plus twice the product of the change with the residual, a term of
mean zero whose noise swamps a gene's own small effect where many genes carry the same
signal. On `synthetic` single, a near-oracle predictor (the generator's own function of
programmes decoded from the features) ranks the planted genes at AUROC 0.89-0.91 by the
squared change with this budget's 100 held-out samples, and at 0.46-0.65 by the RMSE
increase (0.66-0.80 with all 400 samples and 3 repeats; four splits,
scripts/importance_ceiling.py, results/importance.md).
The cost is the permuted rows the model predicts,
genes x samples per repeat, so it is bounded (`budget`): every gene up to `MAX_GENES`,
held-out samples (a seeded subset) until `MAX_ROWS` rows, but at least `MIN_SAMPLES`;
past that the most variable genes only (on pbmc68k's multi task, 140 held-out x 715
genes: 100 samples x the 500 most variable genes). `REPEATS` repeats; the permuted copies
go to the model `BATCH_ROWS` rows at a time. Measured cost: results/importance.md.
`permutation_importance.csv`: gene, importance, rmse_increase, rank (1 = the largest
importance); `permutation_importance_targets.csv`: gene, target, importance,
rmse_increase (long, one row per pair).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import pandas as pd

from benchmark.models.blockwise_fit import fit_scaler, is_row_view

ATTENTION_FILE = "attention.csv"
IMPORTANCE_FILE = "gene_importance.csv"
PERMUTATION_FILE = "permutation_importance.csv"
PERMUTATION_TARGETS_FILE = "permutation_importance_targets.csv"
MAX_GENES = 1000
MAX_ROWS = 50_000   # permuted rows predicted per repeat: genes x samples
MIN_SAMPLES = 100   # held-out rows kept before genes are cut to fit MAX_ROWS
REPEATS = 1
BATCH_ROWS = 16384
# ... and at most this many bytes of their float32 features: 16,384 rows up to 1,024 genes
# (every bundled dataset), fewer beyond. 16,384 rows of 3,950 genes took 1.5 GB in
# predict's float64 copies and broke a 2 GiB limit at 40,000 x 4,000 (results/scale.md).
BATCH_BYTES = 64 << 20
PREDICT_BATCH = 4096  # rows per Keras prediction step of a deep model
# ... but fewer for a sequence model, whose gene-token layer holds (rows, genes, token_units)
# float32 activations: at most this many bytes each. At 3,950 genes and 16 units, 4,096 rows
# made 1.0 GB arrays, and permutation importance took the attention_lstm's RSS from 2.8 to
# 4.5 GB at 40,000 x 4,000 (results/scale.md). The bundled datasets get 524-2,097 rows a
# step, with predictions the same to the bit as at 4,096 (tests/test_importance.py; the
# default run's zeisel single and cbmc multi attention_lstm tables, rerun: the same bytes).
GENE_TOKEN_BYTES = 64 << 20
SEED = 0
# The gene-level attention table averages over the held-out rows, or a seeded subset of them
# where its float64 (rows, genes) arrays would exceed this: every held-out row of the
# bundled datasets (under 1,800 rows, at most 1,000 genes), 2,124 rows at 3,950 genes, where the whole
# 20,000-row held-out split of a 100,000-sample matrix would take 632 MB per array.
GENE_ATTENTION_BYTES = 64 << 20


# -- attention x contribution ----------------------------------------------------------


def contribution_shares(Xs: np.ndarray, norms: np.ndarray, assignment: np.ndarray, steps: int) -> np.ndarray:
    """Each gene's share of its token's sample-dependent input, `(n_samples, n_features)`.

    `Xs`: standardised model inputs `(n_samples, n_features)`; `norms`: `||E_g||_2` per
    gene `(n_features,)`; `assignment`: the token of each gene `(n_features,)`. Shares of
    one token's genes sum to 1 per sample (0 where all its genes contribute 0).
    """
    assignment = np.asarray(assignment, dtype=np.int64)
    contribution = np.abs(np.asarray(Xs, dtype=np.float64)) * np.asarray(norms, dtype=np.float64)
    totals = np.zeros((len(contribution), int(steps)))
    np.add.at(totals.T, assignment, contribution.T)
    denominator = totals[:, assignment]
    return np.divide(contribution, denominator, out=np.zeros_like(contribution), where=denominator > 0)


def gene_attention(attention: np.ndarray, shares: np.ndarray, assignment: np.ndarray) -> np.ndarray:
    """Per-sample gene importance `a_{s, t(g)} * share_sg`, `(n_samples, n_features)`.

    `attention`: `(n_samples, steps)`; `shares`: `contribution_shares`' output."""
    return np.asarray(attention, dtype=np.float64)[:, np.asarray(assignment, dtype=np.int64)] * shares


def _members(regressor, Xs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(attention `(n, steps)`, value-embedding norms `(n_features,)`) per ensemble member."""
    import keras

    from benchmark.models.attention import AdditiveAttention
    from benchmark.models.fit_loop import predict_keras
    from benchmark.models.gene_tokens import GeneTokens

    model = regressor.model
    tokens = {layer.name.removesuffix("tokens"): layer for layer in model.layers if isinstance(layer, GeneTokens)}
    attention = [layer for layer in model.layers if isinstance(layer, AdditiveAttention)]
    outputs = keras.Model(model.inputs, [layer.output[1] for layer in attention])
    weights = predict_keras(outputs, Xs, regressor.batch_size)  # (members, n, steps), or (n, steps) for one
    weights = weights[None] if weights.ndim == 2 else weights
    members = []
    for layer, member_weights in zip(attention, weights):
        embedding = np.asarray(tokens[layer.name.removesuffix("attention")].value_embedding.numpy(), np.float64)
        members.append((np.asarray(member_weights, dtype=np.float64), np.linalg.norm(embedding, axis=1)))
    return members


def attention_tables(regressor, attention: np.ndarray, data, pca: bool) -> dict[str, pd.DataFrame]:
    """Attention mapped back to genes on the held-out split (`data.X_test`).

    `attention`: `(n_test, steps)`, the regressor's (member-mean) attention weights.
    Returns `{"attention.csv": per token (token, n_inputs, genes, mean_weight, std_weight)}`
    and, unless the inputs are PCA components, `"gene_importance.csv"` (rank, gene, module,
    module_size, weight, std, token_weight, token_std, share; see the module docstring),
    sorted by weight (ties: module, gene).
    """
    tokens = regressor.tokens
    attention = np.asarray(attention, dtype=np.float64)
    mean, std = attention.mean(axis=0), attention.std(axis=0)
    rows = []
    for t, cols in enumerate(tokens):
        named = [] if pca else [data.feature_genes[c] for c in cols]
        rows.append({"token": t, "n_inputs": len(cols), "genes": " ".join(named),
                     "mean_weight": float(mean[t]), "std_weight": float(std[t])})
    tables = {ATTENTION_FILE: pd.DataFrame(rows)}
    if pca:
        return tables
    assignment = np.asarray(regressor.assignment, dtype=np.int64)
    X_test = data.X_test
    n_rows = max(1, GENE_ATTENTION_BYTES // (8 * max(X_test.shape[1], 1)))
    if len(X_test) > n_rows:  # a seeded subset of the held-out rows keeps the (n, genes) arrays bounded
        rows = np.sort(np.random.default_rng(SEED).choice(len(X_test), size=n_rows, replace=False))
        X_test = X_test.read(rows) if is_row_view(X_test) else np.asarray(X_test)[rows]
    Xs = regressor.preprocessor.transform_X(np.asarray(X_test))
    per_sample, shares = np.zeros(Xs.shape), np.zeros(Xs.shape)
    members = _members(regressor, Xs)
    for member_attention, norms in members:
        member_shares = contribution_shares(Xs, norms, assignment, len(tokens))
        per_sample += gene_attention(member_attention, member_shares, assignment) / len(members)
        shares += member_shares / len(members)
    sizes = np.bincount(assignment, minlength=len(tokens))
    table = pd.DataFrame({
        "gene": list(data.feature_genes), "module": assignment, "module_size": sizes[assignment],
        "weight": per_sample.mean(axis=0), "std": per_sample.std(axis=0),
        "token_weight": mean[assignment], "token_std": std[assignment], "share": shares.mean(axis=0),
    }).sort_values(["weight", "module", "gene"], ascending=[False, True, True], kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    tables[IMPORTANCE_FILE] = table
    return tables


# -- permutation importance -------------------------------------------------------------


def _rmse(error: np.ndarray, axis=None) -> np.ndarray:
    return np.sqrt(np.mean(np.square(error), axis=axis))


def budget(n_samples: int, n_features: int, max_genes: int = MAX_GENES, max_rows: int = MAX_ROWS,
           min_samples: int = MIN_SAMPLES) -> tuple[int, int]:
    """`(samples, genes)` permuted within the budget: every gene up to `max_genes` and as many
    held-out samples as `max_rows` allows, but at least `min_samples` (or all there are);
    beyond that, fewer genes."""
    genes = min(n_features, max_genes)
    samples = min(n_samples, max(min_samples, max_rows // max(genes, 1)))
    return samples, min(genes, max(1, max_rows // max(samples, 1)))


def permutation_importance(predict: Callable[[np.ndarray], np.ndarray], X: np.ndarray, Y: np.ndarray,
                           genes: list[str], targets: list[str], seed: int = SEED, repeats: int = REPEATS,
                           max_genes: int = MAX_GENES, max_rows: int = MAX_ROWS, min_samples: int = MIN_SAMPLES,
                           batch_rows: int = BATCH_ROWS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What permuting one gene's column across the held-out samples does to the prediction.

    `predict`: raw features `(n, n_features)` -> predictions `(n, n_targets)` in target
    units; `X` `(n_samples, n_features)` (an array or a `RowView`), `Y` `(n_samples,
    n_targets)` the held-out split; `genes`, `targets` their ids. Returns `(pooled,
    per_target)`: `pooled` has columns gene, importance (the root mean squared change of
    the prediction over every sample and target, mean over repeats), rmse_increase (the
    increase of the held-out RMSE), rank (1 = the largest importance; ties by gene id);
    `per_target` columns gene, target, importance, rmse_increase.
    Only the permuted genes (see `MAX_GENES`) have rows.
    """
    streamed = is_row_view(X)  # a streamed held-out split: read only the rows permuted
    if not streamed:
        X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
    rng = np.random.default_rng(seed)
    n_samples, n_genes = budget(len(X), X.shape[1], max_genes, max_rows, min_samples)
    if n_genes < X.shape[1]:  # the most variable genes (on every held-out row); ties by canonical position
        variance = fit_scaler(X).var_ if streamed else X.var(axis=0)
        columns = np.sort(np.argsort(-variance, kind="stable")[:n_genes])
    else:
        columns = np.arange(X.shape[1])
    if n_samples < len(X):  # a seeded subset of the held-out rows
        rows = np.sort(rng.choice(len(X), size=n_samples, replace=False))
        X, Y = (X.read(rows) if streamed else X[rows]), Y[rows]
    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    reference = np.asarray(predict(X), dtype=np.float64).reshape(n, -1)
    pooled_base, target_base = _rmse(reference - Y), _rmse(reference - Y, axis=0)
    increase, target_increase = np.zeros(len(columns)), np.zeros((len(columns), Y.shape[1]))
    change, target_change = np.zeros(len(columns)), np.zeros((len(columns), Y.shape[1]))
    # Permuted copies predicted at once: `batch_rows`, and at most BATCH_BYTES of float32
    # features, since predicting makes float64 copies of them (preprocessing, the base).
    batch_rows = min(int(batch_rows), max(1, BATCH_BYTES // (4 * max(X.shape[1], 1))))
    chunk = max(1, batch_rows // max(n, 1))
    for _ in range(repeats):
        order = rng.permutation(n)
        for start in range(0, len(columns), chunk):
            block = columns[start:start + chunk]
            stacked = np.tile(X, (len(block), 1))
            for i, column in enumerate(block):
                stacked[i * n:(i + 1) * n, column] = X[order, column]
            permuted = np.asarray(predict(stacked), dtype=np.float64).reshape(len(block), n, -1)
            error, moved = permuted - Y, permuted - reference
            increase[start:start + len(block)] += _rmse(error.reshape(len(block), -1), axis=1) - pooled_base
            target_increase[start:start + len(block)] += _rmse(error, axis=1) - target_base
            change[start:start + len(block)] += np.mean(np.square(moved.reshape(len(block), -1)), axis=1)
            target_change[start:start + len(block)] += np.mean(np.square(moved), axis=1)
    change, target_change = np.sqrt(change / repeats), np.sqrt(target_change / repeats)
    increase, target_increase = increase / repeats, target_increase / repeats
    names = [genes[c] for c in columns]
    table = pd.DataFrame({"gene": names, "importance": change, "rmse_increase": increase}).sort_values(
        ["importance", "gene"], ascending=[False, True], kind="stable")
    table["rank"] = np.arange(1, len(table) + 1)
    long = pd.DataFrame({"gene": np.repeat(names, Y.shape[1]), "target": np.tile(list(targets), len(names)),
                         "importance": target_change.reshape(-1), "rmse_increase": target_increase.reshape(-1)})
    return table.reset_index(drop=True), long


def batched(regressor, batch_size: int = PREDICT_BATCH):
    """`regressor` predicting `batch_size` rows per Keras step (a shallow copy: same model and
    weights), fewer for a sequence model where its gene tokens would pass `GENE_TOKEN_BYTES`.
    The permuted copies are many rows of a small model: at the training batch size a 2-core
    CPU spends its time in Keras's per-step overhead, not in the model."""
    import copy

    width = regressor.hp.get("token_units") if regressor.is_sequence else None
    if width and regressor.n_features:
        batch_size = min(int(batch_size), max(1, GENE_TOKEN_BYTES // (4 * regressor.n_features * int(width))))
    fast = copy.copy(regressor)
    fast.hp = {**regressor.hp, "batch_size": int(batch_size)}
    return fast


def importance_tables(regressor, data, attention: Optional[np.ndarray], pca: bool,
                      seed: int = SEED) -> dict[str, pd.DataFrame]:
    """Every importance table evaluate writes for a fitted `regressor` on `data`'s held-out split
    (file name -> table): the attention tables where `attention` is given, and the permutation
    tables for every architecture."""
    tables = {} if attention is None else attention_tables(regressor, attention, data, pca)
    pooled, per_target = permutation_importance(batched(regressor).predict, data.X_test, data.Y_test,
                                                list(data.feature_genes), list(data.target_genes), seed=seed)
    tables[PERMUTATION_FILE], tables[PERMUTATION_TARGETS_FILE] = pooled, per_target
    return tables
