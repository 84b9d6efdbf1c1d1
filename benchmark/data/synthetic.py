"""Synthetic expression: `genebench data synth` matrices and the bundled positive control.

Two generators live here, both fixed byte for byte by their seed.

**`make_synthetic` / `synth`** (tests, scale runs): known low-rank gene-gene structure.

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

**`positive_control`** (the bundled `synthetic` dataset, 2,000 samples x 500 genes; every
draw from one `numpy.random.default_rng(seed)`): a
matrix on which a linear model cannot reach the truth and a network can get close. Per sample,
12 latent programmes z ~ N(0, 1). Each gene has a log-rate m (natural log of its mean
count) and a value log1p(Poisson(exp(m))), so the noise is count noise: discrete, its
size set by the mean (counts up to ~750, 0.2 % of them zero).

- 440 readout genes: m = b + a * (w . z_S), with S 2 or 3 programmes, |w| = 1,
  b ~ U(2, 3.5), a ~ U(0.3, 0.55). Each reads a few programmes, linearly and noisily:
  only together do they pin z down.
- 60 nonlinear genes, each on its own pair (i, j) of programmes (60 of the 66 pairs):
  f = sqrt(0.85) * g(z_i, z_j) + sqrt(0.15) * z_k, with g the interaction z_i * z_j or
  the gate sqrt(2) * z_i * relu(z_j) (both unit variance), then
  m = b + a * 2.5 * tanh(f / 2.5), b ~ U(2, 3.5), a ~ U(1, 1.3). 85 % of f's variance
  is an interaction that no linear function of the other genes can carry: the interaction
  parts of two distinct pairs are uncorrelated, so neither the readouts nor the other
  nonlinear genes span it (a generator where every gene mixes the same hidden units
  let ridge span the targets). The soft saturation keeps counts below ~1,000.
- Amplitudes put the 60 nonlinear genes above every readout gene in variance (on the
  drawn matrix: >= 0.57 against <= 0.39), so the benchmark's targets, the top-50 and the
  top-1 most variable genes of the development samples, are nonlinear genes.
- `truth` is the noiseless value of every gene, E[log1p(count) | z] (not log1p(exp(m)),
  which is biased at low counts): the best prediction any model can make, the oracle.
- `programmes` records which programmes each gene reads (`programmes.json` in data/):
  the planted truth an importance is scored against (the genes that share a programme
  with a target drive it).
- Genes are shuffled and named by position (g001..g500), samples c0001..c2000, so no
  id or column order tells targets from readouts.

Measured on it (scripts/check_positive_control.py, seed 0): a random 80/20 split,
targets the top-50 most variable genes on the training rows, features the other 450,
standardised; held-out RMSE (R^2 mean over genes), split seed 1:

    task             oracle (truth)   mean             ridge, LOO alpha   MLP 256-256, early stop
    multi, top 50    0.2935 (0.893)   0.9062 (-0.004)  0.7760 (0.268)     0.5503 (0.627)
    single, top 1    0.3415 (0.880)   0.9907 (-0.013)  0.8912 (0.180)     0.5370 (0.702)

Ridge stays 2.6x the oracle's RMSE; the MLP is 0.71x (multi) and 0.60x (single) ridge's.
Split seed 2 gives the same picture (multi: 0.292 / 0.763 / 0.552). The benchmark's own
`dnn` with its params.yaml defaults (25 epochs) reached 0.622 on the multi split above,
0.80x ridge.

Byte stability (data.dvc records these bytes): the matrices are built from elementwise
float64 operations in a fixed order, no BLAS (whose summation order depends on the CPU),
and rounded to float32 once at the end; the bytes were the same with NumPy's AVX2 and
AVX-512 code paths switched off (NPY_DISABLE_CPU_FEATURES).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.data.canonical import Dataset
from benchmark.data.readers import detect_format
from benchmark.errors import UserError
from benchmark.data.streaming import ColumnMoments
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


# -- the positive control ----------------------------------------------------------------

CONTROL_SEED = 0
CONTROL_SAMPLES = 2000
CONTROL_GENES = 500
CONTROL_PROGRAMS = 12
CONTROL_NONLINEAR = 60
_LINEAR_SHARE = 0.15  # of a nonlinear gene's pre-saturation variance: what ridge can reach
_SATURATION = 2.5     # log-rate units; tanh(f / s) * s caps |f| softly
_NONLINEAR_BASE, _NONLINEAR_AMPLITUDE = (2.0, 3.5), (1.0, 1.3)
_READOUT_BASE, _READOUT_AMPLITUDE = (2.0, 3.5), (0.3, 0.55)
_READOUT_PROGRAMS = (2, 3)
# Log-rate grid of the E[log1p(Poisson)] table. Drawn log-rates stay within about
# [-1.3, 6.8] (base +- amplitude * saturation; readouts +- ~5 sd), well inside it.
_GRID_LOW, _GRID_HIGH, _GRID_STEP = -4.0, 8.0, 1.0 / 1024

CONTROL_PROVENANCE = {
    "source": "genebench positive control, generated by benchmark.data.synthetic.positive_control "
              "from seed {seed}: 12 latent programmes per sample; 440 genes read 2-3 programmes linearly, "
              "60 genes are each an interaction or gate of their own pair of programmes",
    "values": "log1p of Poisson counts drawn around each gene's log-rate; not normalised or scaled; "
              "benchmark transform: none",
    "truth": "truth.npy: the noiseless value of every cell, E[log1p(count) | programmes], in the units of "
             "expression.npy: the oracle prediction",
    "programmes": "programmes.json: the latent programmes each gene reads, so an importance can be scored against "
                  "the genes that drive a target",
    "ids": "positional: genes g001-g500 in shuffled generator order (no id or position marks the nonlinear "
           "genes), samples c0001-c2000",
    "orientation": "samples as rows, genes as columns",
}


PROGRAMMES_NOTE = ("the latent programmes (0-11) each gene's log-rate reads: a readout gene its 2-3 programmes "
                   "(linearly); a nonlinear gene its pair (an interaction or gate of pair[0] and pair[1]) and "
                   "its linear programme; the genes that drive a target are the genes sharing a programme with it")


def expected_log1p_poisson(log_rate: np.ndarray) -> np.ndarray:
    """E[log1p(K)] for K ~ Poisson(exp(log_rate)), elementwise, float64.

    Exact sums over K on a grid of log-rates 1/1024 apart, then linear interpolation:
    the interpolation error is below 1e-7, under float32's resolution of the values.
    Raises ValueError for a log-rate outside [-4, 8] (means 0.018 to 2,981).
    """
    from scipy.special import gammaln

    if log_rate.size and (log_rate.min() < _GRID_LOW or log_rate.max() > _GRID_HIGH):
        raise ValueError(f"log-rates must lie in [{_GRID_LOW}, {_GRID_HIGH}], got "
                         f"[{log_rate.min():.3f}, {log_rate.max():.3f}]")
    grid = _GRID_LOW + _GRID_STEP * np.arange(int(round((_GRID_HIGH - _GRID_LOW) / _GRID_STEP)) + 1)
    table = np.empty_like(grid)
    chunk = 256
    for start in range(0, len(grid), chunk):
        rate = np.exp(grid[start:start + chunk])[:, None]
        # Poisson mass beyond mean + 12 sd + 40 is below 1e-30.
        top = rate.max()
        k = np.arange(int(top + 12.0 * np.sqrt(top) + 40.0) + 1, dtype=np.float64)
        log_pmf = k * np.log(rate) - rate - gammaln(k + 1.0)
        table[start:start + chunk] = (np.exp(log_pmf) * np.log1p(k)).sum(axis=1)
    return np.interp(log_rate, grid, table)


def positive_control(seed: int = CONTROL_SEED) -> Dataset:
    """The bundled `synthetic` dataset: float32 (2,000 samples, 500 genes) with its `truth`.

    Values are log1p counts; `truth` is E[value | programmes] in the same units (see the
    module docstring for the model and what ridge, a network and the oracle reach on it).
    """
    rng = np.random.default_rng(seed)
    n, n_genes, n_programs = CONTROL_SAMPLES, CONTROL_GENES, CONTROL_PROGRAMS
    Z = rng.standard_normal((n, n_programs))
    log_rate = np.empty((n, n_genes))

    reads: list[dict] = []  # per generator column: which programmes it reads, and how
    pairs = [(i, j) for i in range(n_programs) for j in range(i + 1, n_programs)]
    for col, p in enumerate(rng.permutation(len(pairs))[:CONTROL_NONLINEAR]):
        i, j = pairs[p] if rng.random() < 0.5 else pairs[p][::-1]
        form = "interaction" if rng.random() < 0.5 else "gate"
        if form == "interaction":
            interaction = Z[:, i] * Z[:, j]
        else:  # z_i * relu(z_j) has variance 1/2
            interaction = np.sqrt(2.0) * Z[:, i] * np.maximum(Z[:, j], 0.0)
        k = int(rng.integers(n_programs))
        linear = Z[:, k]
        reads.append({"kind": "nonlinear", "form": form, "pair": [int(i), int(j)], "linear": k,
                      "programmes": sorted({int(i), int(j), k})})
        f = np.sqrt(1.0 - _LINEAR_SHARE) * interaction + np.sqrt(_LINEAR_SHARE) * linear
        base, amplitude = rng.uniform(*_NONLINEAR_BASE), rng.uniform(*_NONLINEAR_AMPLITUDE)
        log_rate[:, col] = base + amplitude * _SATURATION * np.tanh(f / _SATURATION)

    for col in range(CONTROL_NONLINEAR, n_genes):
        programs = rng.choice(n_programs, size=rng.integers(_READOUT_PROGRAMS[0], _READOUT_PROGRAMS[1] + 1),
                              replace=False)
        weights = rng.standard_normal(len(programs))
        weights /= np.sqrt(np.sum(weights * weights))
        reads.append({"kind": "readout", "programmes": sorted(int(q) for q in programs)})
        readout = np.zeros(n)
        for w, program in zip(weights, programs):  # explicit order: no BLAS, stable bits
            readout += w * Z[:, program]
        base, amplitude = rng.uniform(*_READOUT_BASE), rng.uniform(*_READOUT_AMPLITUDE)
        log_rate[:, col] = base + amplitude * readout

    counts = rng.poisson(np.exp(log_rate))
    values = np.log1p(np.arange(counts.max() + 1, dtype=np.float64))[counts]
    truth = expected_log1p_poisson(log_rate)
    order = rng.permutation(n_genes)
    genes = [f"g{g + 1:0{len(str(n_genes))}d}" for g in range(n_genes)]
    return Dataset(
        X=np.ascontiguousarray(values[:, order], dtype=np.float32),
        genes=genes,
        samples=[f"c{s + 1:0{len(str(n))}d}" for s in range(n)],
        provenance=dict(CONTROL_PROVENANCE, source=CONTROL_PROVENANCE["source"].format(seed=seed)),
        truth=np.ascontiguousarray(truth[:, order], dtype=np.float32),
        programmes={"genes": {gene: reads[col] for gene, col in zip(genes, order.tolist())},
                    "note": PROGRAMMES_NOTE},
    )
