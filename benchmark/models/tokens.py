"""How the sequence models read the features: tokens of co-expressed genes, in a fitted order.

`fit_token_assignment(Xs, steps, mode)` is fitted on the training part of one fold (its
standardised features) and returns `assignment`, shape `(n_features,)`: the token (time
step) each feature column is summed into. No TensorFlow here, so evaluation can map
attention weights back to genes without it.

- `mode="modules"`: hierarchical clustering (average linkage) of the genes on the
  distance `1 - |r|`, r their Pearson correlation over the training rows, cut into at
  most `steps` balanced modules of co-expressed genes (`balanced_modules`): no module
  holds more than `max_module_size(n_features, steps)` genes, twice the mean size.
  (A plain cut of the tree into `steps` clusters put 535 of pbmc68k's 715 genes in one
  module: on real data, average linkage chains weakly correlated genes into one blob.)
  Modules are ordered by their first gene in the dendrogram's leaf order, so
  neighbouring tokens are related modules.
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

import heapq

import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage, to_tree

from benchmark.models.blockwise_fit import is_row_view
from benchmark.models.fit_cache import FIT_CACHE

TOKEN_MODES = ("modules", "genes")


def _correlation(Xs) -> np.ndarray:
    """Pearson correlation of the columns, `(n_features, n_features)`; a `RowView` (streamed
    matrix) is summed block by block."""
    step = _column_step(Xs.shape[1])
    if is_row_view(Xs):
        from benchmark.models.blockwise_fit import normal_equations

        n, x_sum, _, cov, _ = normal_equations(Xs, np.zeros((len(Xs), 1)))
        # In place, a block of columns at a time: at 3,950 genes each p x p temporary is 125 MB.
        for i in range(len(cov) - 1):  # normal_equations fills the upper triangle: mirror it
            cov[i + 1:, i] = cov[i, i + 1:]
        for j in range(0, len(cov), step):
            cov[:, j:j + step] -= np.outer(x_sum, x_sum[j:j + step]) / n
    else:
        X = np.asarray(Xs, dtype=np.float64)
        X = X - X.mean(axis=0)
        cov = X.T @ X
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    sd[sd == 0] = 1.0  # a constant column correlates with nothing
    for j in range(0, len(cov), step):
        cov[:, j:j + step] /= np.outer(sd, sd[j:j + step])
    return np.clip(cov, -1.0, 1.0, out=cov)


def _column_step(n_features: int) -> int:
    """Columns of a float64 (n_features, n_features) matrix in a block of about 8 MiB."""
    return max(1, (1 << 20) // max(int(n_features), 1))


def _leaf_order(Xs) -> tuple[np.ndarray, np.ndarray]:
    """`(Z, order)`: the average-linkage tree of the columns on `1 - |r|` and its leaf order;
    computed once per process for the same rows (`benchmark.models.fit_cache`), whatever `steps`."""
    return FIT_CACHE.get_or_fit(("leaf_order",), (Xs,), lambda: _fit_leaf_order(Xs))


def _fit_leaf_order(Xs) -> tuple[np.ndarray, np.ndarray]:
    n_features = Xs.shape[1]
    distance = _correlation(Xs)
    np.subtract(1.0, np.abs(distance, out=distance), out=distance)  # 1 - |r|, in place
    # The condensed upper triangle of (d + d') / 2 (exact symmetry), a row at a time rather
    # than through two more p x p arrays.
    condensed = np.empty(n_features * (n_features - 1) // 2)
    start = 0
    for i in range(n_features - 1):
        stop = start + n_features - 1 - i
        condensed[start:stop] = (distance[i, i + 1:] + distance[i + 1:, i]) / 2
        start = stop
    del distance
    Z = linkage(condensed, method="average")
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
    for token, genes in enumerate(balanced_modules(Z, order, steps)):
        assignment[genes] = token
    return assignment


def max_module_size(n_features: int, steps: int) -> int:
    """The most genes a module may hold: twice the mean size, `ceil(2 n_features / steps)`."""
    return -(-2 * int(n_features) // max(1, int(steps)))


def balanced_modules(Z: np.ndarray, order: np.ndarray, steps: int) -> list[np.ndarray]:
    """At most `steps` modules (gene columns, each an array) of at most
    `max_module_size` genes, in leaf order, cut from the tree `Z` whose leaf order is `order`.

    1. The tree is cut into `steps` modules where its merges are highest (the plain cut:
       what scipy's `fcluster(Z, steps, "maxclust")` gives, up to ties).
    2. A module over the bound is replaced by its largest subtrees within the bound.
    3. While there are more than `steps` modules, the most related two neighbouring ones
       (in leaf order) that fit in the bound together are merged. Some pair always
       fits: with m > steps modules, some neighbouring pair holds at most
       2 n / (m - 1) <= 2 n / steps genes.
    Deterministic: ties go to the smaller pair, then the first in leaf order.
    """
    n_features = len(order)
    bound = max_module_size(n_features, steps)
    root = to_tree(Z)
    modules = [root]
    while len(modules) < steps:  # 1. the plain cut: split the highest merge first
        highest = max(modules, key=lambda node: node.dist)
        if highest.is_leaf():
            break
        modules.remove(highest)
        modules += [highest.get_left(), highest.get_right()]
    within, pending = [], modules
    while pending:  # 2. a module over the bound becomes its largest subtrees within it
        node = pending.pop()
        if node.get_count() <= bound:
            within.append(node)
        else:
            pending += [node.get_right(), node.get_left()]
    position = np.empty(n_features, dtype=np.int64)
    position[order] = np.arange(n_features)
    first = lambda node: int(position[node.pre_order()].min())  # noqa: E731
    genes = [np.asarray(node.pre_order(), dtype=np.int64) for node in sorted(within, key=first)]
    if len(genes) <= steps:
        return genes
    return _merge_neighbours(genes, steps, bound, _boundary_heights(root, n_features))


def _boundary_heights(root, n_features: int) -> np.ndarray:
    """`h[i]`: the height at which the i-th and (i+1)-th leaves in leaf order join. The
    leaves from i to j (i < j) join at `max(h[i:j])`: a run of neighbours is as related
    as its weakest link."""
    heights = np.zeros(max(n_features - 1, 0))
    pending = [(root, 0)]
    while pending:
        node, start = pending.pop()
        if node.is_leaf():
            continue
        split = start + node.get_left().get_count()
        heights[split - 1] = node.dist
        pending += [(node.get_left(), start), (node.get_right(), split)]
    return heights


def _merge_neighbours(genes: list[np.ndarray], steps: int, bound: int, heights: np.ndarray) -> list[np.ndarray]:
    """Merge neighbouring modules until `steps` remain: each time the most related pair
    (lowest height of the run they span, `heights` from `_boundary_heights`) whose
    combined size is within `bound`; ties: the smaller, then the first. A heap of pairs,
    so thousands of chained singletons merge fast."""
    size = [len(g) for g in genes]
    start = np.concatenate([[0], np.cumsum(size)])  # leaf-order span of module i: [start[i], start[i] + size[i])
    right = list(range(1, len(genes))) + [-1]  # the next live module, -1 at the end
    left = [-1] + list(range(len(genes) - 1))
    alive = [True] * len(genes)

    def pair(a: int, b: int) -> tuple:
        combined = size[a] + size[b]
        return (float(heights[start[a]:start[a] + combined - 1].max()), combined, a, b)

    heap = [pair(i, i + 1) for i in range(len(genes) - 1)]
    heapq.heapify(heap)
    live = len(genes)
    while live > steps:
        _, combined, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b] and right[a] == b and size[a] + size[b] == combined):
            continue  # stale: one side has merged since
        if combined > bound:
            continue  # sizes only grow: this pair never fits
        genes[a], size[a], alive[b] = np.concatenate([genes[a], genes[b]]), combined, False
        right[a] = right[b]
        if right[a] >= 0:
            left[right[a]] = a
            heapq.heappush(heap, pair(a, right[a]))
        if left[a] >= 0:
            heapq.heappush(heap, pair(left[a], a))
        live -= 1
    return [g for g, keep in zip(genes, alive) if keep]


def n_tokens(n_features: int, steps: int, mode: str) -> int:
    """The sequence length the model is built with (fixed across folds)."""
    return n_features if mode == "genes" else max(1, min(int(steps), int(n_features)))


def token_members(assignment: np.ndarray, n_steps: int) -> list[np.ndarray]:
    """The feature columns of each token (ascending), one array per token; empty for padding."""
    assignment = np.asarray(assignment)
    return [np.flatnonzero(assignment == t) for t in range(n_steps)]
