"""Fitting on a streamed matrix: statistics, PCA and tf.data batches from a `RowView`.

A task larger than `data.stream_above_mb` reaches the models as `RowView`s
(`benchmark.data.rows`): its rows stay in the memory-mapped `expression.npy` and are read
a block at a time. This module holds what fitting needs from such a view, so that memory
stays bounded by a block and the model, never by the matrix:

- `fit_scaler`, `fit_pca`: a StandardScaler and an IncrementalPCA fitted block by block
  (sklearn's own `partial_fit`), the streamed forms of the in-fold preprocessing;
- `normal_equations`, `without_rows`, `solve_ridge`, `solve_ridge_penalties`: float64
  sums of X'X, X'Y, X and Y (of all rows, or all less a subset's), and ridge in closed
  form from them, in place;
- `blockwise`: apply a function to every block and stack the results (predictions);
- `row_batches`: a tf.data pipeline of shuffled (features, targets) batches, each read
  from the file when the step needs it; shuffling is of row indices, so a fold is only
  an index set. TensorFlow is imported on first use.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

from benchmark.data.rows import RowView, is_row_view

__all__ = ["RowView", "is_row_view", "fit_scaler", "fit_pca", "normal_equations", "without_rows", "solve_ridge",
           "solve_ridge_penalties", "release_memory", "blockwise", "row_batches"]


def fit_scaler(X: RowView):
    """`StandardScaler` fitted on every row of `X`, a block at a time (float64)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    for _, block in X.blocks():
        scaler.partial_fit(block.astype(np.float64))
    return scaler


def fit_pca(X: RowView, n_components: int):
    """`IncrementalPCA` of the rows of `X`, fitted block by block (deterministic: no random
    solver). A last block with fewer rows than components is merged into the previous one."""
    from sklearn.decomposition import IncrementalPCA

    pca = IncrementalPCA(n_components=n_components)
    size = max(X.block_rows(), n_components)
    starts = list(range(0, len(X), size))
    if len(starts) > 1 and len(X) - starts[-1] < n_components:
        starts.pop()
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else len(X)
        pca.partial_fit(X.read(np.arange(start, stop)).astype(np.float64))
    return pca


COLUMN_BLOCK_FLOATS = 1 << 21  # solve_ridge's temporaries: a column block of X'X (16 MiB), twice
# The normal equations' blocks: float32 bytes of whole matrix rows. Their float64 copies
# (the preprocessing's, syrk's) sit beside X'X, so a quarter of a read block (200 rows at
# 10,463 genes): 3.0 such blocks beside it, against 18.9 of 8 MiB before with 32 MiB
# blocks (tests/test_memory_bounds.py).
SUMS_BLOCK_BYTES = 8 << 20


