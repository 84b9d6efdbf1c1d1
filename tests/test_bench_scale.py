"""scripts/bench_scale.py's memory limit is real: a process over it is OOM-killed and reported."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CGROUP = Path("/sys/fs/cgroup/memory")


def _bench():
    sys.path.insert(0, str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location("bench_scale", REPO / "scripts" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (CGROUP / "memory.limit_in_bytes").exists() or not os.access(CGROUP, os.W_OK),
                    reason="needs a writable cgroup v1 memory controller (root)")
def test_a_step_is_measured_under_its_limit_and_killed_above_it(tmp_path):
    bench = _bench()
    limit = 160 * 2**20
    small = bench.run_limited("small", [sys.executable, "-c", "b = bytearray(40 * 2**20)"], tmp_path, dict(os.environ),
                              limit, tmp_path / "small.log")
    assert small["rc"] == 0 and small["oom_kills"] == 0 and small["limit_mib"] == 160
    big = bench.run_limited("big", [sys.executable, "-c", "b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
                            tmp_path, dict(os.environ), limit, tmp_path / "big.log")
    assert big["rc"] != 0 and big["oom_kills"] >= 1
    assert not any(p.name.startswith(f"genebench-scale-{os.getpid()}") for p in CGROUP.iterdir())  # groups removed


def test_the_fit_grid_matrix_is_seeded_and_its_fit_times_each_phase(tmp_path):
    """`--fit-grid`'s matrix is the same for the same shape, and its child fits every row with one
    epoch and reports where the time went: the base, the tokens, the epoch."""
    import argparse
    import json

    import numpy as np

    bench = _bench()
    path, again = tmp_path / "m.npy", tmp_path / "again.npy"
    bench.write_matrix(path, 240, 130)
    bench.write_matrix(again, 240, 130)
    X = np.load(path)
    assert X.shape == (240, 130) and X.dtype == np.float32
    assert np.array_equal(X, np.load(again))
    # low rank plus noise: the programmes explain much more than the noise's share of variance
    top = np.linalg.svd(X - X.mean(axis=0), compute_uv=False)[: bench.GRID_LATENTS]
    assert (top ** 2).sum() / (np.linalg.norm(X - X.mean(axis=0)) ** 2) > 0.5
    result = tmp_path / "fit.json"
    args = argparse.Namespace(arch="attention_lstm", matrix=path, result=result)
    cell = bench.fit_one(args)
    json.dumps(cell)  # what the child writes
    assert (cell["samples"], cell["features"], cell["targets"], cell["streamed"]) == (240, 80, 50, False)
    assert cell["epochs_trained"] == 1 and cell["training_rows"] == 240 - 36
    assert set(cell["phases_s"]) == {"preprocessing", "base", "tokens", "network_build", "epochs",
                                     "early_stopping_rmse", "other", "base_ridge", "base_knn_fit", "base_knn_oof"}
    assert cell["phases_s"]["base"] > 0 and cell["phases_s"]["epochs"] > 0
    named = sum(cell["phases_s"][k] for k in ("preprocessing", "base", "tokens", "network_build", "epochs"))
    assert abs(named + cell["phases_s"]["other"] - cell["fit_s"]) < 0.05
