"""What a deep fit leaves behind in the process once its network is dropped.

    python scripts/bench_retained_memory.py [--arch attention_lstm] [--rows 4000] [--features 10413]
    TF_ENABLE_ONEDNN_OPTS=0 python scripts/bench_retained_memory.py ...   # the same with oneDNN off

Fits `--arch` with params.yaml's defaults, no base (`training.base: none`) and one epoch
on seeded random float32 data in memory (`--rows` x `--features` -> 50 targets), predicts
2,000 rows, then drops the network as a streamed refit does (`Regressor._release_network`:
garbage collected, the C heap trimmed) and prints the process's anonymous resident memory
(`RssAnon`) after the imports and data, after the fit, after the prediction and after the
release. What is left above the first figure is what the next fit's base (a float64 X'X of
867 MB at 10,413 features) has to sit beside (results/scale.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memory_peaks import anonymous_rss  # noqa: E402  (scripts/ is on sys.path: it holds this file)


def anonymous_mib() -> int:
    return anonymous_rss() >> 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="attention_lstm")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--features", type=int, default=10413)
    args = parser.parse_args()

    from benchmark.config import load_config
    from benchmark.models.tensorflow_setup import import_keras
    from benchmark.training import make_regressor

    config = load_config(root=REPO)
    import_keras()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.features)).astype(np.float32)
    Y = rng.normal(size=(args.rows, 50)).astype(np.float32)
    before = anonymous_mib()
    regressor = make_regressor(args.arch, None, config)
    regressor.training = {**regressor.training, "max_epochs": 1, "base": "none"}
    regressor.fit(X, Y)
    fitted = anonymous_mib()
    regressor.predict(X[:2000])
    predicted = anonymous_mib()
    regressor._release_network()
    released = anonymous_mib()
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (on)")
    print(f"{args.arch}, {args.rows} x {args.features}, TF_ENABLE_ONEDNN_OPTS={onednn}: RssAnon {before} MiB "
          f"after the imports and data, {fitted} after the fit, {predicted} after predicting, {released} after "
          f"the release: {released - before} MiB left")


if __name__ == "__main__":
    main()
