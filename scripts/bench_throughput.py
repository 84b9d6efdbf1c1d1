"""Training throughput per deep architecture: genebench's fit against a plain `model.fit`.

    python scripts/bench_throughput.py [--dataset pbmc68k] [--epochs 5] [--repeats 2] [--out results/throughput.md]

For each deep architecture with its `models.<arch>.defaults` and the dataset's `training`
section from params.yaml, on random data of the dataset's multi-task shape (development
samples x feature genes -> top-K targets; throughput does not depend on the values):

- genebench: `Regressor.fit` on the same Regressor again (the first fit built and traced
  the model, as CV's first fold does), all `--epochs` epochs (patience set so that early
  stopping never ends it). Its time includes everything a fold's fit does besides the
  Keras steps: preprocessing, the early-stopping RMSE after every epoch, and, `cold` (the
  fit cache cleared first, as on a new fold), the out-of-fold base and the tokens' gene
  tree; `warm` takes those from the fit cache, as every trial of a study after its first
  does (`benchmark.models.fit_cache`).
- plain: the same Keras model (`build_model` with the same hyperparameters, ensemble size,
  zero start and token assignment) fitted with `model.fit(X_fit, Y_fit, batch_size=...,
  epochs=..., shuffle=True)` on NumPy arrays of the same number of training rows as
  genebench's fit trains on (the rows left after its early-stopping rows), after one
  warm-up epoch that traces it;
- plain + validation: the same, with `validation_data=(X_stop, Y_stop)` on as many rows as
  genebench's early-stopping set: Keras's own way to score a validation set after every
  epoch, the work genebench's early stopping does.

Samples/s = training rows x epochs / seconds, the same training rows for all. Best of
`--repeats` runs, all measured in turn in each; writes a markdown table.
(Before 2026-12-04 the plain fit trained on every development row, 560 where genebench's
fit trains on 476 at pbmc68k's shape: not the same data.)
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmark import DEEP_ARCHS  # noqa: E402
from benchmark.config import load_config  # noqa: E402
from benchmark.models.fit_cache import FIT_CACHE  # noqa: E402
from benchmark.training import make_regressor  # noqa: E402


def _shape(config, dataset: str) -> tuple[int, int, int]:
    """(development samples, feature genes, targets) of the dataset's prepared multi task."""
    prepared = config.root / "artifacts" / "prepared" / dataset
    split = json.loads((prepared / "split.json").read_text())
    task = json.loads((prepared / "multi.json").read_text())
    n_dev = len(split["dev"])
    return n_dev, len(task["features"]), len(task["targets"])


def random_task(n_dev: int, n_features: int, n_targets: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random features and targets of a task's shape (throughput does not depend on the values)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_dev, n_features)).astype(np.float32)
    Y = (X[:, :n_targets] + 0.5 * rng.normal(size=(n_dev, n_targets))).astype(np.float32)
    return X, Y


def measure(params, arch: str, X: np.ndarray, Y: np.ndarray, epochs: int, repeats: int) -> dict:
    from benchmark.models.architectures import build_model, set_token_assignment
    from benchmark.training import seed_everything

    training = params.training.model_copy(update={"max_epochs": epochs, "patience": epochs + 1})
    params = params.model_copy(update={"training": training})
    regressor = make_regressor(arch, None, params)
    regressor.fit(X, Y)  # builds and traces
    n_fit = len(X) - min(max(int(round(training.validation_fraction * len(X))), 1), len(X) - 1)

    seed_everything(training.seed)
    hp = {**regressor.hp, "learning_rate": regressor.learning_rate}
    model = build_model(arch, hp, X.shape[1], Y.shape[1], members=regressor.members,
                        zero_init=training.base != "none")
    if regressor.assignment is not None:
        set_token_assignment(model, regressor.assignment)
    Yt = np.tile(Y, (1, regressor.members))
    X_fit, Y_fit, X_stop, Y_stop = X[:n_fit], Yt[:n_fit], X[n_fit:], Yt[n_fit:]
    model.fit(X_fit, Y_fit, batch_size=regressor.batch_size, epochs=1, verbose=0,
              validation_data=(X_stop, Y_stop))  # traces both the train and the test step

    rates = {"cold": [], "warm": [], "plain": [], "plain_validation": []}
    for _ in range(repeats):  # interleaved, so that a change in the machine's load hits all three
        for kind in ("cold", "warm"):  # cold: the base and the tokens' gene tree fitted; warm: cached
            if kind == "cold":
                FIT_CACHE.clear()
            started = time.perf_counter()
            regressor.fit(X, Y)
            rates[kind].append(n_fit * regressor.epochs_trained / (time.perf_counter() - started))
        for kind, extra in (("plain", {}), ("plain_validation", {"validation_data": (X_stop, Y_stop)})):
            started = time.perf_counter()
            model.fit(X_fit, Y_fit, batch_size=regressor.batch_size, epochs=epochs, shuffle=True, verbose=0, **extra)
            rates[kind].append(n_fit * epochs / (time.perf_counter() - started))
    return {"arch": arch, **{kind: max(values) for kind, values in rates.items()},
            "batch_size": regressor.batch_size, "members": regressor.members, "base": training.base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pbmc68k")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--archs", nargs="*", default=list(DEEP_ARCHS))
    parser.add_argument("--out", default=str(REPO / "results" / "throughput.md"))
    args = parser.parse_args()

    config = load_config().for_dataset(args.dataset)
    n_dev, n_features, n_targets = _shape(config, args.dataset)
    X, Y = random_task(n_dev, n_features, n_targets)
    rows = []
    for arch in args.archs:
        row = measure(config.params, arch, X, Y, args.epochs, args.repeats)
        print(json.dumps(row), flush=True)
        rows.append(row)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Training throughput per architecture (scripts/bench_throughput.py)", "",
        f"{dt.date.today().isoformat()}, {platform.machine()} CPU with {os.cpu_count()} cores, load average "
        f"{load:.1f} at the end; dataset `{args.dataset}`'s multi-task shape ({n_dev} development samples x "
        f"{n_features} features -> {n_targets} targets), defaults of params.yaml, {args.epochs} epochs, "
        f"best of {args.repeats}. Command: `python scripts/bench_throughput.py --dataset {args.dataset} "
        f"--epochs {args.epochs} --repeats {args.repeats}`.", "",
        "| architecture | batch size | ensemble | base | genebench fit, cold (samples/s) | genebench fit, warm "
        "(samples/s) | plain `model.fit` (samples/s) | plain + validation_data (samples/s) | warm / plain | "
        "warm / plain + validation | cold / plain |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| `{r['arch']}` | {r['batch_size']} | {r['members']} | {r['base']} | {r['cold']:.0f} | "
              f"{r['warm']:.0f} | {r['plain']:.0f} | {r['plain_validation']:.0f} | {r['warm'] / r['plain']:.2f} | "
              f"{r['warm'] / r['plain_validation']:.2f} | {r['cold'] / r['plain']:.2f} |"
              for r in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
