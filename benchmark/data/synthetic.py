"""Synthetic expression for `genebench data synth`, tests and scale runs: low-rank structure.

`make_synthetic` / `synth`, fixed byte for byte by their seed: known low-rank gene-gene structure.

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

Z, W, offset and scale come from `default_rng(seed)`; E is drawn per tile of 512 samples
x 512 genes from `default_rng([seed, tile row, tile column])`, so `SyntheticMatrix` makes
any block alone and `synth(out, ...)` writes block by block: N x G may exceed memory.
It writes the format OUT's extension names (samples as rows, corner cell `sample`, or
GCT's genes-as-rows; parquet in row groups of about 64 MiB, h5ad as a dense `X` filled by
h5py) and the true structure beside it in `OUT.truth.json` (parameters and `r2_ceiling`;
`make_synthetic` regenerates Z and W).

The bundled positive control, a different generator, is `benchmark.data.positive_control`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.data.canonical import Dataset
from benchmark.data.matrix_blocks import ColumnMoments
from benchmark.data.readers import detect_format
from benchmark.errors import UserError
from benchmark.outputs import write_json


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


# Noise is drawn per tile of TILE samples x TILE genes from its own generator
# (seed, tile row, tile column), so any block of the matrix, by rows (csv, parquet, h5ad)
# or by genes (GCT), is generated alone and the same whatever the block sizes.
TILE = 512


class SyntheticMatrix:
    """The synthetic matrix of (samples, genes, seed, rank, noise), generated block by block.

    `Z`, `W`, `offset` and `scale` (small) are drawn up front from `default_rng(seed)`; the
    signal's per-gene sd comes from Z's covariance; `block(r0, r1, g0, g1)` returns
    X[r0:r1, g0:g1] (float32) and records moments of signal + noise for `truth()`.
    """

    def __init__(self, samples: int, genes: int, seed: int = 0, rank: int = 5, noise: float = 0.1):
        if samples < 2 or genes < 2:
            raise UserError(f"--samples and --genes must be at least 2, got {samples} and {genes}")
        if rank < 1 or rank > min(samples, genes):
            raise UserError(f"--rank must be between 1 and min(samples, genes) = {min(samples, genes)}, got {rank}")
        if not noise >= 0 or not np.isfinite(noise):
            raise UserError(f"--noise must be a finite number >= 0, got {noise}")
        self.samples, self.genes, self.seed, self.rank, self.noise = samples, genes, seed, rank, noise
        rng = np.random.default_rng(seed)
        self.Z = rng.standard_normal((samples, rank))
        self.W = rng.standard_normal((rank, genes)) / np.sqrt(rank)
        self.offset = rng.uniform(5.0, 8.0, size=genes)
        self.scale = rng.uniform(0.3, 1.0, size=genes)
        Zc = self.Z - self.Z.mean(axis=0)
        cov = Zc.T @ Zc / samples  # population covariance of the programmes
        self.signal_var = np.einsum("rg,rs,sg->g", self.W, cov, self.W)
        signal_sd = np.sqrt(np.maximum(self.signal_var, 0.0))
        self.signal_sd = np.where(signal_sd > 0, signal_sd, 1.0)
        self._total = ColumnMoments(genes)  # of signal + noise, per gene, for the R^2 ceiling
        self._seen: set[tuple[int, int]] = set()

    def _noise(self, r0: int, r1: int, g0: int, g1: int) -> np.ndarray:
        out = np.empty((r1 - r0, g1 - g0))
        for ti in range(r0 // TILE, (r1 - 1) // TILE + 1):
            for tj in range(g0 // TILE, (g1 - 1) // TILE + 1):
                tile = np.random.default_rng([self.seed, ti, tj]).standard_normal(
                    (min(TILE, self.samples - ti * TILE), min(TILE, self.genes - tj * TILE)))
                rs, gs = max(r0, ti * TILE), max(g0, tj * TILE)
                re, ge = min(r1, (ti + 1) * TILE), min(g1, (tj + 1) * TILE)
                out[rs - r0:re - r0, gs - g0:ge - g0] = tile[rs - ti * TILE:re - ti * TILE, gs - tj * TILE:ge - tj * TILE]
        return out

    def block(self, r0: int, r1: int, g0: int = 0, g1: int | None = None) -> np.ndarray:
        """X[r0:r1, g0:g1], float32: clip(offset + scale * (Z @ W + noise), 0)."""
        g1 = self.genes if g1 is None else g1
        value = self.Z[r0:r1] @ self.W[:, g0:g1] + self._noise(r0, r1, g0, g1) * (self.noise * self.signal_sd[g0:g1])
        if (g0, g1) == (0, self.genes):
            self._total.update(value)
        return np.clip(self.offset[g0:g1] + self.scale[g0:g1] * value, 0.0, None).astype(np.float32)

    def ids(self) -> tuple[list[str], list[str]]:
        """(sample ids, gene ids): S/G and zero-padded positions, so id order is matrix order."""
        width = max(len(str(self.samples)), len(str(self.genes)), 4)
        return ([f"S{s + 1:0{width}d}" for s in range(self.samples)],
                [f"G{g + 1:0{width}d}" for g in range(self.genes)])

    def row_blocks(self, rows: int | None = None):
        """`(sample ids, X block)` over all samples, about 8 Mi values (64 MiB of float64) at a time."""
        samples, _ = self.ids()
        rows = rows or max(TILE, (1 << 23) // self.genes // TILE * TILE)
        for r0 in range(0, self.samples, rows):
            r1 = min(r0 + rows, self.samples)
            yield samples[r0:r1], self.block(r0, r1)

    def truth(self) -> SyntheticTruth:
        """The structure; `signal_share` needs every row generated once (by `row_blocks`)."""
        if self._total.n != self.samples:
            for _ in self.row_blocks():
                pass
        total = self._total.variance
        # At small n the drawn noise can correlate negatively with the signal; a share is at most 1.
        share = np.minimum(np.where(total > 0, self.signal_var / np.where(total > 0, total, 1.0), 0.0), 1.0)
        return SyntheticTruth(Z=self.Z, W=self.W, offset=self.offset, scale=self.scale, noise=self.noise,
                              signal_share=share)

    @property
    def provenance(self) -> dict:
        return {"source": f"genebench synthetic (seed {self.seed}, rank {self.rank}, noise {self.noise:g})",
                "values": "log-expression-like: offset + scale * (low-rank signal + Gaussian noise)"}


def make_synthetic(samples: int, genes: int, seed: int = 0, rank: int = 5, noise: float = 0.1) -> tuple[Dataset, SyntheticTruth]:
    """A float32 (samples, genes) Dataset in memory and the structure that generated it."""
    matrix = SyntheticMatrix(samples, genes, seed=seed, rank=rank, noise=noise)
    sample_ids, gene_ids = matrix.ids()
    X = np.concatenate([block for _, block in matrix.row_blocks()])
    ds = Dataset(X=X, genes=gene_ids, samples=sample_ids, provenance=matrix.provenance)
    return ds, matrix.truth()


def _rows_text(names: list[str], M: np.ndarray, sep: str) -> list[str]:
    # 9 significant digits read back to the same float32 bits (float32 needs at most 9).
    fmt = sep.join(["%s", *["%.9g"] * M.shape[1]])
    return [fmt % (name, *row) for name, row in zip(names, M.tolist())]


def _tmp_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.tmp")


def write_matrix(matrix: SyntheticMatrix, out: Path, fmt: str) -> None:
    """Write `matrix` block by block in a format `read_matrix` reads back to the same float32
    values (samples as rows, corner cell `sample`; GCT genes as rows), atomically."""
    tmp = _tmp_path(out)
    try:
        {"csv": _write_delimited, "tsv": _write_delimited, "parquet": _write_parquet, "h5ad": _write_h5ad,
         "gct": _write_gct}[fmt](matrix, tmp, fmt)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def _write_delimited(matrix: SyntheticMatrix, path: Path, fmt: str) -> None:
    sep = "," if fmt == "csv" else "\t"
    _, genes = matrix.ids()
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(sep.join(["sample", *genes]) + "\n")
        for samples, block in matrix.row_blocks():
            fh.write("\n".join(_rows_text(samples, block, sep)) + "\n")


def _write_gct(matrix: SyntheticMatrix, path: Path, fmt: str) -> None:
    samples, genes = matrix.ids()
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("\n".join(["#1.2", f"{matrix.genes}\t{matrix.samples}", "\t".join(["Name", "Description", *samples])]) + "\n")
        step = max(1, min(TILE, (1 << 23) // matrix.samples))  # genes per block: all samples of each
        for g0 in range(0, matrix.genes, step):
            g1 = min(g0 + step, matrix.genes)
            block = np.concatenate([matrix.block(r0, min(r0 + TILE, matrix.samples), g0, g1)
                                    for r0 in range(0, matrix.samples, TILE)])
            fh.write("\n".join(_rows_text([f"{gene}\tna" for gene in genes[g0:g1]], block.T, "\t")) + "\n")


def _write_parquet(matrix: SyntheticMatrix, path: Path, fmt: str) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, genes = matrix.ids()
    writer = None
    # A writer keeps every column chunk's metadata until it closes: at 10,463 genes, ~32 MiB
    # row groups with statistics held over 2 GiB (OOM-killed in results/scale.md). Row
    # groups of ~64 MiB without min/max statistics keep the footer to ~100 MB.
    rows = max(TILE, (1 << 24) // matrix.genes // TILE * TILE)
    try:
        for samples, block in matrix.row_blocks(rows):
            frame = pd.DataFrame(block, index=pd.Index(samples, name="sample"), columns=genes)
            table = pa.Table.from_pandas(frame, preserve_index=True)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, write_statistics=False)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def _write_h5ad(matrix: SyntheticMatrix, path: Path, fmt: str) -> None:
    """obs and var written by anndata, then X as a dense array (anndata's on-disk
    encoding 'array' 0.2.0) filled block by block with h5py."""
    import anndata
    import h5py
    import pandas as pd

    samples, genes = matrix.ids()
    anndata.AnnData(obs=pd.DataFrame(index=samples), var=pd.DataFrame(index=genes)).write_h5ad(path)
    with h5py.File(path, "r+") as f:
        if "X" in f:
            del f["X"]
        X = f.create_dataset("X", shape=(matrix.samples, matrix.genes), dtype="float32")
        X.attrs["encoding-type"] = "array"
        X.attrs["encoding-version"] = "0.2.0"
        start = 0
        for ids, block in matrix.row_blocks():
            X[start:start + len(ids)] = block
            start += len(ids)


def synth(out: Path, samples: int, genes: int, seed: int = 0, rank: int = 5, noise: float = 0.1) -> int:
    """`genebench data synth`: write the matrix to OUT (block by block, so samples x genes may
    exceed memory) and its truth to OUT.truth.json."""
    out = Path(out)
    fmt = detect_format(out)
    if out.name.lower().endswith(".gz"):
        raise UserError(f"{out}: synth writes uncompressed files; drop the .gz")
    matrix = SyntheticMatrix(samples, genes, seed=seed, rank=rank, noise=noise)
    write_matrix(matrix, out, fmt)
    truth = matrix.truth()
    truth_path = out.with_name(out.name + ".truth.json")
    write_json(truth_path, {
        "samples": samples, "genes": genes, "seed": seed, "rank": rank, "noise": noise,
        "r2_ceiling": round(truth.r2_ceiling, 6),
        "model": "X = offset + scale * (Z @ W + E); Z ~ N(0,1) (samples x rank), W ~ N(0,1/rank) (rank x genes), "
                 "E ~ N(0, (noise * sd(signal))^2) drawn per 512 x 512 tile; regenerate with "
                 "benchmark.data.synthetic.SyntheticMatrix",
    })
    print(f"wrote {out}: {samples} samples x {genes} genes, rank {rank}, noise {noise:g}, seed {seed} "
          f"(linear R^2 ceiling about {truth.r2_ceiling:.3f}; truth in {truth_path.name})")
    return 0
