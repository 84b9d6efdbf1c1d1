"""How the sequence models read the features: tokens of co-expressed genes, in a fitted order.

`fit_token_assignment(Xs, steps, mode)` is fitted on the training part of one fold (its
standardised features) and returns `assignment`, shape `(n_features,)`: the token (time
step) each feature column is summed into. No TensorFlow here, so evaluation can map
attention weights back to genes without it.

- `mode="modules"`: hierarchical clustering (average linkage) of the genes on the
  distance `1 - |r|`, r their Pearson correlation over the training rows, cut into at
  most `steps` modules of co-expressed genes. Modules are ordered by their first gene in
  the dendrogram's leaf order, so neighbouring tokens are related modules.
- `mode="genes"`: one gene per token, in the dendrogram's leaf order (`steps` is ignored:
  there are `n_features` tokens). Meant for short sequences (`features.max_genes`).
- With PCA on (`ordered=False`: the inputs are components, uncorrelated by construction)
  the inputs are cut into `steps` contiguous blocks in component order.

The clustering sees the columns in their canonical order (prepare sorts the feature genes
by gene id) and is deterministic, so ties resolve by gene id and the file's column order
never matters. A token that receives no gene (a cut can give fewer than `steps` modules)
is padding: the model masks it.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
from scipy.spatial.distance import squareform

from benchmark.models.blockwise_fit import is_row_view
from benchmark.models.fit_cache import FIT_CACHE

TOKEN_MODES = ("modules", "genes")


def _correlation(Xs) -> np.ndarray:
    """Pearson correlation of the columns, `(n_features, n_features)`; a `RowView` (streamed
    matrix) is summed block by block."""
    if is_row_view(Xs):
        from benchmark.models.blockwise_fit import normal_equations

        n, x_sum, _, XtX, _ = normal_equations(Xs, np.zeros((len(Xs), 1)))
        XtX = np.triu(XtX) + np.triu(XtX, 1).T  # normal_equations fills the upper triangle
        cov = XtX - np.outer(x_sum, x_sum) / n
    else:
        X = np.asarray(Xs, dtype=np.float64)
        X = X - X.mean(axis=0)
        cov = X.T @ X
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    sd[sd == 0] = 1.0  # a constant column correlates with nothing
    return np.clip(cov / np.outer(sd, sd), -1.0, 1.0)


def _leaf_order(Xs) -> tuple[np.ndarray, np.ndarray]:
    """`(Z, order)`: the average-linkage tree of the columns on `1 - |r|` and its leaf order;
    computed once per process for the same rows (`benchmark.models.fit_cache`), whatever `steps`."""
    return FIT_CACHE.get_or_fit(("leaf_order",), (Xs,), lambda: _fit_leaf_order(Xs))


def _fit_leaf_order(Xs) -> tuple[np.ndarray, np.ndarray]:
    n_features = Xs.shape[1]
    r = _correlation(Xs)
    distance = 1.0 - np.abs(r)
    np.fill_diagonal(distance, 0.0)
    distance = (distance + distance.T) / 2  # exact symmetry for squareform
    Z = linkage(squareform(distance, checks=False), method="average")
    return Z, leaves_list(Z) if n_features > 1 else np.zeros(1, dtype=np.int64)


def fit_token_assignment(Xs: np.ndarray, steps: int, mode: str = "modules", ordered: bool = True) -> np.ndarray:
    """The token of each feature column, `(n_features,)` int32, tokens numbered from 0.

    `Xs`: the training part's preprocessed features `(n_samples, n_features)`, an array or
    a `RowView` of a streamed matrix.
    Token count: `n_features` in `genes` mode, else `min(steps, n_features)` (some may be
    empty, i.e. padding; see `n_tokens`).
    """
    if mode not in TOKEN_MODES:
        raise ValueError(f"tokens: expected one of {', '.join(TOKEN_MODES)}, got {mode!r}")
    n_features = Xs.shape[1]
    steps = max(1, min(int(steps), n_features))
    if not ordered:
        width = -(-n_features // steps)
        return (np.arange(n_features) // width).astype(np.int32)
    if n_features == 1:
        return np.zeros(1, dtype=np.int32)
    Z, order = _leaf_order(Xs)
    assignment = np.empty(n_features, dtype=np.int32)
    if mode == "genes":
        assignment[order] = np.arange(n_features, dtype=np.int32)
        return assignment
    clusters = fcluster(Z, t=steps, criterion="maxclust")
    # Number the modules by their first appearance in the leaf order.
    first_seen: dict[int, int] = {}
    for leaf in order:
        first_seen.setdefault(int(clusters[leaf]), len(first_seen))
    assignment[:] = [first_seen[int(c)] for c in clusters]
    return assignment


def n_tokens(n_features: int, steps: int, mode: str) -> int:
    """The sequence length the model is built with (fixed across folds)."""
    return n_features if mode == "genes" else max(1, min(int(steps), int(n_features)))


def token_members(assignment: np.ndarray, n_steps: int) -> list[np.ndarray]:
    """The feature columns of each token (ascending), one array per token; empty for padding."""
    assignment = np.asarray(assignment)
    return [np.flatnonzero(assignment == t) for t in range(n_steps)]
