"""Bad input to `genebench data import|validate`: exit 2, one line naming the file and the
row/column/key, no traceback, and data/ byte-identical to what it was."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.data.canonical import Dataset, load_dataset, write_dataset
from benchmark.data.synthetic import make_synthetic
from conftest import run_cli, run_tool, tree_digest

# Small enough for a 40 x 5 matrix: 2 targets + 1 feature; 10 held-out samples and 3 folds
# of 10 (the fewest the split allows, validation.MIN_SAMPLES_PER_PART).
SMALL = {"task": {"top_k": 2}, "split": {"folds": 3, "test_size": 0.25}, "tuning": {"folds": 1}}
N_GOOD = 40
GENES = ["G1", "G2", "G3", "G4", "G5"]


def _csv(rows: list[list[str]], header: list[str] | None = None) -> str:
    header = header if header is not None else ["sample", *GENES]
    return "\n".join(",".join(r) for r in [header, *rows]) + "\n"


def _good_rows(n: int = N_GOOD, genes: int = 5) -> list[list[str]]:
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
    "duplicate sample id": ("m.csv", _csv([*_good_rows(N_GOOD - 1), ["s4", *["1"] * 5]]), {},
                            ["m.csv", "duplicate sample id 's4'"]),
    "too few samples": ("m.csv", _csv(_good_rows(5)), {}, ["m.csv", "5 samples", "split.test_size", "split.folds"]),
    # The default split (test_size 0.2, 4 folds) needs 50: 10 held-out, 40 development samples in folds of 10.
    "10 samples": ("m.csv", _csv(_good_rows(10)), {"split": {"test_size": 0.2, "folds": 4}},
                   ["m.csv: 10 samples are too few", "2 held-out samples (split.test_size=0.2)",
                    "CV folds of 2 (8 development samples / split.folds=4)", "at least 10", "at least 50 samples"]),
    "20 samples": ("m.csv", _csv(_good_rows(20)), {"split": {"test_size": 0.2, "folds": 4}},
                   ["m.csv: 20 samples are too few", "4 held-out samples", "CV folds of 4 (16 development samples"]),
    "40 samples": ("m.csv", _csv(_good_rows(40)), {"split": {"test_size": 0.2, "folds": 4}},
                   ["m.csv: 40 samples are too few", "8 held-out samples", "CV folds of 8 (32 development samples"]),
    "49 samples": ("m.csv", _csv(_good_rows(49)), {"split": {"test_size": 0.2, "folds": 4}},
                   ["m.csv: 49 samples are too few", "CV folds of 9 (39 development samples"]),
    "too few samples in a fold only": ("m.csv", _csv(_good_rows(40)), {"split": {"test_size": 0.25, "folds": 4}},
                                       ["m.csv: 40 samples are too few: they leave CV folds of 7"]),
    "genes by samples, ids that do not tell": (
        "m.csv", _csv([[f"X{g}", *(f"{v:.2f}" for v in range(N_GOOD))] for g in range(1, 6)],
                      ["", *(f"P{i}" for i in range(1, N_GOOD + 1))]), {},
        ["m.csv: cannot tell which axis holds the genes", "--transpose", "--no-transpose"]),
    "numbers under an empty first header cell": (
        "m.csv", _csv([[str(i), *r[1:]] for i, r in enumerate(_good_rows())], ["", *GENES]), {},
        ["m.csv: the first header cell is empty", "holds numbers", "--index-column", "--no-index-column"]),
    "a first column of text and numbers": (
        "m.csv", _csv([["x" if i == 3 else r[1], *r[2:]] for i, r in enumerate(_good_rows())], GENES), {},
        ["m.csv: the first column ('G1') mixes text and numbers", "'x' in data row 4", "--index-column"]),
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
    # --force: even where replacing is allowed, bad input leaves the dataset as it was.
    result = small_project.run("data", "import", path.name, "--name", "toy", "--force")
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
    assert f"{N_GOOD} samples x 5 genes" in result.stdout and "samples as rows" in result.stdout
    assert tree_digest(small_project.data_dir) == before
    assert not (small_project.root / "data.dvc").exists()
    assert path.exists()


def test_import_writes_canonical_data_and_tracks_it_with_dvc(small_project):
    _write_input(small_project.root, "m.tsv", _csv(_good_rows()).replace(",", "\t"))
    result = small_project.run("data", "import", "m.tsv", "--name", "toy", "--force")
    assert result.rc == 0, result.stderr
    ds = load_dataset(small_project.data_dir)
    assert ds.shape == (N_GOOD, 5) and ds.genes == GENES and ds.samples[0] == "s1"
    assert ds.X[0, 0] == np.float32(_good_rows()[0][1])
    assert "md5" in (small_project.root / "data.dvc").read_text()
    status = run_tool(small_project.root, "dvc", "status", "data.dvc")
    assert "up to date" in status.stdout, status.stdout


def test_params_errors_are_exit_2_too(small_project):
    small_project.set_params({"task": {"top_k": 0}})
    _write_input(small_project.root, "m.csv", _csv(_good_rows()))
    _assert_one_line_exit_2(small_project.run("data", "validate", "m.csv"), ["params.yaml", "task.top_k"])


def test_synth_then_import_round_trips_through_the_cli(small_project):
    result = small_project.run("data", "synth", "synthetic.parquet", "--samples", "40", "--genes", "8", "--seed", "2")
    assert result.rc == 0, result.stderr
    result = small_project.run("data", "import", "synthetic.parquet", "--name", "toy", "--force")
    assert result.rc == 0, result.stderr
    want, _ = make_synthetic(40, 8, seed=2)
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
    """A sparse h5ad of 40 cells x 5 genes: integer UMI counts, or the same values plus 0.5."""
    import anndata
    import scipy.sparse

    rng = np.random.default_rng(4)
    X = rng.poisson(3.0, size=(N_GOOD, 5)).astype(np.float32) + (0.0 if counts else 0.5)
    adata = anndata.AnnData(X=scipy.sparse.csr_matrix(X))
    adata.obs_names = [f"c{i}" for i in range(N_GOOD)]
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

    result = small_project.run("data", "import", "counts.h5ad", "--name", "toy", "--force")
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


# --- reading decided on evidence: the summary says how ------------------------------------

SYMBOLS = ["TP53", "GAPDH", "ACTB", "MYC", "CD3E"]
ENSEMBL = ["ENSG00000141510", "ENSG00000111640", "ENSG00000075624", "ENSG00000136997", "ENSG00000198851"]


def _values() -> np.ndarray:
    return np.array([[float(v) for v in r[1:]] for r in _good_rows()])


def _layout(kind: str) -> tuple[str, list[str], list[str]]:
    """(file text, genes, samples) of the same 40 x 5 values in one of the layouts users write."""
    X, samples = _values(), [f"cell{i:02d}" for i in range(1, N_GOOD + 1)]
    genes = ENSEMBL if kind == "genes x samples, Ensembl" else SYMBOLS
    if kind == "index column":
        return _csv([[s, *map(str, x)] for s, x in zip(samples, X)], ["sample", *genes]), genes, samples
    if kind == "no index column":  # pandas' to_csv(index=False): the first gene must stay a gene
        generated = [f"sample{i:06d}" for i in range(1, N_GOOD + 1)]
        return _csv([list(map(str, x)) for x in X], genes), genes, generated
    # genes x samples, as R and GEO write them: gene ids down the first column, samples across
    return _csv([[g, *map(str, X[:, j])] for j, g in enumerate(genes)], ["", *samples]), genes, samples


@pytest.mark.parametrize("kind, summary", [
    ("index column", ["read as samples as rows", "column ids are gene symbols, row ids are sample ids",
                      "sample ids from the first column 'sample'"]),
    ("no index column", ["no id column (the first column 'TP53': it holds numbers, so it is gene 'TP53')",
                         "sample ids generated", f"{N_GOOD} samples x 5 genes (sample ids generated"]),
    ("genes x samples, symbols", ["read as genes as rows", "column ids are sample ids, row ids are gene symbols"]),
    ("genes x samples, Ensembl", ["read as genes as rows", "row ids are Ensembl gene ids"]),
])
def test_import_reads_each_layout_right_and_says_how(small_project, kind, summary):
    text, genes, samples = _layout(kind)
    _write_input(small_project.root, "m.csv", text)
    result = small_project.run("data", "import", "m.csv", "--name", "toy", "--force")
    assert result.rc == 0, result.stderr
    for fragment in [f"wrote data/toy/: {N_GOOD} samples x 5 genes", *summary]:
        assert fragment in result.stdout, (fragment, result.stdout)
    ds = load_dataset(small_project.data_dir)
    assert sorted(ds.genes) == sorted(genes) and sorted(ds.samples) == sorted(samples)
    by_sample = {s: i for i, s in enumerate(samples)}
    by_gene = {g: j for j, g in enumerate(genes)}
    want = _values()[[by_sample[s] for s in ds.samples]][:, [by_gene[g] for g in ds.genes]]
    np.testing.assert_array_equal(ds.X, want.astype(np.float32))


def test_the_orientation_flags_decide_where_the_ids_do_not(small_project):
    name, content, _, _ = CASES["genes by samples, ids that do not tell"]
    _write_input(small_project.root, name, content)
    transposed = small_project.run("data", "validate", name, "--transpose")
    assert transposed.rc == 0, transposed.stderr
    assert f"valid: {N_GOOD} samples x 5 genes" in transposed.stdout and "(--transpose)" in transposed.stdout
    # --no-transpose takes the 5 rows as samples: then too few for the split, and said so.
    _assert_one_line_exit_2(small_project.run("data", "validate", name, "--no-transpose"),
                            [f"{name}: 5 samples are too few"])
    _write_input(small_project.root, "n.csv", CASES["numbers under an empty first header cell"][1])
    indexed = small_project.run("data", "validate", "n.csv", "--index-column")
    assert indexed.rc == 0 and f"valid: {N_GOOD} samples x 5 genes" in indexed.stdout, indexed.stderr


# --- import never replaces a dataset without --force ------------------------------------


@pytest.mark.parametrize("name, held", [("toy", "data/toy/ (an imported dataset, 12 samples x 6 genes)"),
                                        ("pbmc68k", "data/pbmc68k/ (name of the bundled pbmc68k, not yet bootstrapped)")])
def test_import_over_an_existing_dataset_needs_force(small_project, name, held):
    _write_input(small_project.root, "m.csv", _csv(_good_rows()))
    before, params = tree_digest(small_project.root / "data"), small_project.params_path.read_text()
    _assert_one_line_exit_2(small_project.run("data", "import", "m.csv", "--name", name),
                            [f"--name {name}: {held} already exists", "--force"])
    assert tree_digest(small_project.root / "data") == before
    assert small_project.params_path.read_text() == params
    assert not (small_project.root / "data.dvc").exists()

    result = small_project.run("data", "import", "m.csv", "--name", name, "--force")
    assert result.rc == 0, result.stderr
    assert f"--force: replaced {held}" in result.stdout
    assert load_dataset(small_project.root / "data" / name).shape == (N_GOOD, 5)


# --- minimum sizes, at validate and at prepare ------------------------------------------


@pytest.mark.parametrize("n, passes", [(10, False), (20, False), (40, False), (49, False), (50, True)])
def test_the_size_rule_is_sklearns_split_with_10_samples_in_each_part(n, passes):
    """The default split: test_size 0.2, 4 folds. The sizes are what prepare's splitters give."""
    from sklearn.model_selection import KFold, train_test_split

    from benchmark.data.validation import MIN_SAMPLES_PER_PART, min_samples, split_sizes

    dev, test = train_test_split(np.arange(n), test_size=0.2, random_state=0)
    smallest = min(len(val) for _, val in KFold(4, shuffle=True, random_state=0).split(dev))
    assert split_sizes(n, 0.2, 4) == (len(test), len(dev), smallest)
    assert MIN_SAMPLES_PER_PART == 10 and min_samples(0.2, 4) == 50
    assert (min(len(test), smallest) >= MIN_SAMPLES_PER_PART) == passes


