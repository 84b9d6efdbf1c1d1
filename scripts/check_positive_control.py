"""Measure what the bundled positive control (`synthetic`) lets each kind of model reach.

    python scripts/check_positive_control.py [--split-seed S]

Generates `benchmark.data.positive_control.positive_control()`, splits its samples 80/20 at
random, takes as targets the top-50 (and the top-1) most variable genes of the training
rows and as features the other genes (standardised on the training rows), and prints the
held-out RMSE and R^2 (mean over genes) of: the oracle (the noiseless truth), the training
mean, ridge with its alpha chosen by efficient leave-one-out CV, and a scikit-learn MLP
(256, 256) with early stopping. The numbers in positive_control.py's docstring come from here.
About a minute on two cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _scores(pred: np.ndarray, Y: np.ndarray) -> tuple[float, float]:
    rmse = float(np.sqrt(np.mean((pred - Y) ** 2)))
    r2 = float(np.mean(1.0 - ((pred - Y) ** 2).sum(axis=0) / ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)))
    return rmse, r2


def main() -> None:
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    from benchmark.data.positive_control import positive_control

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-seed", type=int, default=1)
    args = parser.parse_args()

    ds = positive_control()
    X, truth = np.asarray(ds.X, dtype=np.float64), np.asarray(ds.truth, dtype=np.float64)
    order = np.random.default_rng(args.split_seed).permutation(len(X))
    train, test = order[: int(0.8 * len(X))], order[int(0.8 * len(X)):]
    by_variance = np.argsort(-X[train].var(axis=0), kind="stable")

    for task, k in (("multi (top 50)", 50), ("single (top 1)", 1)):
        targets = by_variance[:k]
        features = np.setdiff1d(np.arange(X.shape[1]), targets)
        scaler = StandardScaler().fit(X[train][:, features])
        A, B = scaler.transform(X[train][:, features]), scaler.transform(X[test][:, features])
        Y, Y_test = X[train][:, targets], X[test][:, targets]
        rows = {"oracle (truth)": truth[test][:, targets], "mean": np.broadcast_to(Y.mean(axis=0), Y_test.shape)}
        ridge = RidgeCV(alphas=np.logspace(-2, 5, 29)).fit(A, Y)
        rows[f"ridge (alpha {ridge.alpha_:.3g})"] = ridge.predict(B).reshape(len(B), -1)
        start = time.perf_counter()
        mu, sd = Y.mean(axis=0), Y.std(axis=0)
        mlp = MLPRegressor(hidden_layer_sizes=(256, 256), early_stopping=True, max_iter=500, random_state=0)
        mlp.fit(A, ((Y - mu) / sd).squeeze(axis=1) if k == 1 else (Y - mu) / sd)
        rows[f"MLP 256-256 ({mlp.n_iter_} epochs, {time.perf_counter() - start:.0f} s)"] = \
            mlp.predict(B).reshape(len(B), -1) * sd + mu
        scores = {name: _scores(pred, Y_test) for name, pred in rows.items()}
        oracle = scores["oracle (truth)"][0]
        ridge_rmse = scores[next(name for name in scores if name.startswith("ridge"))][0]
        print(f"{task}: {len(test)} held-out samples, {len(features)} features")
        for name, (rmse, r2) in scores.items():
            print(f"  {name:34s} RMSE {rmse:.4f}  R^2 {r2:6.3f}  x oracle {rmse / oracle:5.2f}  x ridge {rmse / ridge_rmse:5.2f}")


if __name__ == "__main__":
    main()
