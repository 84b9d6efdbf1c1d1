"""Every reader gives the same canonical bytes for the same matrix; `data synth` output is
read back exactly and carries the linear structure it promises."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from benchmark.data.canonical import GENES_FILE, MATRIX_FILE, SAMPLES_FILE, Dataset, canonical_bytes
from benchmark.data.readers import open_matrix, read_matrix
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


def test_csv_without_corner_cell_reads_the_first_column_as_sample_ids(tmp_path, expected):
    """R's write.table: the header has one field fewer than the rows, so the rows' first field is their id."""
    path = tmp_path / "m.csv"
    path.write_text(_delimited(expected, ",", corner=None))
    ds, note = read_matrix(path)
    assert_same_canonical(ds, expected)
    assert "samples as rows" in note and "column ids are gene symbols, row ids are sample ids" in note


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


# --- GEO series matrix ----------------------------------------------------------------


def _series_matrix(ds: Dataset, accession: str = "GSE99999") -> str:
    """A GEO series matrix of `ds` as GEO writes it: quoted metadata, then genes x samples."""
    quoted = lambda values: "\t".join(f'"{v}"' for v in values)  # noqa: E731
    lines = [
        '!Series_title\t"A test series"',
        f'!Series_geo_accession\t"{accession}"',
        '!Series_summary\t"an unbalanced quote in metadata must not derail the table',
        "",
        "!Sample_title\t" + quoted(f"{s} title" for s in ds.samples),
        "!Sample_geo_accession\t" + quoted(ds.samples),
        "!Sample_data_processing\t" + quoted("RMA, log2" for _ in ds.samples),
        "!Sample_data_processing\t" + quoted("quantile normalised" for _ in ds.samples),
        "!series_matrix_table_begin",
        '"ID_REF"\t' + quoted(ds.samples),
        *(f'"{g}"\t' + "\t".join(_text(v) for v in ds.X[:, j]) for j, g in enumerate(ds.genes)),
        "!series_matrix_table_end",
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", ["GSE99999_series_matrix.txt", "GSE99999_series_matrix.txt.gz"])
def test_geo_series_matrix_is_detected_by_content_and_read_as_genes_by_samples(tmp_path, expected, name):
    path = tmp_path / name
    text = _series_matrix(expected)
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    ds, note = read_matrix(path)
    assert_same_canonical(ds, expected)  # genes from ID_REF, samples from the header
    assert "GEO series matrix GSE99999" in note and "genes as rows" in note
    assert ds.provenance["series"] == "GSE99999"
    assert ds.provenance["source_processing"] == "RMA, log2 | quantile normalised"


def test_a_plain_txt_table_is_still_tab_separated(tmp_path, expected):
    path = tmp_path / "m.txt"
    path.write_text(_delimited(expected, "\t"))
    ds, note = read_matrix(path)
    assert_same_canonical(ds, expected)
    assert "samples as rows" in note


def test_geo_series_matrix_errors_name_the_file_and_the_place(tmp_path, expected):
    path = tmp_path / "GSE1_series_matrix.txt"
    text = _series_matrix(expected)
    lines = text.splitlines()
    assert lines[13].startswith('"MYC"')  # file line 14: 8 metadata lines, a blank, begin, header, 3 genes
    cells = lines[13].split("\t")
    cells[3] = "high"  # sample s3
    path.write_text("\n".join(lines[:13] + ["\t".join(cells)] + lines[14:]) + "\n")
    with pytest.raises(UserError, match=r"GSE1_series_matrix.txt: non-numeric value 'high' at gene 'MYC', "
                                        r"sample 's3' \(line 14\)"):
        read_matrix(path)
    path.write_text(text.replace("!series_matrix_table_end\n", ""))
    with pytest.raises(UserError, match=r"GSE1_series_matrix.txt: no '!series_matrix_table_end' line.*truncated"):
        read_matrix(path)
    path.write_text(text)
    with pytest.raises(UserError, match="--transpose does not apply to a GEO series matrix"):
        read_matrix(path, transpose=True)
    tsv = tmp_path / "GSE1_series_matrix.tsv"  # not sniffed by extension: say --format geo
    tsv.write_text(text)
    assert_same_canonical(read_matrix(tsv, fmt="geo")[0], expected)


@pytest.mark.parametrize("name, write", [("m.gct", lambda ds: _gct_12(ds)), ("m13.gct", lambda ds: _gct_13(ds)),
                                         ("GSE7_series_matrix.txt", lambda ds: _series_matrix(ds)),
                                         ("GSE7_series_matrix.txt.gz", lambda ds: _series_matrix(ds))])
def test_gct_and_geo_read_in_blocks_give_the_whole_read_canonical_matrix(tmp_path, name, write):
    """Blocks of 3 genes (a file of 23): the same canonical bytes as one block, and as the matrix written;
    a bad cell in a later block is still named by its line."""
    ds, _ = make_synthetic(9, 23, seed=4)
    ds = Dataset(X=ds.X, genes=[f"gene{j:02d}" for j in range(23)], samples=[f"GSM{i}" for i in range(9)])
    path = tmp_path / name
    text = write(ds)
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    source = open_matrix(path, block_rows=3)
    sizes = [len(ids) for ids, _ in source.blocks]
    assert sizes == [3] * 7 + [2] and source.genes_are_rows
    blocked, whole = read_matrix(path, block_rows=3)[0], read_matrix(path, block_rows=1000)[0]
    assert_same_canonical(blocked, whole)
    assert_same_canonical(blocked, ds)
    if name.endswith(".gz"):
        return
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if line.strip('"').startswith("gene20"))
    cells = lines[row].split("\t")
    cells[-1] = "oops"
    path.write_text("\n".join(lines[:row] + ["\t".join(cells)] + lines[row + 1:]) + "\n")
    with pytest.raises(UserError, match=rf"'oops' at gene 'gene20', sample 'GSM8' \(line {row + 1}\)"):
        read_matrix(path, block_rows=3)


# --- 10x Genomics ---------------------------------------------------------------------

# Cells x genes UMI counts; two genes share a symbol, as real annotations do.
TENX_IDS = ["ENSG00000000003", "ENSG00000000005", "ENSG00000000419", "ENSG00000000457"]
TENX_SYMBOLS = ["TSPAN6", "TNMD", "DPM1", "TNMD"]
TENX_BARCODES = ["AAACCTGAGAAACCAT-1", "AAACCTGAGAAACCGC-1", "AAACCTGAGAAACCTA-1"]
TENX_COUNTS = np.array([[0, 3, 1, 0], [2, 0, 0, 5], [1, 1, 0, 7]], dtype=np.float32)


def _write_10x(directory, layout: str = "v3", prefix: str = "", antibody: bool = False):
    """Cell Ranger output: v3 (gzipped, features.tsv with a type column) or v2 (plain, genes.tsv)."""
    import io

    import scipy.io
    import scipy.sparse

    directory.mkdir(parents=True, exist_ok=True)
    counts = TENX_COUNTS.T.astype(np.int64)  # the .mtx holds features x barcodes
    features = [f"{i}\t{s}" + ("\tGene Expression" if layout == "v3" else "") for i, s in zip(TENX_IDS, TENX_SYMBOLS)]
    if antibody:  # a CITE-seq protein: not expression, dropped
        counts = np.vstack([counts, [[40, 12, 3]]])
        features.append("CD3\tCD3_TotalSeqB\tAntibody Capture")
    buf = io.BytesIO()
    scipy.io.mmwrite(buf, scipy.sparse.coo_matrix(counts))
    files = {"matrix.mtx": buf.getvalue(), "barcodes.tsv": ("\n".join(TENX_BARCODES) + "\n").encode(),
             ("features.tsv" if layout == "v3" else "genes.tsv"): ("\n".join(features) + "\n").encode()}
    for name, data in files.items():
        if layout == "v3":
            (directory / f"{prefix}{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / f"{prefix}{name}").write_bytes(data)
    return directory


@pytest.mark.parametrize("layout", ["v3", "v2"])
def test_10x_directory_reads_barcodes_by_gene_ids(tmp_path, layout):
    directory = _write_10x(tmp_path / "filtered_feature_bc_matrix", layout, antibody=layout == "v3")
    ds, note = read_matrix(directory)
    np.testing.assert_array_equal(ds.X, TENX_COUNTS)
    assert ds.X.dtype == np.float32 and ds.X.flags.c_contiguous
    assert ds.genes == TENX_IDS  # ids, not the repeated symbol TNMD; the antibody is not a gene
    assert ds.samples == TENX_BARCODES
    assert f"Cell Ranger {layout}" in note and ds.provenance["format"] == "10x"


def test_10x_matrix_file_picks_one_prefix_of_several(tmp_path):
    directory = _write_10x(tmp_path / "GSE1_RAW", "v3", prefix="GSM1_")
    _write_10x(directory, "v3", prefix="GSM2_")
    with pytest.raises(UserError, match=r"GSE1_RAW: holds 2 10x matrices .*pass one of their matrix files"):
        read_matrix(directory)
    ds, note = read_matrix(directory / "GSM2_matrix.mtx.gz")
    assert ds.genes == TENX_IDS and "prefix 'GSM2_'" in note


def test_10x_layout_problems_are_one_line_errors(tmp_path):
    mixed = _write_10x(tmp_path / "mixed", "v3")
    (mixed / "matrix.mtx.gz").rename(mixed / "matrix.mtx.tmp")
    (mixed / "matrix.mtx").write_bytes(gzip.decompress((mixed / "matrix.mtx.tmp").read_bytes()))
    (mixed / "matrix.mtx.tmp").unlink()
    with pytest.raises(UserError, match=r"mixed: found barcodes.tsv.gz, features.tsv.gz, matrix.mtx but not "
                                        r"matrix.mtx.gz; .*gzip or gunzip the files"):
        read_matrix(mixed)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("hello\n")
    with pytest.raises(UserError, match="plain: no matrix.mtx or matrix.mtx.gz: not a 10x Genomics directory"):
        read_matrix(plain)
    with pytest.raises(UserError, match="plain: is a directory"):
        read_matrix(plain, fmt="csv")
    broken = _write_10x(tmp_path / "broken", "v3")
    data = (broken / "matrix.mtx.gz").read_bytes()
    (broken / "matrix.mtx.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="broken"):
        read_matrix(broken)


# --- read and decompression errors ----------------------------------------------------


@pytest.mark.parametrize("name", ["m.csv.gz", "m.tsv.gz", "m.gct.gz", "GSE1_series_matrix.txt.gz"])
def test_a_truncated_gzip_is_a_one_line_user_error(tmp_path, name):
    # Long enough (3,000 rows) that the break falls in the middle of the table, past what
    # the first look at the header reads.
    rng = np.random.default_rng(2)
    tall = Dataset(X=rng.gamma(2.0, 1.5, size=(3000, 5)).astype(np.float32), genes=list(GENES),
                   samples=[f"s{i}" for i in range(3000)])
    wide = Dataset(X=np.ascontiguousarray(tall.X.T), genes=tall.samples, samples=list(GENES))
    text = {"m.csv.gz": _delimited(tall, ","), "m.tsv.gz": _delimited(tall, "\t"),
            "m.gct.gz": _gct_12(wide), "GSE1_series_matrix.txt.gz": _series_matrix(wide)}[name]
    data = gzip.compress(text.encode())
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as err:
        read_matrix(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "truncated or corrupt" in message and "\n" not in message


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


# --- layout on evidence: id column and orientation --------------------------------------


@pytest.mark.parametrize("genes, samples", [
    (["7157", "2597", "60", "4609", "916"], ["AAACCTGAGAAACCAT-1", "AAACCTGAGAAACCGC-1", "AAACCTGAGAAACCTA-1",
                                             "AAACCTGAGAAACGAG-1", "AAACCTGAGAAACTCA-1", "AAACCTGAGAAAGTGG-1",
                                             "AAACCTGAGAACAACT-1"]),  # Entrez ids, 10x barcodes
    (["Gapdh", "Actb", "H2-Ab1", "Cd3e", "1700001C19Rik"], [f"c{i:04d}" for i in range(1, 8)]),  # mouse symbols
    (["TP53", "GAPDH", "ACTB", "MYC", "CD3E"], [f"GSM10{i}" for i in range(7)]),  # GEO sample accessions
])
def test_genes_as_rows_are_recognised_from_gene_and_sample_ids(tmp_path, expected, genes, samples):
    ds_in = Dataset(X=expected.X, genes=genes, samples=samples)
    path = tmp_path / "m.tsv"
    path.write_text(_delimited(ds_in, "\t", genes_as_rows=True, corner=""))
    index_column = None
    if genes[0].isdigit():  # numbers under an empty header cell: ids or values? The flag says.
        with pytest.raises(UserError, match="holds numbers .*pass --index-column if it holds row ids"):
            read_matrix(path)
        index_column = True
    ds, note = read_matrix(path, index_column=index_column)
    assert_same_canonical(ds, ds_in)
    assert "genes as rows" in note and "column ids are sample ids" in note


def test_a_table_without_id_column_keeps_its_first_gene(tmp_path, expected):
    path = tmp_path / "m.csv"
    lines = [",".join(GENES)] + [",".join(map(_text, row)) for row in expected.X]
    path.write_text("\n".join(lines) + "\n")
    ds, note = read_matrix(path)
    assert ds.genes == GENES and ds.samples == [f"sample{i:06d}" for i in range(1, 8)]
    np.testing.assert_array_equal(ds.X, expected.X)
    assert "no id column" in note and "sample ids generated" in note
    assert ds.provenance["sample_ids"].startswith("generated")
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("TP53,GAPDH\n1.0,2.0\nabc,3.0\n")
    with pytest.raises(UserError, match="mixes text and numbers"):
        read_matrix(mixed)
    ds, _ = read_matrix(mixed, index_column=True, transpose=False)  # the flag decides
    assert ds.samples == ["1.0", "abc"] and ds.genes == ["GAPDH"]


def test_parquet_orientation_comes_from_its_ids_too(tmp_path, expected):
    import pandas as pd

    frame = pd.DataFrame(expected.X.T, columns=SAMPLES)
    frame.insert(0, "id", GENES)
    path = tmp_path / "m.parquet"
    frame.to_parquet(path, index=False)
    ds, note = read_matrix(path)  # no --transpose: gene symbols down, sample ids across
    assert_same_canonical(ds, expected)
    assert "genes as rows" in note
    ambiguous = tmp_path / "a.parquet"
    frame.rename(columns={s: f"X{i}" for i, s in enumerate(SAMPLES)}).to_parquet(ambiguous, index=False)
    with pytest.raises(UserError, match="cannot tell which axis holds the genes.*--transpose"):
        read_matrix(ambiguous)
