"""Bad input to `genebench data import|validate`: exit 2, one line naming the file and the
row/column/key, no traceback, and data/ byte-identical to what it was."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.data.canonical import Dataset, load_dataset, write_dataset
from benchmark.data.synthetic import make_synthetic
from conftest import run_cli, run_tool, tree_digest

# Small enough for a 10 x 5 matrix: 2 targets + 1 feature, 2 folds.
SMALL = {"task": {"top_k": 2}, "split": {"folds": 3, "test_size": 0.25}, "tuning": {"folds": 1}}
GENES = ["G1", "G2", "G3", "G4", "G5"]


def _csv(rows: list[list[str]], header: list[str] | None = None) -> str:
    header = header if header is not None else ["sample", *GENES]
    return "\n".join(",".join(r) for r in [header, *rows]) + "\n"


def _good_rows(n: int = 10, genes: int = 5) -> list[list[str]]:
    rng = np.random.default_rng(0)
    return [[f"s{i}", *(f"{v:.3f}" for v in rng.uniform(0, 5, genes))] for i in range(1, n + 1)]


def _with_cell(row: int, col: int, value: str) -> str:
    rows = _good_rows()
    rows[row][col] = value
    return _csv(rows)


def _constant_genes() -> str:
    rows = _good_rows()
    for r in rows:  # only G1 and G2 vary; top_k=2 needs 3
        r[3] = r[4] = r[5] = "1.0"
    return _csv(rows)


def _write_corrupt_h5ad(path):
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)


def _write_truncated_parquet(path):
    import pandas as pd

    pd.DataFrame({"sample": ["a", "b"], "G1": [1.0, 2.0]}).to_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_truncated_gzip(path):
    """A gzipped CSV cut short, as an interrupted download leaves it: more rows than one
    read-ahead buffer, so the break falls in the middle of the table."""
    import gzip

    text = _csv([[f"s{i}", *(f"{(i * 7 + g) % 13 / 3:.6f}" for g in range(5))] for i in range(1, 4001)])
    data = gzip.compress(text.encode())
    path.write_bytes(data[: len(data) * 2 // 3])


def _write_gzip_header_only_bytes(path):
    import gzip

    path.write_bytes(gzip.compress(_csv(_good_rows()).encode())[:12])


CASES = {
    # name: (file name, content (text, or a function writing the file), params overrides, message fragments)
    "missing file": ("absent.csv", None, {}, ["absent.csv", "not found"]),
    "empty file": ("m.csv", "", {}, ["m.csv", "empty"]),
    "blank lines only": ("m.csv", "\n\n  \n", {}, ["m.csv", "empty"]),
    "header only": ("m.csv", "sample,G1,G2\n", {}, ["m.csv", "no data rows"]),
    "non-numeric cell": ("m.csv", _with_cell(2, 2, "high"), {}, ["m.csv", "'high'", "sample 's3'", "gene 'G2'"]),
    "NaN cell": ("m.csv", _with_cell(4, 3, "NA"), {}, ["m.csv", "NaN", "sample 's5'", "gene 'G3'"]),
    "infinite cell": ("m.csv", _with_cell(1, 5, "inf"), {}, ["m.csv", "infinite", "sample 's2'", "gene 'G5'"]),
    "duplicate gene id": ("m.csv", _csv(_good_rows(), ["sample", "G1", "G2", "G3", "G2", "G5"]), {},
                          ["m.csv", "duplicate gene id 'G2'"]),
    "duplicate sample id": ("m.csv", _csv([*_good_rows(9), ["s4", *["1"] * 5]]), {},
                            ["m.csv", "duplicate sample id 's4'"]),
    "too few samples": ("m.csv", _csv(_good_rows(5)), {}, ["m.csv", "5 samples", "split.test_size", "split.folds"]),
    "too few variable genes": ("m.csv", _constant_genes(), {}, ["m.csv", "only 2 of 5 genes vary", "task.top_k=2"]),
    "log1p of negatives": ("m.csv", _with_cell(6, 4, "-0.5"), {"datasets": {"toy": {"transform": "log1p"}}},
                           ["m.csv", "log1p", "negative", "sample 's7'", "gene 'G4'"]),
    "ragged row": ("m.csv", _csv(_good_rows()) + "s99,1,2,3,4,5,6,7\n", {}, ["m.csv", "fields"]),
    "corrupt h5ad": ("m.h5ad", _write_corrupt_h5ad, {}, ["m.h5ad", "not a readable h5ad"]),
    "corrupt parquet": ("m.parquet", _write_truncated_parquet, {}, ["m.parquet", "not a readable Parquet"]),
    "unknown extension": ("m.xlsx", "whatever", {}, ["m.xlsx", "unknown file extension"]),
    "truncated gzip": ("m.csv.gz", _write_truncated_gzip, {}, ["m.csv.gz", "truncated or corrupt"]),
    "gzip cut in its header": ("m.csv.gz", _write_gzip_header_only_bytes, {}, ["m.csv.gz", "truncated or corrupt"]),
    "not gzip at all": ("m.tsv.gz", _csv(_good_rows()), {}, ["m.tsv.gz", "truncated or corrupt"]),
    "truncated GEO series matrix": ("GSE1_series_matrix.txt",
                                    "!Series_title\t\"x\"\n!series_matrix_table_begin\n\"ID_REF\"\t\"GSM1\"\n"
                                    "\"g1\"\t1.0\n", {}, ["GSE1_series_matrix.txt", "truncated"]),
    "not a GCT header": ("m.gct", "#2.0\n1\t1\nName\tDescription\ts1\ng\tna\t1\n", {}, ["m.gct", "'#1.2' or '#1.3'"]),
}


@pytest.fixture
def small_project(project):
    """A project whose data/ already holds a valid dataset, which bad input must not touch."""
    project.set_params(SMALL)
    rng = np.random.default_rng(1)
    write_dataset(Dataset(X=rng.uniform(0, 3, (12, 6)).astype(np.float32), genes=[f"g{i}" for i in range(6)],
                          samples=[f"c{i}" for i in range(12)], provenance={"source": "before"}), project.data_dir)
    return project


def _write_input(root, name, content):
    path = root / name
    if callable(content):
        content(path)
    elif content is not None:
        path.write_text(content)
    return path


def _assert_one_line_exit_2(result, fragments):
    assert result.rc == 2, (result.rc, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr_lines) == 1, result.stderr
    line = result.stderr_lines[0]
    assert line.startswith("genebench: error: ")
    for fragment in fragments:
        assert fragment in line, (fragment, line)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_import_exits_2_and_leaves_data_alone(small_project, case):
    name, content, overrides, fragments = CASES[case]
    if overrides:
        small_project.set_params(overrides)
    path = _write_input(small_project.root, name, content)
    before = tree_digest(small_project.data_dir)
    result = small_project.run("data", "import", path.name, "--name", "toy")
    _assert_one_line_exit_2(result, fragments)
    assert tree_digest(small_project.data_dir) == before
    assert not (small_project.root / "data.dvc").exists()


@pytest.mark.parametrize("case", ["non-numeric cell", "corrupt h5ad", "too few variable genes", "truncated gzip"])
def test_bad_validate_exits_2(small_project, case):
    name, content, overrides, fragments = CASES[case]
    path = _write_input(small_project.root, name, content)
    before = tree_digest(small_project.data_dir)
    _assert_one_line_exit_2(small_project.run("data", "validate", path.name), fragments)
    assert tree_digest(small_project.data_dir) == before


def test_validate_prints_a_summary_and_writes_nothing(small_project):
    path = _write_input(small_project.root, "m.csv", _csv(_good_rows()))
    before = tree_digest(small_project.data_dir)
    result = small_project.run("data", "validate", "m.csv")
    assert result.rc == 0, result.stderr
    assert "10 samples x 5 genes" in result.stdout and "samples as rows" in result.stdout
    assert tree_digest(small_project.data_dir) == before
    assert not (small_project.root / "data.dvc").exists()
    assert path.exists()


def test_import_writes_canonical_data_and_tracks_it_with_dvc(small_project):
    _write_input(small_project.root, "m.tsv", _csv(_good_rows()).replace(",", "\t"))
    result = small_project.run("data", "import", "m.tsv", "--name", "toy")
    assert result.rc == 0, result.stderr
    ds = load_dataset(small_project.data_dir)
    assert ds.shape == (10, 5) and ds.genes == GENES and ds.samples[0] == "s1"
    assert ds.X[0, 0] == np.float32(_good_rows()[0][1])
    assert "md5" in (small_project.root / "data.dvc").read_text()
    status = run_tool(small_project.root, "dvc", "status", "data.dvc")
    assert "up to date" in status.stdout, status.stdout


def test_params_errors_are_exit_2_too(small_project):
    small_project.set_params({"task": {"top_k": 0}})
    _write_input(small_project.root, "m.csv", _csv(_good_rows()))
    _assert_one_line_exit_2(small_project.run("data", "validate", "m.csv"), ["params.yaml", "task.top_k"])


def test_synth_then_import_round_trips_through_the_cli(small_project):
    result = small_project.run("data", "synth", "synthetic.parquet", "--samples", "30", "--genes", "8", "--seed", "2")
    assert result.rc == 0, result.stderr
    result = small_project.run("data", "import", "synthetic.parquet", "--name", "toy")
    assert result.rc == 0, result.stderr
    want, _ = make_synthetic(30, 8, seed=2)
    got = load_dataset(small_project.data_dir)
    assert np.array_equal(got.X, want.X) and got.genes == want.genes and got.samples == want.samples


@pytest.mark.parametrize("args, fragment", [
    (["--samples", "0", "--genes", "5"], "--samples"),
    (["--samples", "10", "--genes", "5", "--rank", "9"], "--rank"),
    (["--samples", "10", "--genes", "5", "--noise", "-1"], "--noise"),
])
def test_synth_bad_arguments_exit_2(tmp_path, args, fragment):
    result = run_cli(tmp_path, "data", "synth", "out.csv", *args)
    _assert_one_line_exit_2(result, [fragment])
    assert not (tmp_path / "out.csv").exists()


def _write_raw_counts_h5ad(path, counts: bool = True):
    """A sparse h5ad of 10 cells x 5 genes: integer UMI counts, or the same values plus 0.5."""
    import anndata
    import scipy.sparse

    rng = np.random.default_rng(4)
    X = rng.poisson(3.0, size=(10, 5)).astype(np.float32) + (0.0 if counts else 0.5)
    adata = anndata.AnnData(X=scipy.sparse.csr_matrix(X))
    adata.obs_names = [f"c{i}" for i in range(10)]
    adata.var_names = GENES
    adata.write_h5ad(path)
    return path


def test_raw_counts_with_transform_none_get_a_one_line_note(small_project):
    _write_raw_counts_h5ad(small_project.root / "counts.h5ad")
    result = small_project.run("data", "validate", "counts.h5ad")
    assert result.rc == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if "raw counts" in line]
    assert len(notes) == 1, result.stdout
    assert notes[0].startswith("counts.h5ad: note: every value is a non-negative integer")
    assert "--transform log1p" in notes[0] and "datasets.<name>.transform" in notes[0]
    assert result.stderr_lines == []

    result = small_project.run("data", "import", "counts.h5ad", "--name", "toy")
    assert result.rc == 0, result.stderr
    assert "datasets.toy.transform: log1p in params.yaml" in result.stdout

    # Said only where it applies: log1p asked for, or values that are not integers.
    assert "raw counts" not in small_project.run("data", "validate", "counts.h5ad", "--transform", "log1p").stdout
    _write_raw_counts_h5ad(small_project.root / "scaled.h5ad", counts=False)
    result = small_project.run("data", "validate", "scaled.h5ad")
    assert result.rc == 0 and "raw counts" not in result.stdout


@pytest.mark.parametrize("name", ["bad/name", "-lead", "a b"])
def test_import_rejects_a_dataset_name_that_is_not_a_directory_name(small_project, name):
    _write_input(small_project.root, "m.csv", _csv(_good_rows()))
    before = tree_digest(small_project.root / "data")
    params = small_project.params_path.read_text()
    _assert_one_line_exit_2(small_project.run("data", "import", "m.csv", f"--name={name}"), ["--name", repr(name)])
    assert tree_digest(small_project.root / "data") == before
    assert small_project.params_path.read_text() == params
