"""Memory that grows with the data stays within its bound (tracemalloc, which sees NumPy's arrays).

The parts that broke a 2 GiB limit at 40,000 x 4,000 (results/scale.md) are checked here at
small shapes, where a whole process under a proportional cgroup limit could not tell a
regression from TensorFlow's fixed ~900 MiB. Each bound is a multiple of the array the
memory should scale with, between today's peak and the peak of the code it replaced.
"""

from __future__ import annotations

import tracemalloc

import numpy as np

from benchmark.data.rows import RowView
from benchmark.models import tokens
from benchmark.models.baselines import KnnBaseline, leave_one_out_predictions
from benchmark.models.ridge_loo import alpha_grid, fit_ridge_loo


def peak_bytes(fn) -> int:
    """The peak of traced allocations while `fn()` runs, above what was allocated before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_knn_leave_one_out_goes_one_neighbour_rank_at_a_time():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((20_000, 20)), rng.standard_normal((20_000, 50))
    knn = KnnBaseline(k=37).fit(X, Y)
    # Gathering Y[neighbours] at once is (n, k, targets): 37 times Y. Today: ~5 times Y.
    assert peak_bytes(lambda: leave_one_out_predictions(knn)) < 8 * Y.nbytes


def test_ridge_on_its_own_copy_makes_no_second_copy():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((6_000, 1_500)), rng.standard_normal((6_000, 50))
    alphas = alpha_grid(1e-2, 1e4, 20)
    copy = peak_bytes(lambda: fit_ridge_loo(X, Y, alphas))
    in_place = X.copy()
    own = peak_bytes(lambda: fit_ridge_loo(in_place, Y, alphas, overwrite_x=True))
    # The streamed ridge hands its penalty sample over (overwrite_x): centred and rotated
    # in place, one (n, p) array less than a fit on a copy. Today: 2.7 times X.
    assert copy - own > 0.9 * X.nbytes
    assert own < 3.2 * X.nbytes


def test_gene_tree_of_a_streamed_matrix_is_built_in_place():
    rng = np.random.default_rng(2)
    n, p = 2_000, 1_500
    view = RowView(rng.standard_normal((n, p)).astype(np.float32), rows=np.arange(n))
    square = p * p * 8
    # Five p x p temporaries before the in-place correlation; today ~2.3 p x p arrays.
    assert peak_bytes(lambda: tokens._correlation(view)) < 3 * square
    assert peak_bytes(lambda: tokens._fit_leaf_order(view)) < 3 * square


def test_streamed_ridge_chooses_its_penalty_on_a_sample_bounded_in_bytes(monkeypatch):
    """At 10,000 genes 8,192 sampled rows were 655 MB in float64 and their leave-one-out
    another four n x n arrays (3.6 GiB peak in results/scale.md's grid): the sample is now as
    many rows as `ALPHA_BYTES` hold. Here 8 MiB: 1,048 of 6,000 rows of 1,000 genes."""
    from benchmark.data import rows as rows_module
    from benchmark.models import baselines, ridge_loo

    rng = np.random.default_rng(3)
    n, p = 6_000, 1_000
    view = RowView(rng.standard_normal((n, p)).astype(np.float32), rows=np.arange(n))
    Y = rng.standard_normal((n, 5))
    # Small blocks and residual chunks, so that the sample's arrays make the peak.
    monkeypatch.setattr(rows_module, "BLOCK_BYTES", 1 << 20)
    monkeypatch.setattr(ridge_loo, "_ALPHA_CHUNK_BYTES", 1 << 20)
    monkeypatch.setattr(baselines, "ALPHA_BYTES", 8 << 20)
    bounded = peak_bytes(lambda: baselines.RidgeBaseline(per_target=True).fit(view, Y))
    monkeypatch.setattr(baselines, "ALPHA_BYTES", 1 << 40)  # every row, as before
    whole = peak_bytes(lambda: baselines.RidgeBaseline(per_target=True).fit(view, Y))
    square = p * p * 8
    # Measured: ~3.8 p x p arrays (the sample, its X'X, the eigenvectors); every row ~13.6.
    assert bounded < 6 * square < whole


def test_streamed_normal_equations_hold_little_beside_their_x_t_x():
    """At 10,413 genes a streamed ridge's X'X is 867 MB, and in evaluate's second CV fit it
    sits beside the first fit's TensorFlow state: the blocks summed into it must stay small.
    Blocks are `SUMS_BLOCK_BYTES` of float32, each read, preprocessed and summed with nothing
    of the previous one alive; the preprocessing centres and scales one float64 copy in place."""
    from benchmark.models import blockwise_fit
    from benchmark.models.preprocessing import FoldPreprocessor

    rng = np.random.default_rng(4)
    n, p = 12_000, 1_000
    X, Y = rng.standard_normal((n, p)).astype(np.float32), rng.standard_normal((n, 5))
    pre = FoldPreprocessor().fit(X, Y)
    view = RowView(X, rows=np.arange(n)).map(pre.transform_X)
    beside = peak_bytes(lambda: blockwise_fit.normal_equations(view, Y)) - p * p * 8
    # Today 3.0 blocks (float32 in, its float64 copy); 6.0 with the previous block alive, and
    # 18.9 before (32 MiB blocks, the previous one alive, the preprocessing's extra copy).
    assert beside < 4 * blockwise_fit.SUMS_BLOCK_BYTES
    block = X[:2_000]
    # One float64 copy and its float32 result: 1.5 float64 blocks (2.0 before).
    assert peak_bytes(lambda: pre.transform_X(block)) < 1.7 * block.size * 8
