"""Every reader gives the same canonical bytes for the same matrix; `data synth` output is
read back exactly and carries the linear structure it promises."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from benchmark.data.canonical import GENES_FILE, MATRIX_FILE, SAMPLES_FILE, Dataset, canonical_bytes
from benchmark.data.readers import read_matrix
from benchmark.data.synthetic import make_synthetic, synth
from benchmark.errors import UserError

GENES = ["TP53", "GAPDH", "ACTB", "MYC", "CD3E"]
SAMPLES = ["s1", "s2", "s3", "s4", "s5", "s6", "s7"]


@pytest.fixture(scope="module")
def expected() -> Dataset:
    rng = np.random.default_rng(7)
    # Arbitrary float32 bit patterns (not round decimals), so any precision loss shows.
    X = (rng.gamma(2.0, 1.5, size=(len(SAMPLES), len(GENES)))).astype(np.float32)
    X[0, 0] = 0.0
    return Dataset(X=X, genes=list(GENES), samples=list(SAMPLES))


def _text(v: np.float32) -> str:
    return np.format_float_positional(v, unique=True, trim="-")


def _delimited(ds: Dataset, sep: str, genes_as_rows: bool = False, corner: str | None = "sample") -> str:
    rows, cols, M = (ds.genes, ds.samples, ds.X.T) if genes_as_rows else (ds.samples, ds.genes, ds.X)
    header = ([corner] if corner is not None else []) + list(cols)
    lines = [sep.join(header)] + [sep.join([r, *map(_text, M[i])]) for i, r in enumerate(rows)]
    return "\n".join(lines) + "\n"


def assert_same_canonical(got: Dataset, want: Dataset) -> None:
    a, b = canonical_bytes(got), canonical_bytes(want)
    for name in (MATRIX_FILE, GENES_FILE, SAMPLES_FILE):
        assert a[name] == b[name], name
    assert got.X.dtype == np.float32 and got.X.flags.c_contiguous


def test_csv_samples_as_rows(tmp_path, expected):
    path = tmp_path / "m.csv"
    path.write_text(_delimited(expected, ","))
    ds, note = read_matrix(path)
    assert_same_canonical(ds, expected)
    assert "samples as rows" in note


def test_csv_without_corner_cell_defaults_to_samples_as_rows(tmp_path, expected):
    path = tmp_path / "m.csv"
    path.write_text(_delimited(expected, ",", corner=None))
    ds, note = read_matrix(path)
    assert_same_canonical(ds, expected)
    assert "samples as rows" in note and "--transpose" in note


def test_tsv(tmp_path, expected):
    path = tmp_path / "m.tsv"
    path.write_text(_delimited(expected, "\t"))
    assert_same_canonical(read_matrix(path)[0], expected)


def test_gzipped_csv(tmp_path, expected):
    path = tmp_path / "m.csv.gz"
    path.write_bytes(gzip.compress(_delimited(expected, ",").encode()))
    assert_same_canonical(read_matrix(path)[0], expected)


def test_transposed_csv_with_flag(tmp_path, expected):
    path = tmp_path / "m.csv"
    path.write_text(_delimited(expected, ",", genes_as_rows=True, corner="id"))
    ds, note = read_matrix(path, transpose=True)
    assert_same_canonical(ds, expected)
    assert "genes as rows" in note


def test_transposed_csv_detected_from_corner_cell(tmp_path, expected):
    path = tmp_path / "m.csv"
    path.write_text(_delimited(expected, ",", genes_as_rows=True, corner="gene_id"))
    ds, note = read_matrix(path)
    assert_same_canonical(ds, expected)
    assert "genes as rows" in note and "gene_id" in note


def test_byte_order_mark_does_not_hide_the_corner_cell(tmp_path, expected):
    path = tmp_path / "m.csv"
    path.write_text("\ufeff" + _delimited(expected, ",", genes_as_rows=True, corner="gene_id"), encoding="utf-8")
    ds, note = read_matrix(path)
    assert_same_canonical(ds, expected)
    assert "genes as rows" in note


def test_transposed_tsv_detected_from_ensembl_ids(tmp_path, expected):
    ensembl = Dataset(X=expected.X, genes=[f"ENSG{i:011d}" for i in range(len(GENES))], samples=SAMPLES)
    path = tmp_path / "m.tsv"
    path.write_text(_delimited(ensembl, "\t", genes_as_rows=True, corner=""))
    ds, note = read_matrix(path)
    assert_same_canonical(ds, ensembl)
    assert "Ensembl" in note


def test_parquet_with_index(tmp_path, expected):
    import pandas as pd

    path = tmp_path / "m.parquet"
    pd.DataFrame(expected.X, index=pd.Index(SAMPLES, name="sample"), columns=GENES).to_parquet(path)
    assert_same_canonical(read_matrix(path)[0], expected)


def test_parquet_with_id_column_and_transpose(tmp_path, expected):
    import pandas as pd

    frame = pd.DataFrame(expected.X.T, columns=SAMPLES)
    frame.insert(0, "gene", GENES)
    path = tmp_path / "m.parquet"
    frame.to_parquet(path, index=False)
    assert_same_canonical(read_matrix(path, transpose=True)[0], expected)


def _anndata(X, genes=GENES, samples=SAMPLES):
    import anndata
    import pandas as pd

    return anndata.AnnData(X=X, obs=pd.DataFrame(index=list(samples)), var=pd.DataFrame(index=list(genes)))


def test_h5ad_dense(tmp_path, expected):
    path = tmp_path / "m.h5ad"
    _anndata(expected.X.copy()).write_h5ad(path)
    ds, note = read_matrix(path)
    assert_same_canonical(ds, expected)
    assert "used X" in note


def test_h5ad_sparse(tmp_path, expected):
    import scipy.sparse

    path = tmp_path / "m.h5ad"
    _anndata(scipy.sparse.csr_matrix(expected.X)).write_h5ad(path)
    assert_same_canonical(read_matrix(path)[0], expected)


def test_h5ad_uses_raw_when_present(tmp_path, expected):
    """scanpy convention: raw keeps the full log-normalised matrix, X a scaled gene subset."""
    import scipy.sparse

    full = _anndata(scipy.sparse.csr_matrix(expected.X))
    full.raw = full
    scaled = full[:, GENES[:3]].copy()
    scaled.X = (scaled.X.toarray() - 1.0) * 3.0
    path = tmp_path / "m.h5ad"
    scaled.write_h5ad(path)
    ds, note = read_matrix(path)
    assert_same_canonical(ds, expected)
    assert "raw.X" in note and ds.provenance["matrix"] == "raw.X"


def _gct_12(ds: Dataset) -> str:
    lines = ["#1.2", f"{len(ds.genes)}\t{len(ds.samples)}", "\t".join(["Name", "Description", *ds.samples])]
    lines += ["\t".join([g, f"desc of {g}", *map(_text, ds.X[:, j])]) for j, g in enumerate(ds.genes)]
    return "\n".join(lines) + "\n"


def _gct_13(ds: Dataset) -> str:
    row_meta = ["symbol", "chrom"]
    col_meta = {"cell_type": [f"type{i % 2}" for i in range(len(ds.samples))],
                "dose": [str(i * 0.5) for i in range(len(ds.samples))]}
    lines = ["#1.3", f"{len(ds.genes)}\t{len(ds.samples)}\t{len(row_meta)}\t{len(col_meta)}",
             "\t".join(["id", *row_meta, *ds.samples])]
    lines += ["\t".join([name, *["na"] * len(row_meta), *values]) for name, values in col_meta.items()]
    lines += ["\t".join([g, g.lower(), "chr1", *map(_text, ds.X[:, j])]) for j, g in enumerate(ds.genes)]
    return "\n".join(lines) + "\n"


def test_gct_12(tmp_path, expected):
    path = tmp_path / "m.gct"
    path.write_text(_gct_12(expected))
    ds, note = read_matrix(path)
    assert_same_canonical(ds, expected)
    assert "1.2" in note


def test_gct_13_with_row_and_column_metadata(tmp_path, expected):
    path = tmp_path / "m.gct"
    path.write_text(_gct_13(expected))
    ds, note = read_matrix(path)
    assert_same_canonical(ds, expected)
    assert "1.3" in note


def test_gct_row_count_must_match_its_header(tmp_path, expected):
    path = tmp_path / "m.gct"
    path.write_text(_gct_12(expected).replace(f"{len(GENES)}\t", f"{len(GENES) + 1}\t", 1))
    with pytest.raises(UserError, match=r"declares 6 genes but the file has 5"):
        read_matrix(path)


def test_non_numeric_cell_names_sample_and_gene(tmp_path, expected):
    path = tmp_path / "m.csv"
    text = _delimited(expected, ",").splitlines()
    cells = text[3].split(",")
    cells[2] = "high"
    text[3] = ",".join(cells)
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(UserError) as err:
        read_matrix(path)
    message = str(err.value)
    assert "'high'" in message and "sample 's3'" in message and "gene 'GAPDH'" in message and "line 4" in message
    assert "\n" not in message


def test_gct_non_numeric_cell_names_gene_and_sample(tmp_path, expected):
    path = tmp_path / "m.gct"
    path.write_text(_gct_12(expected).replace(_text(expected.X[1, 2]), "x?", 1))
    with pytest.raises(UserError, match=r"'x\?' at gene 'ACTB', sample 's2'"):
        read_matrix(path)


# --- synthetic matrices ---------------------------------------------------------------


@pytest.mark.parametrize("ext", ["csv", "tsv", "parquet", "h5ad", "gct"])
def test_synth_output_reads_back_exactly(tmp_path, ext, capsys):
    out = tmp_path / f"synthetic.{ext}"
    assert synth(out, samples=30, genes=8, seed=3) == 0
    ds, _ = read_matrix(out)
    want, _ = make_synthetic(30, 8, seed=3)
    assert_same_canonical(ds, want)
    truth = json.loads((tmp_path / f"synthetic.{ext}.truth.json").read_text())
    assert truth["rank"] == 5 and truth["seed"] == 3 and 0.9 < truth["r2_ceiling"] <= 1


def test_synth_is_deterministic_for_a_seed(tmp_path, capsys):
    for name, seed in (("a.csv", 1), ("b.csv", 1), ("c.csv", 2)):
        synth(tmp_path / name, samples=20, genes=6, seed=seed)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_synth_structure_is_recoverable_by_a_linear_model():
    """Low noise: ridge from the other genes reaches R^2 > 0.9; the training mean about 0."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    ds, truth = make_synthetic(300, 60, seed=11, rank=5, noise=0.1)
    X = np.asarray(ds.X, dtype=np.float64)
    targets, features = np.arange(10), np.arange(10, 60)
    train, test = np.arange(240), np.arange(240, 300)
    model = Ridge(alpha=1.0).fit(X[np.ix_(train, features)], X[np.ix_(train, targets)])
    r2 = r2_score(X[np.ix_(test, targets)], model.predict(X[np.ix_(test, features)]))
    mean_pred = np.tile(X[np.ix_(train, targets)].mean(axis=0), (len(test), 1))
    r2_mean = r2_score(X[np.ix_(test, targets)], mean_pred)
    assert r2 > 0.9
    assert abs(r2_mean) < 0.1
    assert r2 <= truth.r2_ceiling + 0.02
    assert truth.W.shape == (5, 60) and truth.Z.shape == (300, 5)
    assert ds.X.min() >= 0  # log1p applies


def test_synth_more_noise_lowers_what_a_model_can_reach():
    _, clean = make_synthetic(200, 40, seed=0, noise=0.1)
    _, noisy = make_synthetic(200, 40, seed=0, noise=1.0)
    assert clean.r2_ceiling > 0.98 and 0.4 < noisy.r2_ceiling < 0.6


def test_synth_rejects_an_unknown_extension(tmp_path):
    with pytest.raises(UserError, match="unknown file extension"):
        synth(tmp_path / "m.xlsx", samples=10, genes=5, seed=0)