def test_prepare_refuses_a_dataset_too_small_for_the_split(project):
    project.set_params({"task": {"top_k": 2}, "split": {"test_size": 0.2, "folds": 4}, "tuning": {"folds": 1}})
    rng = np.random.default_rng(3)
    write_dataset(Dataset(X=rng.uniform(0, 3, (40, 6)).astype(np.float32), genes=[f"g{i}" for i in range(6)],
                          samples=[f"c{i:02d}" for i in range(40)]), project.data_dir)
    result = project.run("prepare")
    _assert_one_line_exit_2(result, ["data/toy: 40 samples are too few", "8 held-out samples (split.test_size=0.2)",
                                     "CV folds of 8 (32 development samples / split.folds=4)", "at least 50 samples"])
    assert not (project.root / "artifacts" / "prepared" / "toy").exists()


# --- messages name what the user wrote ------------------------------------------------


def test_a_transform_on_negative_values_names_the_flag_or_the_key(small_project):
    _write_input(small_project.root, "m.csv", _with_cell(6, 4, "-0.5"))
    result = small_project.run("data", "validate", "m.csv", "--transform", "log1p")
    _assert_one_line_exit_2(result, ["m.csv: --transform log1p, but the matrix has negative values",
                                     "sample 's7'", "gene 'G4'"])
    assert "datasets." not in result.stderr  # no internal dataset name
    small_project.set_params({"datasets": {"toy": {"transform": "log1p"}}})
    before = tree_digest(small_project.data_dir)
    _assert_one_line_exit_2(small_project.run("data", "import", "m.csv", "--name", "toy", "--force"),
                            ["m.csv: datasets.toy.transform in params.yaml is log1p, but the matrix has negative values"])
    assert tree_digest(small_project.data_dir) == before
