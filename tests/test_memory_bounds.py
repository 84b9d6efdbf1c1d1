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