def normal_equations(X: RowView, Y: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(n, x_sum, y_sum, XtX, XtY)` over the rows of `X` and `Y` (aligned), all float64.

    `XtX` is (n_features, n_features), Fortran order, with only its upper triangle
    filled: BLAS `syrk` adds each block's X'X into it in place, so no second p x p array is
    ever made (~128 MB at 4,000 features, ~870 MB at D-GEX's 10,463).
    """
    Y = np.asarray(Y, dtype=np.float64)
    p, k = X.shape[1], Y.shape[1]
    sums = (np.zeros(p), np.zeros(k), np.zeros((p, p), order="F"), np.zeros((p, k)))
    return (len(X), *_add_rows(X, Y, *sums, sign=1.0))


def _add_rows(X: RowView, Y: np.ndarray, x_sum, y_sum, XtX, XtY, sign: float):
    """The sums with `sign` times those of the rows of `X` and `Y` added, in place."""
    from scipy.linalg.blas import dsyrk

    for start, block in X.blocks(X.block_rows(SUMS_BLOCK_BYTES)):
        xb = block.astype(np.float64)
        del block  # not kept alive (nor `xb`, below) while the next block is read
        yb = Y[start:start + len(xb)]
        x_sum += sign * xb.sum(axis=0)
        y_sum += sign * yb.sum(axis=0)
        # xb.T is Fortran-ordered (p, rows): syrk computes xb.T @ xb into XtX's upper triangle.
        XtX = dsyrk(sign, xb.T, beta=1.0, c=XtX, trans=0, lower=0, overwrite_c=1)
        XtY += sign * (xb.T @ yb)
        del xb
    return x_sum, y_sum, XtX, XtY


def without_rows(equations, X: RowView, Y: np.ndarray, out: np.ndarray):
    """`normal_equations` of all rows less those of `X` and `Y` (a subset of them, aligned):
    the counts, sums and cross-products with that subset's own subtracted. The X'X
    difference is written into `out` (p x p, Fortran order; upper triangle, as
    `normal_equations` makes it): a copy of the whole X'X less BLAS `syrk` of the subset's
    blocks, so the sums of a K-fold's training parts cost one pass over the rows in all,
    not K - 1, at the price of that second p x p array."""
    n, x_sum, y_sum, XtX, XtY = equations
    np.copyto(out, XtX)
    sums = (x_sum.copy(), y_sum.copy(), out, XtY.copy())
    return (n - len(X), *_add_rows(X, np.asarray(Y, dtype=np.float64), *sums, sign=-1.0))


def solve_ridge(n: int, x_sum: np.ndarray, y_sum: np.ndarray, XtX: np.ndarray, XtY: np.ndarray,
                alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """`(coef (k, p), intercept (k,))` of ridge with an unpenalised intercept, from the sums
    of `normal_equations`: (Xc'Xc + alpha I) W = Xc'Yc for the centred Xc, Yc, where
    Xc'Xc = X'X - n mx mx' and Xc'Yc = X'Y - n mx my'.

    Reads `XtX`'s upper triangle and leaves it as it was: the centred, penalised matrix is
    written into the lower triangle, a column block at a time, and factorised there in place
    (LAPACK's lower Cholesky never touches the strict upper triangle); the diagonal, which
    the two share, is put back after. So one p x p array serves any number of penalties,
    and `normal_equations` is summed once for all of them."""
    from scipy.linalg import cho_solve

    x_mean, y_mean = x_sum / n, y_sum / n
    with _factorised(n, x_mean, XtX, alpha) as (factor, _):
        coef = cho_solve(factor, XtY - n * np.outer(x_mean, y_mean), overwrite_b=True, check_finite=False).T
    return coef, y_mean - coef @ x_mean


PCG_GROUP_RATIO = 16.0  # penalties within this ratio share one Cholesky factor (see solve_ridge_penalties)
PCG_TOL = 1e-13  # ... and are solved to this relative preconditioned residual
PCG_MAX_ITER = 200  # ... or directly, where this many iterations do not reach it


def solve_ridge_penalties(n: int, x_sum: np.ndarray, y_sum: np.ndarray, XtX: np.ndarray, XtY: np.ndarray,
                          alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`solve_ridge` with penalty `alphas[t]` for target t (`XtY[:, t]`): `(coef (k, p),
    intercept (k,))`, `XtX`'s upper triangle left as it was.

    A Cholesky factor costs p^3 / 3, and a per-target penalty search picks many distinct
    penalties (17 for 50 targets at 10,413 features, results/scale.md): one factor each
    made that solve most of a wide streamed fit. Here penalties within `PCG_GROUP_RATIO`
    of each other share one factor, of A + a0 I (A = Xc'Xc, a0 their geometric middle),
    which preconditions conjugate gradients on each (A + a I) w = b: the preconditioned
    matrix has eigenvalues (l + a) / (l + a0), between 1 and a / a0 whatever A's spectrum,
    so a ratio of 16 converges to `PCG_TOL` in about 30 iterations, each two triangular
    solves and one product with A (from the upper triangle), O(p^2) per target. Solutions
    agree with the direct solve to about 1e-12 relative; a penalty that has not converged
    after `PCG_MAX_ITER` iterations is solved directly. A group of one penalty is one
    direct solve, as before."""
    alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
    x_mean, y_mean = x_sum / n, y_sum / n
    coef = np.empty((len(alphas), len(x_mean)))
    distinct = np.unique(alphas)
    groups, first = [], 0
    for i in range(1, len(distinct) + 1):
        if i == len(distinct) or distinct[i] > distinct[first] * PCG_GROUP_RATIO:
            groups.append(distinct[first:i])
            first = i
    for group in groups:
        targets = np.flatnonzero(np.isin(alphas, group))
        late = [] if len(group) > 1 else [group[0]]  # penalties solved directly
        if not late:
            cross = XtY[:, targets] - n * np.outer(x_mean, y_mean[targets])
            with _factorised(n, x_mean, XtX, float(np.sqrt(group[0] * group[-1]))) as (factor, diagonal):
                solution, converged = _pcg(factor, diagonal, n, x_mean, XtX, cross, alphas[targets])
            coef[targets] = solution.T
            late = np.unique(alphas[targets][~converged])
        for alpha in late:
            direct = targets[alphas[targets] == alpha]
            coef[direct] = solve_ridge(n, x_sum, y_sum[direct], XtX, XtY[:, direct], alpha=float(alpha))[0]
    return coef, y_mean - coef @ x_mean


def _pcg(factor, diagonal: np.ndarray, n: int, x_mean: np.ndarray, XtX: np.ndarray, B: np.ndarray,
         alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block preconditioned conjugate gradients for (A + alphas[j] I) w_j = B[:, j], A = Xc'Xc,
    preconditioned by `factor` (of A + a0 I, in `XtX`'s lower triangle, whose diagonal is now
    the factor's: `diagonal` is X'X's own) and started at its solution. `(W (p, m),
    converged (m,))`: converged where the preconditioned residual r'M^-1 r fell to `PCG_TOL`^2
    times b'M^-1 b."""
    from scipy.linalg import cho_solve
    from scipy.linalg.blas import dsymm

    correction = (diagonal - XtX.diagonal())[:, None]  # X'X's own diagonal where the factor's now is

    def operator(V: np.ndarray, alpha: np.ndarray) -> np.ndarray:  # (A + alpha I) V, A from the upper triangle
        return dsymm(1.0, XtX, V, side=0, lower=0) + correction * V - n * np.outer(x_mean, x_mean @ V) + alpha * V

    def precondition(V: np.ndarray) -> np.ndarray:
        return cho_solve(factor, V, check_finite=False)

    W = precondition(B)
    R = B - operator(W, alphas)
    Z = precondition(R)
    P = Z.copy()
    rz = np.sum(R * Z, axis=0)
    target = PCG_TOL ** 2 * np.sum(B * W, axis=0)
    active = rz > target
    for _ in range(PCG_MAX_ITER):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        Q = operator(P[:, idx], alphas[idx])
        step = rz[idx] / np.sum(P[:, idx] * Q, axis=0)
        W[:, idx] += P[:, idx] * step
        R[:, idx] -= Q * step
        Z = precondition(R[:, idx])
        rz_next = np.sum(R[:, idx] * Z, axis=0)
        P[:, idx] = Z + P[:, idx] * (rz_next / rz[idx])
        rz[idx] = rz_next
        active[idx] = rz_next > target[idx]
    return W, ~active


@contextlib.contextmanager
def _factorised(n: int, x_mean: np.ndarray, XtX: np.ndarray, alpha: float):
    """The Cholesky factor of Xc'Xc + alpha I, written into `XtX`'s lower triangle from its
    upper one (a column block at a time), for the block; yields `(factor, X'X's diagonal)`
    and puts the diagonal back after."""
    from scipy.linalg import cho_factor

    p = len(x_mean)
    diagonal = XtX.diagonal().copy()
    step = max(1, COLUMN_BLOCK_FLOATS // max(p, 1))
    for j in range(0, p, step):  # column blocks of the Fortran-ordered matrix
        stop = min(p, j + step)
        # Columns j:stop of the lower triangle: rows j:stop of the upper one, transposed, centred.
        block = XtX[j:stop, j:].T - n * np.outer(x_mean[j:], x_mean[j:stop])
        XtX[stop:, j:stop] = block[stop - j:]
        lower = np.tril_indices(stop - j)  # the diagonal block: its lower half only
        XtX[j:stop, j:stop][lower] = block[:stop - j][lower]
    XtX[np.diag_indices_from(XtX)] += alpha
    try:
        yield cho_factor(XtX, lower=True, overwrite_a=True, check_finite=False), diagonal
    finally:
        XtX[np.diag_indices_from(XtX)] = diagonal


def release_memory() -> None:
    """Collect garbage, then hand the C heap's free pages back to the system (glibc's
    `malloc_trim`; nothing elsewhere): what a long streamed fit frees, another process, or
    this one's next X'X, can then use."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        trim = None
    if trim is not None:
        trim(0)


def blockwise(fn: Callable[[np.ndarray], np.ndarray], X) -> np.ndarray:
    """`fn(X)` for an array; for a `RowView`, `fn` of each block, stacked in row order."""
    if not is_row_view(X):
        return fn(X)
    return np.concatenate([fn(block) for _, block in X.blocks()])


def row_batches(X: RowView, Y: np.ndarray, batch_size: int, seed: int | None = None):
    """A `tf.data.Dataset` of `(features, targets)` float32 batches over the rows of `X`.

    With `seed`, row indices are shuffled again every epoch (`reshuffle_each_iteration`),
    as `Dataset.shuffle` over the full set of rows would shuffle in-memory arrays: the
    same seed gives the same batches as `from_tensor_slices((X, Y)).shuffle(n, seed)`.
    Each batch's rows are read from the memory-mapped file inside the pipeline (in
    increasing file order, then put back in batch order); one batch is prefetched.
    """
    import tensorflow as tf

    Y = np.ascontiguousarray(Y, dtype=np.float32)
    n, p, k = len(X), X.shape[1], Y.shape[1]

    def read(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(X.read(index), dtype=np.float32), Y[index]

    indices = tf.data.Dataset.range(n)
    if seed is not None:
        indices = indices.shuffle(n, seed=seed, reshuffle_each_iteration=True)

    def load(index):
        features, targets = tf.numpy_function(read, [index], (tf.float32, tf.float32), stateful=False)
        features.set_shape((None, p))
        targets.set_shape((None, k))
        return features, targets

    return indices.batch(batch_size).map(load).prefetch(1)
