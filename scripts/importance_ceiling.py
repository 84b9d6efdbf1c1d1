"""How high an importance AUROC on `synthetic` can go: a near-oracle predictor, scored as evaluate scores a model.

    python scripts/importance_ceiling.py [--split-seed S] [--target GENE]

Generates the positive control (`positive_control_latents`: the data and the programmes
that drew it), splits its samples as `prepare` does (`train_test_split`, test size 0.2,
params.yaml's `split.seed` 42 by default), and takes as target the most variable gene of
the development rows (the `single` task's choice: g214, an interaction of programmes 3 and
2 plus programme 0, at split seeds 42, 1 and 2; g317 at 3) and as features the other 499 genes. The near-oracle knows the generator and only has to decode the
programmes from the features:

    Z_hat = ridge(standardised features -> Z), fitted on the training rows (RidgeCV)
    prediction = E[log1p Poisson(exp(log-rate(Z_hat)))], the target's own formula

Then `benchmark.importance.permutation_importance` (the code evaluate runs, with its
default budget, and with every held-out row and 3 repeats) scores it, and its AUROCs
against the planted truth (`benchmark.report.importance.truth`: the feature genes that
share a programme with the target) are printed for both statistics: `importance` (the
prediction's root mean squared change) and `rmse_increase`. It also prints the AUROC of
the decoder's absolute weights on the target's programmes. No TensorFlow; about 30 s.
results/importance.md records its output.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from sklearn.model_selection import train_test_split

    from benchmark.data.positive_control import near_oracle, positive_control_latents
    from benchmark.importance import permutation_importance
    from benchmark.report.importance import auroc, truth

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-seed", type=int, default=42, help="prepare's split.seed (default 42)")
    parser.add_argument("--target", help="target gene id (default: the most variable gene of the training rows)")
    args = parser.parse_args()

    ds, latents = positive_control_latents()
    X, Z = np.asarray(ds.X, dtype=np.float64), latents["Z"]
    train, test = (np.sort(part) for part in train_test_split(np.arange(len(X)), test_size=0.2,
                                                               random_state=args.split_seed, shuffle=True))
    target = args.target or ds.genes[int(np.argmax(X[train].var(axis=0)))]
    if target not in latents["nonlinear"]:
        raise SystemExit(f"--target {target}: not a nonlinear gene of the positive control")
    t = ds.genes.index(target)
    features = [g for g in range(X.shape[1]) if g != t]
    genes = [ds.genes[g] for g in features]
    gene = latents["nonlinear"][target]
    predict, decoder = near_oracle(X[train][:, features], Z[train], [gene])

    X_test, y_test = X[test][:, features].astype(np.float32), X[test][:, [t]]
    reads = {g: set(entry["programmes"]) for g, entry in ds.programmes["genes"].items()}
    labels = truth(reads, target, genes)
    rmse = lambda p: float(np.sqrt(np.mean((p - y_test) ** 2)))  # noqa: E731
    print(f"target {target}: {gene['form']} of programmes {gene['pair']}, linear programme {gene['linear']}; "
          f"{labels.sum()} of {len(genes)} feature genes share a programme with it")
    print(f"held-out RMSE ({len(test)} samples): near-oracle {rmse(predict(X_test)):.4f}, "
          f"oracle (truth) {rmse(ds.truth[test][:, [t]]):.4f}, training mean {rmse(X[train][:, [t]].mean()):.4f}; "
          f"decoder alpha {decoder.alpha_:g}")
    weights = np.abs(decoder.coef_[sorted(reads[target])]).sum(axis=0)
    print(f"AUROC of the decoder's |weights| on the target's programmes: {auroc(_series(weights), labels):.3f}")
    for name, kwargs in (("evaluate's budget", {}), (f"all {len(test)} rows, 3 repeats",
                                                     {"repeats": 3, "max_rows": len(test) * len(genes)})):
        start = time.perf_counter()
        pooled, _ = permutation_importance(predict, X_test, y_test, genes, [target], **kwargs)
        pooled = pooled.set_index("gene").reindex(genes)
        print(f"permutation importance, {name}: AUROC importance (prediction change) "
              f"{auroc(pooled['importance'], labels):.3f}, rmse_increase {auroc(pooled['rmse_increase'], labels):.3f} "
              f"({time.perf_counter() - start:.1f} s)")


def _series(values: np.ndarray):
    import pandas as pd

    return pd.Series(values)


if __name__ == "__main__":
    main()
