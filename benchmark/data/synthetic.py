"""Synthetic expression with known low-rank gene-gene structure.

Model (all draws from `numpy.random.default_rng(seed)`, so a seed fixes every byte):

    Z ~ N(0, 1)                 (samples, rank)    latent programmes per sample
    W ~ N(0, 1/rank)            (rank, genes)      loadings: each gene's programme mix
    S = Z @ W                   (samples, genes)   signal; gene g has variance ~ |W[:, g]|^2
    E ~ N(0, noise^2 * var(S_g))                   noise, `noise` relative to each gene's signal sd
    X = offset_g + scale_g * (S + E), clipped at 0  log-expression-like, offset_g in [5, 8]

Every gene is a noisy linear function of `rank` latent factors, which the other genes
reveal; so a linear model predicting one gene from many others can reach an R^2 of about
`1 / (1 + noise^2)` (the per-gene signal share, written as `r2_ceiling`), and predicting the
training mean reaches about 0. Offsets sit >= 5 standard deviations above zero, so the
clip touches essentially no cell and log1p applies.

`synth(out, ...)` writes the matrix in the format OUT's extension names (samples as rows,
corner cell `sample`, or GCT's genes-as-rows) and the true structure beside it in
`OUT.truth.json` (parameters and `r2_ceiling`; `make_synthetic` regenerates Z and W).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.data.canonical import Dataset
from benchmark.data.readers import detect_format
from benchmark.errors import UserError
from benchmark.outputs import write_bytes, write_json, write_text


@dataclass(frozen=True)
class SyntheticTruth:
    """The generating structure: `Z` (samples, rank), `W` (rank, genes), and per-gene affine maps."""

    Z: np.ndarray
    W: np.ndarray
    offset: np.ndarray
    scale: np.ndarray
    noise: float
    signal_share: np.ndarray  # per gene: var(signal) / var(signal + noise) on the drawn data

    @property
    def r2_ceiling(self) -> float:
        return float(np.mean(self.signal_share))


def make_synthetic(samples: int, genes: int, seed: int = 0, rank: int = 5, noise: float = 0.1) -> tuple[Dataset, SyntheticTruth]:
    """A float32 (samples, genes) Dataset and the structure that generated it."""
    if samples < 2 or genes < 2:
        raise UserError(f"--samples and --genes must be at least 2, got {samples} and {genes}")
    if rank < 1 or rank > min(samples, genes):
        raise UserError(f"--rank must be between 1 and min(samples, genes) = {min(samples, genes)}, got {rank}")
    if not noise >= 0 or not np.isfinite(noise):
        raise UserError(f"--noise must be a finite number >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((samples, rank))
    W = rng.standard_normal((rank, genes)) / np.sqrt(rank)
    signal = Z @ W
    signal_sd = signal.std(axis=0)
    signal_sd[signal_sd == 0] = 1.0
    E = rng.standard_normal((samples, genes)) * (noise * signal_sd)
    offset = rng.uniform(5.0, 8.0, size=genes)
    scale = rng.uniform(0.3, 1.0, size=genes)
    X = np.clip(offset + scale * (signal + E), 0.0, None).astype(np.float32)
    total_var = (signal + E).var(axis=0)
    share = np.where(total_var > 0, signal.var(axis=0) / np.where(total_var > 0, total_var, 1.0), 0.0)
    width = max(len(str(samples)), len(str(genes)), 4)
    ds = Dataset(
        X=X,
        genes=[f"G{g + 1:0{width}d}" for g in range(genes)],
        samples=[f"S{s + 1:0{width}d}" for s in range(samples)],
        provenance={"source": f"genebench synthetic (seed {seed}, rank {rank}, noise {noise:g})",
                    "values": "log-expression-like: offset + scale * (low-rank signal + Gaussian noise)"},
    )
    return ds, SyntheticTruth(Z=Z, W=W, offset=offset, scale=scale, noise=noise, signal_share=share)


def _rows_text(names: list[str], M: np.ndarray, sep: str) -> list[str]:
    # 9 significant digits read back to the same float32 bits (float32 needs at most 9).
    fmt = sep.join(["%s", *["%.9g"] * M.shape[1]])
    return [fmt % (name, *row) for name, row in zip(names, M.tolist())]


def _delimited(ds: Dataset, sep: str) -> str:
    lines = [sep.join(["sample", *ds.genes]), *_rows_text(ds.samples, ds.X, sep)]
    return "\n".join(lines) + "\n"


def _gct(ds: Dataset) -> str:
    n_samples, n_genes = ds.shape
    lines = ["#1.2", f"{n_genes}\t{n_samples}", "\t".join(["Name", "Description", *ds.samples]),
             *_rows_text([f"{gene}\tna" for gene in ds.genes], np.asarray(ds.X).T, "\t")]
    return "\n".join(lines) + "\n"


def write_matrix(ds: Dataset, out: Path, fmt: str) -> None:
    """Write `ds` in a format `read_matrix` reads back to the same float32 values."""
    if fmt in ("csv", "tsv"):
        write_text(out, _delimited(ds, "," if fmt == "csv" else "\t"))
    elif fmt == "gct":
        write_text(out, _gct(ds))
    elif fmt == "parquet":
        import io

        import pandas as pd

        frame = pd.DataFrame(ds.X, index=pd.Index(ds.samples, name="sample"), columns=ds.genes)
        buf = io.BytesIO()
        frame.to_parquet(buf)
        write_bytes(out, buf.getvalue())
    elif fmt == "h5ad":
        import anndata
        import pandas as pd

        adata = anndata.AnnData(X=np.asarray(ds.X), obs=pd.DataFrame(index=ds.samples), var=pd.DataFrame(index=ds.genes))
        tmp = out.with_name(f".{out.name}.tmp")
        adata.write_h5ad(tmp)
        tmp.replace(out)
    else:  # pragma: no cover - detect_format only returns the formats above
        raise UserError(f"{out}: cannot write format {fmt!r}")


def synth(out: Path, samples: int, genes: int, seed: int = 0, rank: int = 5, noise: float = 0.1) -> int:
    """`genebench data synth`: write the matrix to OUT and its truth to OUT.truth.json."""
    out = Path(out)
    fmt = detect_format(out)
    if out.name.lower().endswith(".gz"):
        raise UserError(f"{out}: synth writes uncompressed files; drop the .gz")
    ds, truth = make_synthetic(samples, genes, seed=seed, rank=rank, noise=noise)
    write_matrix(ds, out, fmt)
    truth_path = out.with_name(out.name + ".truth.json")
    write_json(truth_path, {
        "samples": samples, "genes": genes, "seed": seed, "rank": rank, "noise": noise,
        "r2_ceiling": round(truth.r2_ceiling, 6),
        "model": "X = offset + scale * (Z @ W + E); Z ~ N(0,1) (samples x rank), W ~ N(0,1/rank) (rank x genes), "
                 "E ~ N(0, (noise * sd(signal))^2); regenerate Z and W with benchmark.data.synthetic.make_synthetic",
    })
    print(f"wrote {out}: {samples} samples x {genes} genes, rank {rank}, noise {noise:g}, seed {seed} "
          f"(linear R^2 ceiling about {truth.r2_ceiling:.3f}; truth in {truth_path.name})")
    return 0
