"""Scale runs: genebench at D-GEX sizes on one machine, and deep-model throughput on a GPU.

    python scripts/bench_scale.py --pipeline [--samples 100000 --genes 4000] [--limit-gb 2] [--out DIR]
    python scripts/bench_scale.py --gpu-probe [--out DIR]      # samples/s per deep architecture
    python scripts/bench_scale.py --fit-grid [--grid-samples 1000,10000,100000 --grid-genes 1000,10000] [--out DIR]

`--pipeline` makes a fresh project in `--workdir` (git + DVC, the repository's params.yaml
with `split.folds: 3` (1 tuning fold, 2 scored: the issue's 2 CV fits; genebench refuses
`split.folds: 2`, which would leave one scored fold), `split.repeats: --repeats` (1),
`training.max_epochs: 2`, and `--stream-above-mb` if given) and runs, each as its own process in its
own cgroup v1 memory group limited to `--limit-gb` (memory.limit_in_bytes; the pid is
written to cgroup.procs before the command is exec'd): `genebench data synth` (a `--format`
file, parquet by default), `data import`, `prepare`, and `evaluate --task multi` for the `--evaluate` architectures (ridge and dnn). Per step
it records the wall time, the exit code, the group's peak charge
(memory.max_usage_in_bytes: anonymous memory plus the page cache the process brought in,
which the kernel reclaims at the limit), the peak anonymous memory (`rss` of memory.stat,
sampled every 0.2 s), memory.failcnt (times the charge met the limit: cache reclaim, not
failure) and the OOM kills (memory.oom_control). Writes `scale-<samples>x<genes>.json`.
`--peaks` runs each evaluate under scripts/memory_peaks.py, which writes every new RSS peak
and its genebench frames to the step's log as it happens (a step killed at the limit included).
Needs root and a cgroup v1 memory controller (`mount | grep cgroup`).

`--fit-grid` measures how one fit's time and peak memory grow with samples and genes: for each
`--grid-samples` x `--grid-genes` shape it writes a seeded low-rank-plus-noise float32 matrix
(`expression.npy` of that shape: 20 latent programmes read by every gene, plus noise), then,
for each `--archs` architecture (dnn and attention_lstm by default), runs one child process
(`--fit-one`) in its own cgroup v1 memory group (`--limit-gb`) that fits
`make_regressor(arch, None, params)` with params.yaml's defaults and `training.max_epochs: 1`
on every row: the targets are the first `task.top_k` columns, the features the rest, a
`RowView` of the memory-mapped file (read in blocks) above `data.stream_above_mb`, as
`load_task` gives them, else an array. The child times the phases of that fit (the in-fold
preprocessing, the base, the tokens' gene tree, the epoch with its early-stopping RMSE) by
wrapping those functions; the parent records its wall time, peak anonymous memory and OOM
kills. Writes `scale-grid.json` under `--out`.

`--gpu-probe` builds each deep architecture with genebench's own Keras builders
(`benchmark.models.architectures.build_model`, hyperparameters `models.<arch>.defaults`
of params.yaml) at the shape of a `--samples` x `--genes` matrix (features = genes - top_k,
targets = task.top_k) and times Keras's `fit` on random float32 data held in memory
(not genebench's tf.data input: this isolates the model's own cost). It runs on whatever
Keras backend `KERAS_BACKEND` names (TensorFlow by default, `torch` on a machine without
TensorFlow), on the GPU the backend sees or on the CPU. For each architecture and batch
size: the first fit of a few batches (build, trace) is timed apart, then fits of more and
more batches until one takes at least `--budget-s` / 2 seconds; samples/s is that fit's
batches x batch size / its wall time. Writes `throughput.json` under `--out`.

Needs only numpy, PyYAML and Keras 3 with one backend: it reads params.yaml with PyYAML and
imports nothing of genebench but the model builders, so it runs where MLflow, Optuna and
TensorFlow are not installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_pruning import _cpu as _cpu_name  # noqa: E402  (scripts/ is on sys.path: it holds this file)

DEEP_ARCHS = ("dnn", "lstm", "gru", "attention_lstm", "attention_gru")


def _accelerator(backend: str) -> str:
    """The device Keras trains on: the GPU's name, or 'CPU (<model>, N cores)'."""
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    elif backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if gpus:
            return f"{getattr(gpus[0], 'device_kind', 'GPU')} (jax {jax.__version__})"
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"{details.get('device_name', gpus[0].name)} (TensorFlow {tf.__version__})"
    return f"CPU ({_cpu_name()}, {os.cpu_count()} cores visible)"


