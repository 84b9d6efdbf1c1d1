"""`genebench data bootstrap` on a fresh clone of this repository.

The clone holds the committed data.dvc, so these tests check that the bytes bootstrap
writes are exactly the ones recorded there, that the DVC cache holds them afterwards, and
that a mismatch is refused (exit 1) without touching data/.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmark.data.canonical import Dataset, load_dataset, write_dataset
from conftest import REPO, run_cli, run_tool, tree_digest


@pytest.fixture
def clone(tmp_path) -> Path:
    path = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(path)], check=True, capture_output=True)
    assert (path / "data.dvc").exists(), "data.dvc must be committed"
    return path


def test_bootstrap_on_a_fresh_clone_matches_data_dvc_and_fills_the_cache(clone):
    result = run_cli(clone, "data", "bootstrap")
    assert result.rc == 0, result.stderr
    assert result.stderr_lines == [], result.stderr

    ds = load_dataset(clone / "data")
    assert ds.shape == (700, 765) and ds.X.dtype == np.float32
    assert ds.provenance["matrix"] == "raw.X" and "log-normalised" in ds.provenance["values"]

    # An empty cache would make `dvc status` say "not in cache" whatever the bytes.
    status = run_tool(clone, "dvc", "status", "data.dvc")
    assert "up to date" in status.stdout, status.stdout
    assert "changed" not in status.stdout and "not in cache" not in status.stdout
    run_tool(clone, "git", "diff", "--exit-code", "data.dvc")
    assert run_tool(clone, "git", "status", "--porcelain").stdout.strip() == ""

    # The same check does notice other bytes.
    (clone / "data" / "provenance.json").write_text("{}\n")
    status = run_tool(clone, "dvc", "status", "data.dvc")
    assert "modified" in status.stdout, status.stdout


def test_bootstrap_refuses_bytes_that_differ_from_data_dvc(clone):
    pointer = clone / "data.dvc"
    pointer.write_text(re.sub(r"md5: [0-9a-f]{32}\.dir", "md5: " + "0" * 32 + ".dir", pointer.read_text()))
    rng = np.random.default_rng(0)
    write_dataset(Dataset(X=rng.random((3, 2), dtype=np.float32), genes=["a", "b"], samples=["x", "y", "z"],
                          provenance={"source": "earlier import"}), clone / "data")
    before = tree_digest(clone / "data")

    result = run_cli(clone, "data", "bootstrap")

    assert result.rc == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr_lines) == 1, result.stderr
    assert "data.dvc" in result.stderr and "0" * 32 in result.stderr
    assert tree_digest(clone / "data") == before
