"""Scale: the streamed paths (matrices read in blocks) give what the in-memory paths give.

Blocks are made tiny here (a few rows) so that small matrices cross many block
boundaries; the scale run itself is `scripts/bench_scale.py` (results/scale.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.data import rows as rows_module
from benchmark.data.canonical import canonical_bytes, write_dataset
from benchmark.data.readers import open_matrix
from benchmark.data.rows import RowView
from benchmark.data.matrix_blocks import CanonicalMatrixWriter, ColumnMoments, MatrixScan
from benchmark.data.synthetic import SyntheticMatrix, make_synthetic, synth


def _shuffled_csv(path, ds, seed=0, genes_as_rows=False):
    """`ds` written as csv with rows and columns out of id order."""
    rng = np.random.default_rng(seed)
    rows, cols = rng.permutation(len(ds.samples)), rng.permutation(len(ds.genes))
    X = np.asarray(ds.X)[rows][:, cols]
    row_ids, col_ids = [ds.samples[r] for r in rows], [ds.genes[c] for c in cols]
    if genes_as_rows:
        X, row_ids, col_ids = X.T, col_ids, row_ids
    corner = "gene_id" if genes_as_rows else "sample"
    lines = [",".join([corner, *col_ids])] + [",".join([r, *("%.9g" % v for v in x)]) for r, x in zip(row_ids, X)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("kind", ["csv", "csv-genes-as-rows", "parquet", "h5ad", "gct"])
def test_streamed_import_writes_the_canonical_bytes_of_the_sorted_matrix(tmp_path, monkeypatch, kind):
    """Blocks of 7 file rows, 64-value tiles: `expression.npy` is byte for byte what
    np.save writes for the matrix sorted by sample and gene id."""
    monkeypatch.setattr("benchmark.data.matrix_blocks.BLOCK_BYTES", 4 * 64)
    ds, _ = make_synthetic(53, 23, seed=5)
    if kind.startswith("csv"):
        path = tmp_path / "m.csv"
        _shuffled_csv(path, ds, genes_as_rows=kind.endswith("rows"))
    else:
        path = tmp_path / f"m.{kind}"
        synth(path, samples=53, genes=23, seed=5)
    source = open_matrix(path, block_rows=7)
    out = tmp_path / "out"
    out.mkdir()
    writer = CanonicalMatrixWriter(out, len(source.col_ids), source.genes_are_rows)
    row_ids, blocks = [], 0
    for ids, values in source.blocks:
        row_ids += ids
        writer.append(values)
        blocks += 1
    assert blocks == -(-len(row_ids) // 7) > 1
    samples, genes = (source.col_ids, row_ids) if source.genes_are_rows else (row_ids, source.col_ids)
    writer.finish(samples, genes)
    assert sorted(p.name for p in out.iterdir()) == ["expression.npy"]  # temporaries removed
    assert (out / "expression.npy").read_bytes() == canonical_bytes(ds)["expression.npy"]


def test_the_scan_of_blocks_finds_what_the_whole_matrix_shows():
    ds, _ = make_synthetic(40, 12, seed=1)
    X = np.asarray(ds.X).copy()
    X[17, 3], X[30, 5] = -1.0, np.inf
    scan = MatrixScan(12, genes_are_rows=False, transform="log1p")
    for start in range(0, 40, 6):
        scan.update(X[start:start + 6])
    assert scan.first_nonfinite == (30, 5, False) and scan.first_negative == (17, 3)
    assert scan.n_samples == 40 and not scan.all_integer
    transposed = MatrixScan(40, genes_are_rows=True, transform="none")
    for start in range(0, 12, 5):
        transposed.update(np.asarray(ds.X).T[start:start + 5])
    np.testing.assert_allclose(transposed.gene_variance, np.var(np.asarray(ds.X, np.float64), axis=0), rtol=1e-12)


def test_column_moments_over_blocks_match_numpy_and_one_block_is_bit_identical():
    X = np.random.default_rng(0).normal(5.0, 2.0, size=(101, 9)).astype(np.float32)
    whole = np.var(X.astype(np.float64), axis=0)
    assert np.array_equal(ColumnMoments(9).update(X).variance, whole)
    parts = ColumnMoments(9)
    for start in range(0, 101, 13):
        parts.update(X[start:start + 13])
    np.testing.assert_allclose(parts.variance, whole, rtol=1e-12)
    a, b = ColumnMoments(9).update(X[:50]), ColumnMoments(9).update(X[50:])
    np.testing.assert_allclose(a.merge(b).variance, whole, rtol=1e-12)


def test_synthetic_blocks_are_the_same_whichever_way_they_are_cut():
    matrix = SyntheticMatrix(1100, 700, seed=3)
    whole = matrix.block(0, 1100)
    pieces = np.block([[matrix.block(0, 600, 0, 300), matrix.block(0, 600, 300, 700)],
                       [matrix.block(600, 1100, 0, 300), matrix.block(600, 1100, 300, 700)]])
    assert np.array_equal(whole, pieces)


def test_row_view_reads_rows_in_any_order_with_transform_and_columns(monkeypatch):
    monkeypatch.setattr(rows_module, "BLOCK_BYTES", 4 * 20)
    X = np.arange(60, dtype=np.float32).reshape(12, 5)
    view = RowView(X, rows=[9, 2, 7, 0, 11], cols=[4, 1], transform="log1p")
    expected = np.log1p(X[[9, 2, 7, 0, 11]][:, [4, 1]])
    assert np.array_equal(view.read(), expected)
    assert np.array_equal(view[[3, 0]].read(), expected[[3, 0]])
    assert np.array_equal(np.concatenate([b for _, b in view.blocks()]), expected)
    assert np.array_equal(view.map(lambda b: 2 * b).read([1]), 2 * expected[[1]])


# -- the streamed task: same folds, same metrics ------------------------------------------


@pytest.fixture(scope="module")
def prepared(_project_template, tmp_path_factory):
    """A prepared 400 x 60 dataset (rank-5 signal, log1p), small enough for both paths."""
    import shutil

    from conftest import DATASET, Project

    root = tmp_path_factory.mktemp("streamed") / "project"
    shutil.copytree(_project_template, root, symlinks=True)
    project = Project(root).set_params({
        "datasets": {DATASET: {"transform": "log1p"}}, "task": {"top_k": 5}, "split": {"folds": 3},
        # No ridge base: in memory its out-of-fold predictions are leave-one-out, streamed they
        # come from K folds (benchmark.models.residual), so the two paths differ by design there.
        "training": {"max_epochs": 2, "batch_size": 32, "base": "none"}, "models": {"dnn": {"defaults": {"units": 32}}},
    })
    ds, _ = make_synthetic(400, 60, seed=7)
    write_dataset(ds, project.data_dir)
    from benchmark.data.prepare import prepare

    prepare(project.config())
    return project


def _scores(project, arch: str, streamed: bool, monkeypatch):
    from benchmark.data.prepare import load_task
    from benchmark.evaluation import _fit_and_score, resolve_params

    config = project.config()
    if streamed:
        params = config.params.model_copy(update={"data": config.params.data.model_copy(update={"stream_above_mb": 0})})
        config = type(config)(params, config.path, config.root).for_dataset(config.dataset)
        monkeypatch.setattr(rows_module, "BLOCK_BYTES", 4 * 60 * 37)  # 37-row blocks
    data = load_task(config, "multi", held_out=True)
    assert isinstance(data.X_dev, RowView) == streamed
    hp, _ = resolve_params(config, "multi", arch)
    scores = _fit_and_score(config, arch, hp, data)
    return [m["rmse"] for m in scores.fold_metrics], [m["r2"] for m in scores.fold_metrics], scores.test_pred


@pytest.mark.parametrize("arch,rtol", [("mean", 1e-12), ("ridge", 1e-7), ("dnn", 1e-4), ("attention_gru", 1e-4)])
def test_streamed_and_in_memory_evaluation_give_the_same_metrics(prepared, monkeypatch, arch, rtol):
    rmse_mem, r2_mem, pred_mem = _scores(prepared, arch, False, monkeypatch)
    rmse_str, r2_str, pred_str = _scores(prepared, arch, True, monkeypatch)
    np.testing.assert_allclose(rmse_str, rmse_mem, rtol=rtol)
    np.testing.assert_allclose(r2_str, r2_mem, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(pred_str, pred_mem, rtol=rtol * 10, atol=rtol * 10)


def test_streamed_knn_searches_a_pca_space_close_to_the_exact_search(prepared, monkeypatch):
    """60 genes of rank-5 data: 50 principal components keep the neighbours' distances, so
    the streamed kNN scores within 2% of the exact in-memory search."""
    rmse_mem, _, _ = _scores(prepared, "knn", False, monkeypatch)
    rmse_str, _, _ = _scores(prepared, "knn", True, monkeypatch)
    np.testing.assert_allclose(rmse_str, rmse_mem, rtol=0.02)


@pytest.mark.parametrize("subtract", [True, False])
def test_streamed_ridge_base_is_out_of_fold_ridge_on_k_folds(monkeypatch, subtract):
    """A streamed matrix's ridge base: K seeded folds of ridge (normal equations block by
    block), each row predicted by the ridge of the folds without it. Where a second X'X
    fits FOLD_GRAM_BYTES, a fold's sums are all rows' less the fold's: the rows are summed
    twice in all (and read once more to predict), not K times."""
    from sklearn.model_selection import KFold

    from benchmark.models import residual
    from benchmark.models.baselines import RidgeBaseline
    from benchmark.models.residual import BASE_FOLDS, fit_ridge_base

    rng = np.random.default_rng(3)
    X = rng.normal(size=(90, 12)).astype(np.float32)
    Y = X[:, :2] @ rng.normal(size=(2, 3)) + 0.3 * rng.normal(size=(90, 3))
    monkeypatch.setattr(rows_module, "BLOCK_BYTES", 4 * 12 * 16)  # 16-row blocks
    monkeypatch.setattr(residual, "FOLD_GRAM_BYTES", residual.FOLD_GRAM_BYTES if subtract else 0)
    read = []
    blocks = RowView.blocks
    monkeypatch.setattr(RowView, "blocks", lambda self, *size: (read.append(len(self)), blocks(self, *size))[1])
    base, oof = fit_ridge_base(RowView(X, rows=np.arange(90)), Y, seed=4)
    assert sum(read) == (3 if subtract else BASE_FOLDS + 1) * 90
    for train, held in KFold(BASE_FOLDS, shuffle=True, random_state=4).split(X):
        expected = RidgeBaseline(base.alpha_).fit(X[train], Y[train]).predict(X[held])
        np.testing.assert_allclose(oof[held], expected, rtol=1e-4, atol=1e-6)  # float32 X in sklearn
    np.testing.assert_allclose(base.coef_, RidgeBaseline(base.alpha_).fit(X, Y).coef_, rtol=1e-4, atol=1e-6)



def test_streamed_ridge_solves_every_penalty_from_one_pass_over_the_rows(monkeypatch):
    """A streamed ridge with a penalty per target reads the rows once (one X'X for all
    penalties, each solved in its lower triangle, column block by column block) and gives
    sklearn's Ridge for every target; the X'X it was given is left as it was."""
    from sklearn.linear_model import Ridge

    from benchmark.models import blockwise_fit
    from benchmark.models.baselines import RidgeBaseline

    rng = np.random.default_rng(6)
    X = rng.normal(size=(120, 23)).astype(np.float32)
    Y = X[:, :3] @ rng.normal(size=(3, 4)) + 0.5 * rng.normal(size=(120, 4))
    monkeypatch.setattr(rows_module, "BLOCK_BYTES", 4 * 23 * 16)  # 16-row blocks
    monkeypatch.setattr(blockwise_fit, "COLUMN_BLOCK_FLOATS", 23 * 5)  # 5-column blocks of X'X
    passes = []
    real = blockwise_fit.normal_equations
    monkeypatch.setattr(blockwise_fit, "normal_equations", lambda *a: passes.append(1) or real(*a))
    alphas = np.array([0.3, 30.0, 30.0, 3000.0])
    ridge = RidgeBaseline(alphas).fit(RowView(X, rows=np.arange(120)), Y)
    assert len(passes) == 1
    for t, alpha in enumerate(alphas):
        expected = Ridge(alpha=alpha).fit(X.astype(np.float64), Y[:, t])
        np.testing.assert_allclose(ridge.coef_[t], expected.coef_, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ridge.intercept_[t], expected.intercept_, rtol=1e-9, atol=1e-12)
    sums = real(RowView(X, rows=np.arange(120)), Y)
    upper = np.triu(sums[3]).copy()
    blockwise_fit.solve_ridge(*sums, alpha=1.0)
    first = blockwise_fit.solve_ridge(*sums, alpha=7.0)
    np.testing.assert_array_equal(np.triu(sums[3]), upper)
    again = blockwise_fit.solve_ridge(*real(RowView(X, rows=np.arange(120)), Y), alpha=7.0)
    np.testing.assert_array_equal(first[0], again[0])


@pytest.mark.parametrize("max_iter", [200, 0])
def test_streamed_ridge_shares_one_factor_among_close_penalties(monkeypatch, max_iter):
    """Close penalties (within PCG_GROUP_RATIO) share one Cholesky factor, which
    preconditions conjugate gradients for each: every target still gets sklearn's Ridge at
    its own penalty, and the factorisations are one per group, not one per penalty (a
    per-target search at 10,413 features picks 17). A penalty whose iterations run out is
    solved directly: the same answer."""
    import scipy.linalg
    from sklearn.linear_model import Ridge

    from benchmark.models import blockwise_fit
    from benchmark.models.baselines import RidgeBaseline

    rng = np.random.default_rng(8)
    X = rng.normal(size=(150, 40)).astype(np.float32) * rng.uniform(0.2, 5.0, size=40).astype(np.float32)
    alphas = np.array([0.3, 30.0, 45.0, 45.0, 90.0, 200.0, 3000.0])
    Y = X[:, :6] @ rng.normal(size=(6, len(alphas))) + rng.normal(size=(150, len(alphas)))
    monkeypatch.setattr(blockwise_fit, "PCG_MAX_ITER", max_iter)
    factors = []
    real = scipy.linalg.cho_factor
    monkeypatch.setattr(scipy.linalg, "cho_factor", lambda *a, **k: factors.append(1) or real(*a, **k))
    ridge = RidgeBaseline(alphas).fit(RowView(X, rows=np.arange(150)), Y)
    # groups {0.3}, {30, 45, 90, 200} (one factor), {3000}; out of iterations: + 4 direct solves
    assert len(factors) == (3 if max_iter else 7)
    for t, alpha in enumerate(alphas):
        expected = Ridge(alpha=alpha).fit(X.astype(np.float64), Y[:, t])
        np.testing.assert_allclose(ridge.coef_[t], expected.coef_, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(ridge.intercept_[t], expected.intercept_, rtol=1e-9, atol=1e-11)

def test_streamed_stacked_base_blends_the_same_members_as_in_memory(monkeypatch):
    """On a streamed matrix the stack's kNN projects block by block (IncrementalPCA): its
    predictions agree with the base it would fit in memory to the precision of that PCA."""
    from benchmark.models.residual import fit_stacked_base

    rng = np.random.default_rng(5)
    X = rng.normal(size=(90, 12)).astype(np.float32)
    Y = np.stack([X[:, 0] - X[:, 1], np.sign(X[:, 2] * X[:, 3])], axis=1) + 0.1 * rng.normal(size=(90, 2))
    monkeypatch.setattr(rows_module, "BLOCK_BYTES", 4 * 12 * 16)  # 16-row blocks
    streamed, oof = fit_stacked_base(RowView(X, rows=np.arange(90)), Y, seed=4)
    assert oof.shape == Y.shape and np.all((streamed.weight >= 0) & (streamed.weight <= 1))
    assert streamed.knn.pca_components_.shape == (10, 12)
    in_memory, _ = fit_stacked_base(X, Y, seed=4)
    np.testing.assert_allclose(streamed.weight, in_memory.weight, atol=0.02)
    np.testing.assert_allclose(streamed.predict(X[:20]), in_memory.predict(X[:20]), atol=0.02)