def _timed_fit(model, X, Y, batch_size: int, batches: int) -> float:
    n = batches * batch_size
    started = time.perf_counter()
    model.fit(X[:n], Y[:n], batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - started


def gpu_probe(args) -> dict:
    backend = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import numpy as np
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    top_k = int(params["task"]["top_k"])
    n_features, n_targets = args.genes - top_k, top_k
    import keras

    from benchmark.models.architectures import build_model

    device = _accelerator(keras.backend.backend())
    print(f"keras {keras.__version__} on {keras.backend.backend()}: {device}", flush=True)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    X = rng.standard_normal((args.samples, n_features), dtype=np.float32)
    Y = rng.standard_normal((args.samples, n_targets), dtype=np.float32)
    print(f"random data {args.samples} x {n_features} features, {n_targets} targets in memory "
          f"({X.nbytes / 2**30:.2f} GiB, {time.perf_counter() - started:.1f} s)", flush=True)
    rows = []
    for arch in args.archs:
        hp = {"learning_rate": params["training"]["learning_rate"], **params["models"][arch]["defaults"]}
        for batch_size in args.batch_sizes:
            keras.utils.set_random_seed(0)
            model = build_model(arch, hp, n_features, n_targets)
            first = _timed_fit(model, X, Y, batch_size, 2)
            batches = 4
            while True:
                seconds = _timed_fit(model, X, Y, batch_size, batches)
                if seconds >= args.budget_s / 2 or (2 * batches) * batch_size > args.samples:
                    break
                batches *= 2
            row = {"arch": arch, "batch_size": batch_size, "params": int(model.count_params()),
                   "first_fit_s": round(first, 2), "timed_batches": batches, "timed_s": round(seconds, 3),
                   "samples_per_s": round(batches * batch_size / seconds, 1)}
            rows.append(row)
            print(f"{arch:15s} batch {batch_size:5d}: {row['samples_per_s']:10.1f} samples/s "
                  f"({batches} batches in {seconds:.2f} s; first fit {first:.2f} s; {row['params']} weights)",
                  flush=True)
    return {
        "what": "Keras fit throughput of genebench's deep architectures (models.<arch>.defaults), random data in memory",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "device": device,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "python": platform.python_version(),
        "shape": {"samples": args.samples, "genes": args.genes, "features": n_features, "targets": n_targets},
        "budget_s": args.budget_s,
        "results": rows,
    }


CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def _read_cgroup(group: Path, name: str) -> str:
    return (group / name).read_text().strip()


def _memory_stat(group: Path) -> dict[str, int]:
    return {key: int(value) for key, value in
            (line.split() for line in _read_cgroup(group, "memory.stat").splitlines())}


def run_limited(name: str, cmd: list[str], cwd: Path, env: dict, limit_bytes: int, log: Path) -> dict:
    """Run `cmd` in a fresh memory cgroup limited to `limit_bytes`; what it used and how long."""
    import subprocess
    import threading

    group = CGROUP_ROOT / f"genebench-scale-{os.getpid()}-{name}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
        swap_limit = group / "memory.memsw.limit_in_bytes"
        if swap_limit.exists():  # no swapping out of the limit either
            swap_limit.write_text(str(limit_bytes))
        peak_rss = 0
        done = threading.Event()

        def sample():
            nonlocal peak_rss
            while not done.wait(0.2):
                peak_rss = max(peak_rss, _memory_stat(group).get("rss", 0))

        # The shell joins the group, then execs the command: every byte it allocates is charged.
        wrapped = ["sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh", *cmd]
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        with open(log, "w") as out:
            rc = subprocess.run(wrapped, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        oom = dict(line.split() for line in _read_cgroup(group, "memory.oom_control").splitlines())
        result = {
            "step": name, "command": " ".join(cmd), "rc": rc, "wall_s": round(seconds, 1),
            "limit_mib": limit_bytes // 2**20,
            "peak_charge_mib": round(int(_read_cgroup(group, "memory.max_usage_in_bytes")) / 2**20),
            "peak_rss_mib": round(peak_rss / 2**20),
            "failcnt": int(_read_cgroup(group, "memory.failcnt")),
            "oom_kills": int(oom.get("oom_kill", 0)),
        }
    finally:
        group.rmdir()
    print(f"{name:16s} rc {result['rc']}  {result['wall_s']:8.1f} s  peak charge {result['peak_charge_mib']:5d} MiB  "
          f"peak rss {result['peak_rss_mib']:5d} MiB  failcnt {result['failcnt']}  oom kills {result['oom_kills']}",
          flush=True)
    return result


def pipeline(args) -> dict:
    import shutil
    import subprocess

    import yaml

    load_start = os.getloadavg()
    work = args.workdir / f"{args.samples}x{args.genes}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}", DVC_NO_ANALYTICS="1")
    for var in ("GENEBENCH_ROOT", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=work, check=True, env=env)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"] = {"scale": {"transform": "none"}}
    # The issue asks for split.folds 2; the protocol keeps tuning's fold apart from the
    # scored ones and needs two of those (config refuses 2), so 3 folds: 2 scored CV fits.
    params["split"]["folds"] = 3
    params["split"]["repeats"] = args.repeats
    params["training"]["max_epochs"] = 2
    if args.stream_above_mb is not None:
        params["data"]["stream_above_mb"] = args.stream_above_mb
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    matrix = args.workdir / f"synthetic-{args.samples}x{args.genes}.{args.format}"
    genebench = [sys.executable, "-m", "benchmark"]
    # --peaks: each evaluate under scripts/memory_peaks.py, its climb in the step's log as it happens
    peaks = [sys.executable, str(REPO / "scripts" / "memory_peaks.py")]
    if args.peaks:
        env.update(MEMORY_PEAKS_LIVE="1", MEMORY_PEAKS_ALL="1")
    steps = [
        ("synth", [*genebench, "data", "synth", str(matrix), "--samples", str(args.samples),
                   "--genes", str(args.genes), "--seed", "0"]),
        ("import", [*genebench, "data", "import", str(matrix), "--name", "scale"]),
        ("prepare", [*genebench, "prepare", "--dataset", "scale"]),
        *[(f"evaluate-{arch}", [*(peaks if args.peaks else genebench), "evaluate", "--dataset", "scale", "--task",
                                "multi", "--arch", arch])
          for arch in args.evaluate],
    ]
    limit = int(args.limit_gb * 2**30)
    results = []
    partial = args.out / f"scale-{args.samples}x{args.genes}.partial.json"
    args.out.mkdir(parents=True, exist_ok=True)
    for name, cmd in steps:
        result = run_limited(name, cmd, work, env, limit, args.workdir / f"{work.name}-{name}.log")
        results.append(result)
        partial.write_text(json.dumps(results, indent=2) + "\n")  # what a long run has done so far
        if result["rc"] != 0:
            print((args.workdir / f"{work.name}-{name}.log").read_text()[-3000:])
            break
    metrics = {}
    for arch in args.evaluate:
        path = work / "metrics" / "scale" / "multi" / f"{arch}.json"
        if path.exists():
            doc = json.loads(path.read_text())
            metrics[arch] = {"cv_rmse": doc["cv"]["rmse"]["mean"], "test_rmse": doc["test"]["rmse"],
                             "test_r2": doc["test"]["r2"]}
    summary = json.loads((work / "artifacts" / "prepared" / "scale" / "summary.json").read_text()) \
        if (work / "artifacts" / "prepared" / "scale" / "summary.json").exists() else {}
    sizes = {p.name: p.stat().st_size for p in [matrix, work / "data" / "scale" / "expression.npy"] if p.exists()}
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        matrix.unlink(missing_ok=True)
    partial.unlink(missing_ok=True)
    return {
        "what": "genebench data synth / import / prepare / evaluate (multi) at scale, each process in a cgroup v1 "
                "memory group",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(), "cpu": _cpu_name(), "cores": os.cpu_count(),
        "load_average": {"start": load_start, "end": os.getloadavg()},  # 1, 5, 15 min: other agents' work
        "shape": {"samples": args.samples, "genes": args.genes},
        "format": args.format,
        "params": {"split.folds": 3, "split.repeats": args.repeats, "training.max_epochs": 2,
                   "training.base": params["training"].get("base"), "tuning.folds": params["tuning"]["folds"],
                   "training.batch_size": params["training"]["batch_size"],
                   "data.stream_above_mb": params["data"].get("stream_above_mb")},
        "prepared": {k: summary.get(k) for k in ("n_dev", "n_test", "tasks")},
        "file_bytes": sizes,
        "steps": results,
        "metrics": metrics,
    }


GRID_LATENTS = 20


def write_matrix(path: Path, samples: int, genes: int, seed: int = 0) -> None:
    """A seeded (samples, genes) float32 `.npy`: `GRID_LATENTS` programmes read by every gene, plus noise.

    Written block by block through a memory map, so a 4 GB matrix never sits in memory."""
    import numpy as np

    rng = np.random.default_rng(seed)
    loadings = rng.standard_normal((GRID_LATENTS, genes)).astype(np.float32) / np.sqrt(GRID_LATENTS)
    out = np.lib.format.open_memmap(path.with_suffix(".partial.npy"), mode="w+", dtype=np.float32,
                                    shape=(samples, genes))
    block = max(1, (64 * 2**20) // (4 * genes))
    for start in range(0, samples, block):
        stop = min(samples, start + block)
        latents = rng.standard_normal((stop - start, GRID_LATENTS)).astype(np.float32)
        out[start:stop] = latents @ loadings + rng.standard_normal((stop - start, genes), dtype=np.float32)
    out.flush()
    del out
    path.with_suffix(".partial.npy").rename(path)


def fit_one(args) -> dict:
    """One fit of `--arch` on the matrix `--matrix`, every phase timed (the `--fit-grid` child)."""
    import resource

    import numpy as np

    from benchmark.config import load_config
    from benchmark.data.rows import RowView
    from benchmark.models import assembly, baselines, fit_loop, preprocessing, residual
    from benchmark.training import make_regressor

    phases: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - started
        return wrapper

    original_stopping = fit_loop.stopping_rmse
    patches = [(fit_loop, "fit_base", timed("base", fit_loop.fit_base)),
               (fit_loop, "fit_token_assignment", timed("tokens", fit_loop.fit_token_assignment)),
               (fit_loop, "run_fit_loop", timed("epochs", fit_loop.run_fit_loop)),
               (fit_loop, "stopping_rmse", lambda *a, **k: timed("early_stopping_rmse", original_stopping(*a, **k))),
               (preprocessing.FoldPreprocessor, "fit", timed("preprocessing", preprocessing.FoldPreprocessor.fit)),
               (assembly.NetworkAssembly, "ready", timed("network_build", assembly.NetworkAssembly.ready)),
               # inside the base (training.base: stack): the ridge with its out-of-fold
               # predictions, the kNN's fit (PCA, neighbours, k by leave-one-out), its out-of-fold
               (residual, "fit_ridge_base", timed("base_ridge", residual.fit_ridge_base)),
               (baselines.KnnBaseline, "fit", timed("base_knn_fit", baselines.KnnBaseline.fit)),
               (residual, "leave_one_out_predictions",
                timed("base_knn_oof", residual.leave_one_out_predictions))]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    params = load_config(REPO / "params.yaml", root=REPO).params
    training = params.training.model_copy(update={"max_epochs": 1, "patience": 2})
    params = params.model_copy(update={"training": training})
    top_k = int(params.task.top_k)
    matrix = np.load(args.matrix, mmap_mode="r")
    n, genes = matrix.shape
    rows = np.arange(n, dtype=np.int64)
    Y = np.ascontiguousarray(matrix[:, :top_k])
    streamed = n * (genes - top_k) * 4 > params.data.stream_above_mb * 2**20
    X = RowView(matrix, rows, np.arange(top_k, genes)) if streamed else np.ascontiguousarray(matrix[:, top_k:])
    regressor = make_regressor(args.arch, None, params)
    from benchmark.models.tensorflow_setup import import_keras

    started = time.perf_counter()
    import_keras()  # timed apart: a process pays it once, not once per fit
    import_s = time.perf_counter() - started
    started = time.perf_counter()
    try:
        for owner, name, wrapper in patches:
            setattr(owner, name, wrapper)
        regressor.fit(X, Y)
    finally:  # the functions as they were (a test calls this in its own process)
        for owner, name, original in originals:
            setattr(owner, name, original)
    fit_s = time.perf_counter() - started
    n_stop = min(max(int(round(training.validation_fraction * n)), 1), n - 1)
    epoch_s = phases["epochs"] - phases.get("early_stopping_rmse", 0.0)
    phases["other"] = fit_s - sum(phases[k] for k in ("preprocessing", "base", "tokens", "network_build", "epochs")
                                  if k in phases)  # seeding, the tf.data pipeline, the standardised view
    return {
        "arch": args.arch, "samples": n, "genes": genes, "features": genes - top_k, "targets": top_k,
        "streamed": bool(streamed), "fit_s": round(fit_s, 2), "import_tensorflow_s": round(import_s, 2),
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "epochs_trained": int(regressor.epochs_trained), "training_rows": n - n_stop,
        "epoch_samples_per_s": round((n - n_stop) * max(regressor.epochs_trained, 1) / epoch_s, 1),
        "maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "batch_size": regressor.batch_size, "base": training.base,
        "hp": {k: v for k, v in regressor.hp.items() if k in ("layers", "units", "steps", "token_units", "tokens")},
    }


def fit_grid(args) -> dict:
    import subprocess

    load_start = os.getloadavg()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    limit = int(args.limit_gb * 2**30)
    partial = args.out / "scale-grid.partial.json"
    cells = []
    for genes in args.grid_genes:
        for samples in args.grid_samples:
            matrix = args.workdir / f"grid-{samples}x{genes}.npy"
            started = time.perf_counter()
            write_matrix(matrix, samples, genes)
            print(f"{samples} x {genes}: matrix written in {time.perf_counter() - started:.1f} s", flush=True)
            for arch in args.archs:
                name = f"fit-{arch}-{samples}x{genes}"
                result_path = args.workdir / f"{name}.json"
                result_path.unlink(missing_ok=True)
                cmd = [sys.executable, str(Path(__file__).resolve()), "--fit-one", "--arch", arch,
                       "--matrix", str(matrix), "--result", str(result_path)]
                run = run_limited(name, cmd, REPO, env, limit, args.workdir / f"{name}.log")
                cell = {**(json.loads(result_path.read_text()) if result_path.exists() else
                           {"arch": arch, "samples": samples, "genes": genes}), "process": run}
                if run["rc"] != 0:
                    print((args.workdir / f"{name}.log").read_text()[-3000:])
                cells.append(cell)
                partial.write_text(json.dumps(cells, indent=2) + "\n")
            matrix.unlink()
    partial.unlink(missing_ok=True)
    return {
        "what": "one fit (training.max_epochs 1) of each architecture at its params.yaml defaults on every row of "
                "a low-rank-plus-noise matrix, each process in a cgroup v1 memory group",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(), "cpu": _cpu_name(), "cores": os.cpu_count(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "limit_gib": args.limit_gb,
        "cells": cells,
        "steps": [cell["process"] for cell in cells],
    }


def grid_table(result: dict) -> str:
    """`--fit-grid`'s cells as a markdown table: time per phase, samples/s, peak memory."""
    lines = ["| samples x genes | arch | streamed | fit | base (ridge / kNN fit / kNN out-of-fold) | tokens "
             "| epoch (samples/s) | early-stopping RMSE | peak anonymous memory | exit |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for cell in result["cells"]:
        run, ph = cell["process"], cell.get("phases_s", {})
        if "fit_s" not in cell:
            lines.append(f"| {cell['samples']:,} x {cell['genes']:,} | {cell['arch']} | | | | | | | "
                         f"{run['peak_rss_mib']:,} MiB | {run['rc']} (OOM kills {run['oom_kills']}) |")
            continue
        base = (f"{ph['base']:.1f} s ({ph.get('base_ridge', 0):.1f} / {ph.get('base_knn_fit', 0):.1f} / "
                f"{ph.get('base_knn_oof', 0):.1f})")
        tokens = f"{ph['tokens']:.1f} s" if "tokens" in ph else "-"
        epoch = ph["epochs"] - ph.get("early_stopping_rmse", 0.0)
        lines.append(f"| {cell['samples']:,} x {cell['genes']:,} | {cell['arch']} | {'yes' if cell['streamed'] else 'no'} "
                     f"| {cell['fit_s']:.1f} s | {base} | {tokens} | {epoch:.1f} s ({cell['epoch_samples_per_s']:,.0f}) "
                     f"| {ph.get('early_stopping_rmse', 0):.1f} s | {run['peak_rss_mib']:,} MiB | {run['rc']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--gpu-probe", action="store_true", help="samples/s per deep architecture (any backend)")
    mode.add_argument("--pipeline", action="store_true", help="synth, import, prepare, evaluate under a memory limit")
    mode.add_argument("--fit-grid", action="store_true", help="one fit per shape and architecture under a memory limit")
    mode.add_argument("--fit-one", action="store_true", help=argparse.SUPPRESS)  # --fit-grid's child
    parser.add_argument("--grid-samples", type=lambda s: [int(v) for v in s.split(",")], default=[1000, 10000, 100000])
    parser.add_argument("--grid-genes", type=lambda s: [int(v) for v in s.split(",")], default=[1000, 10000])
    parser.add_argument("--arch", help="--fit-one: the architecture")
    parser.add_argument("--matrix", type=Path, help="--fit-one: the .npy matrix")
    parser.add_argument("--result", type=Path, help="--fit-one: where to write its JSON")
    parser.add_argument("--limit-gb", type=float, default=2.0, help="--pipeline: memory limit of each step's cgroup")
    parser.add_argument("--evaluate", type=lambda s: s.split(","), default=["ridge", "dnn"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/genebench-scale"))
    parser.add_argument("--format", default="parquet", choices=["parquet", "h5ad", "csv", "tsv"],
                        help="--pipeline: the file data synth writes and data import reads")
    parser.add_argument("--keep", action="store_true", help="--pipeline: keep the project and the matrix")
    parser.add_argument("--peaks", action="store_true",
                        help="--pipeline: run each evaluate under scripts/memory_peaks.py (its log: the RSS climb)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="--pipeline: split.repeats (1: the 2 scored CV fits; memory does not depend on it)")
    parser.add_argument("--stream-above-mb", type=float, default=None,
                        help="--pipeline: data.stream_above_mb (default params.yaml's; lower streams a small matrix)")
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=4_000)
    parser.add_argument("--archs", type=lambda s: s.split(","), default=None,
                        help="--gpu-probe: every deep architecture by default; --fit-grid: dnn,attention_lstm")
    parser.add_argument("--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=[64, 512])
    parser.add_argument("--budget-s", type=float, default=8.0, help="about this many seconds per timed fit x 2")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "results")))
    args = parser.parse_args(argv)
    if args.fit_one:
        args.result.write_text(json.dumps(fit_one(args), indent=2) + "\n")
        return 0
    if args.fit_grid:
        args.archs = args.archs or ["dnn", "attention_lstm"]
        result = fit_grid(args)
        name = "scale-grid.json"
        print(grid_table(result))
    elif args.gpu_probe:
        args.archs = args.archs or list(DEEP_ARCHS)
        result = gpu_probe(args)
        name = f"throughput-{result['backend']}.json"
    else:
        result = pipeline(args)
        name = f"scale-{args.samples}x{args.genes}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / name}")
    failed = [step for step in result.get("steps", []) if step["rc"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
