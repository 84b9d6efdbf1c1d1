"""Held-out RMSE of the deep models' bases and of deep models on each: ridge vs the ridge+kNN stack.

For each bundled dataset and task (prepared with the committed params.yaml, so run
`genebench data bootstrap` and `genebench prepare --dataset D` first): the preprocessing
fitted on the development samples, the ridge base, the kNN model and their per-target
stack (`benchmark.models.residual`), each fitted once on all development samples and
scored on the held-out split; then the deep architectures at their params.yaml defaults
with `training.base` ridge and stack. Held-out figures are a check of the choice of
default, not a verdict (that is the benchmark's CV).

    python scripts/bench_base.py --out results/base.md
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmark.config import load_config
from benchmark.data.prepare import load_task
from benchmark.models.baselines import KnnBaseline, leave_one_out_predictions
from benchmark.models.preprocessing import FoldPreprocessor
from benchmark.models.residual import KNN_COMPONENTS, fit_ridge_base, fit_stacked_base
from benchmark.training import make_regressor


def rmse(predicted: np.ndarray, observed: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predicted - observed) ** 2)))


def bases(config, task: str) -> str:
    data = load_task(config, task, held_out=True, arch="dnn")  # the deep models' features
    pre = FoldPreprocessor(config.params.features.pca_components).fit(data.X_dev, data.Y_dev)
    Xs, Ys, Xt = pre.transform_X(data.X_dev), pre.transform_Y(data.Y_dev), pre.transform_X(data.X_test)
    start = time.perf_counter()
    ridge, _ = fit_ridge_base(Xs, Ys, 0)
    ridge_s = time.perf_counter() - start
    start = time.perf_counter()
    knn = KnnBaseline(components=KNN_COMPONENTS).fit(Xs, Ys)
    leave_one_out_predictions(knn)
    knn_s = time.perf_counter() - start
    stack, _ = fit_stacked_base(Xs, Ys, 0)
    scores = [rmse(pre.inverse_Y(m.predict(Xt)), data.Y_test) for m in (ridge, knn, stack)]
    return (f"| {config.dataset} | {task} | {scores[0]:.4f} | {scores[1]:.4f} | {scores[2]:.4f} | "
            f"{stack.weight.mean():.2f} | {ridge_s:.2f} | {knn_s:.2f} |")


def deep(config, task: str, arch: str) -> str:
    data = load_task(config, task, held_out=True, arch=arch)
    cells = []
    for base in ("ridge", "stack"):
        params = config.params
        params = params.model_copy(update={"training": params.training.model_copy(update={"base": base})})
        model = make_regressor(arch, None, params).fit(data.X_dev, data.Y_dev)
        cells += [f"{rmse(model.predict(data.X_test), data.Y_test):.4f}",
                  f"{rmse(model.predict_base(data.X_test), data.Y_test):.4f}"]
    return f"| {config.dataset} | {task} | {arch} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="pbmc68k,zeisel,cbmc,synthetic")
    parser.add_argument("--archs", default="dnn,attention_lstm")
    parser.add_argument("--out")
    args = parser.parse_args()
    config = load_config()
    lines = ["| dataset | task | ridge base | kNN | stack | mean ridge weight | ridge fit s | kNN fit s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    deep_lines = ["| dataset | task | arch | model, base ridge | its base | model, base stack | its base |",
                  "|---|---|---|---:|---:|---:|---:|"]
    for name in args.datasets.split(","):
        bound = config.for_dataset(name)
        for task in ("single", "multi"):
            lines.append(bases(bound, task))
            print(lines[-1], flush=True)
            for arch in args.archs.split(","):
                deep_lines.append(deep(bound, task, arch))
                print(deep_lines[-1], flush=True)
    text = "\n".join(["Held-out RMSE (expression units), fitted once on all development samples:", "", *lines,
                      "", "Deep models at their params.yaml defaults on each base:", "", *deep_lines, ""])
    if args.out:
        with open(args.out, "w") as out:
            out.write(text)
    print(text)


if __name__ == "__main__":
    main()
