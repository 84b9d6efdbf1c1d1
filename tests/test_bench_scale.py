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
