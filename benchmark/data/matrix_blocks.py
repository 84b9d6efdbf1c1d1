"""The canonical matrix in blocks: one pass over a reader's blocks checked and written as `expression.npy`.

`data import` and `data validate` never hold a whole matrix: a reader yields blocks of file
rows (`benchmark.data.readers.open_matrix`), `MatrixScan` keeps what the checks need (the first
non-finite or negative cell, whether every value is an integer, per-gene moments of the
transformed values), and `CanonicalMatrixWriter` appends each block to a file and at the end
puts samples and genes in id order into `expression.npy`. `prepare` uses `ColumnMoments`
for the development-sample variances. Memory is a few blocks (~32 MiB of float32 each), whatever the
matrix size.

Moments are float64. `ColumnMoments` over one block computes exactly what `np.var(x,
axis=0)` computes (same operations, same order), so a matrix that fits in one block gets
bit-identical variances; blocks are merged with Chan et al.'s pairwise update.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from benchmark.data.canonical import MATRIX_FILE
from benchmark.data.rows import BLOCK_BYTES

NPY_HEADER_BYTES = 128  # the .npy v1.0 header of any 2-D float32 shape this suite meets


class ColumnMoments:
    """Count, mean and sum of squared deviations per column, float64, merged block by block."""

    def __init__(self, n_cols: int):
        self.n = 0
        self.mean = np.zeros(n_cols)
        self.m2 = np.zeros(n_cols)

    def update(self, block: np.ndarray) -> "ColumnMoments":
        x = np.asarray(block, dtype=np.float64)
        n_b = x.shape[0]
        if n_b == 0:
            return self
        # The operations of np.var(x, axis=0), so one block gives its exact bits.
        mean_b = x.sum(axis=0, keepdims=True) / n_b
        d = x - mean_b
        m2_b = (d * d).sum(axis=0)
        mean_b = mean_b[0]
        if self.n == 0:
            self.mean, self.m2 = mean_b, m2_b
        else:
            n = self.n + n_b
            delta = mean_b - self.mean
            self.mean = self.mean + delta * (n_b / n)
            self.m2 = self.m2 + m2_b + delta * delta * (self.n * n_b / n)
        self.n += n_b
        return self

    def merge(self, other: "ColumnMoments") -> "ColumnMoments":
        merged = ColumnMoments(len(self.mean))
        for part in (self, other):
            if part.n == 0:
                continue
            if merged.n == 0:
                merged.n, merged.mean, merged.m2 = part.n, part.mean.copy(), part.m2.copy()
                continue
            n = merged.n + part.n
            delta = part.mean - merged.mean
            merged.mean = merged.mean + delta * (part.n / n)
            merged.m2 = merged.m2 + part.m2 + delta * delta * (merged.n * part.n / n)
            merged.n = n
        return merged

    @property
    def variance(self) -> np.ndarray:
        """Population variance (ddof 0) per column; NaN before any row."""
        return self.m2 / self.n if self.n else np.full_like(self.m2, np.nan)


class MatrixScan:
    """What the import checks need, gathered block by block of file rows.

    `genes_are_rows`: the file's orientation (then a file row is one gene over all samples).
    Positions are in samples x genes terms, in file order: `first_nonfinite` is
    `(sample, gene, is_nan)`, `first_negative` `(sample, gene)` (looked for only under
    log1p), `gene_variance` the variance of each gene's transformed values over all samples.
    """

    def __init__(self, n_cols: int, genes_are_rows: bool, transform: str):
        self.n_cols = n_cols
        self.genes_are_rows = genes_are_rows
        self.transform = transform
        self.n_rows = 0
        self.first_nonfinite: Optional[tuple[int, int, bool]] = None
        self.first_negative: Optional[tuple[int, int]] = None
        self.all_integer = True
        self._columns = ColumnMoments(n_cols)
        self._row_variances: list[np.ndarray] = []

    def _position(self, row: int, col: int) -> tuple[int, int]:
        row += self.n_rows
        return (col, row) if self.genes_are_rows else (row, col)

    def update(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        finite = np.isfinite(block)
        if self.first_nonfinite is None and not finite.all():
            row, col = map(int, np.argwhere(~finite)[0])
            self.first_nonfinite = (*self._position(row, col), bool(np.isnan(block[row, col])))
        if self.transform == "log1p" and self.first_negative is None:
            negative = block < 0
            if negative.any():
                self.first_negative = self._position(*map(int, np.argwhere(negative)[0]))
        if self.all_integer:
            self.all_integer = bool(((block >= 0) & (block == np.floor(block))).all())
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            values = np.log1p(block) if self.transform == "log1p" else block
            if self.genes_are_rows:
                self._row_variances.append(np.var(values.astype(np.float64), axis=1))
            else:
                self._columns.update(values)
        self.n_rows += block.shape[0]

    @property
    def n_samples(self) -> int:
        return self.n_cols if self.genes_are_rows else self.n_rows

    @property
    def gene_variance(self) -> np.ndarray:
        if self.genes_are_rows:
            return np.concatenate(self._row_variances) if self._row_variances else np.zeros(0)
        return self._columns.variance


def npy_header(shape: tuple[int, int]) -> bytes:
    """The header `np.save` writes before a C-order float32 array of `shape`."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                              "fortran_order": False, "shape": tuple(int(s) for s in shape)})
    return buf.getvalue()


class CanonicalMatrixWriter:
    """Writes blocks of file rows to `directory`, then `expression.npy` in canonical order.

    Blocks are appended as they come (the row count need not be known in advance). At
    `finish`, samples and genes are put in id order: when the file already was in that
    order (and samples were rows) the appended file becomes `expression.npy` in place, a
    header written before its data; otherwise rows are copied block by block in sorted
    order (genes-as-rows files are first transposed tile by tile). Temporary files live
    in `directory` (the import's own temporary directory) and are removed.

    Each block (tile) maps the files afresh and unmaps them after it, so the pages it
    touched leave the process's resident memory: mappings kept for the whole copy held
    every page of both files, twice the matrix (results/memory_import.md).
    """

    def __init__(self, directory: Path, n_cols: int, genes_are_rows: bool):
        self.directory = Path(directory)
        self.n_cols = n_cols
        self.genes_are_rows = genes_are_rows
        self.n_rows = 0
        self._raw = self.directory / ".file-order.npy"
        self._fh = open(self._raw, "wb")
        self._fh.write(b"\0" * NPY_HEADER_BYTES)

    def append(self, block: np.ndarray) -> None:
        np.ascontiguousarray(block, dtype=np.float32).tofile(self._fh)
        self.n_rows += block.shape[0]

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._raw.unlink(missing_ok=True)

    def finish(self, samples: list[str], genes: list[str]) -> Path:
        """Write `expression.npy`: rows `sorted(samples)`, columns `sorted(genes)`; its path."""
        self._fh.close()
        file_shape = (self.n_rows, self.n_cols)
        sample_order = np.argsort(np.asarray(samples, dtype=object), kind="stable")
        gene_order = np.argsort(np.asarray(genes, dtype=object), kind="stable")
        out = self.directory / MATRIX_FILE
        header = npy_header(file_shape)
        with open(self._raw, "r+b") as fh:  # the appended file is a valid .npy of the file's shape
            if len(header) != NPY_HEADER_BYTES:
                raise RuntimeError(f"unexpected .npy header size {len(header)} for shape {file_shape}")
            fh.write(header)
        source = self._raw
        if self.genes_are_rows:
            source = self._transpose(self._raw)
            self._raw.unlink()
        identity = (np.array_equal(sample_order, np.arange(len(samples)))
                    and np.array_equal(gene_order, np.arange(len(genes))))
        if identity:
            os.replace(source, out)
            return out
        _create_npy(out, (len(samples), len(genes)))
        step = max(1, BLOCK_BYTES // (4 * len(genes)))
        for start in range(0, len(samples), step):
            rows = sample_order[start:start + step]
            order = np.argsort(rows, kind="stable")  # read the file's rows in increasing order
            matrix, target = np.load(source, mmap_mode="r"), np.load(out, mmap_mode="r+")
            block = np.asarray(matrix[rows[order]])[:, gene_order]
            target[start:start + len(rows)] = block[np.argsort(order, kind="stable")]
            target.flush()
            del matrix, target  # unmapped per block: see the class docstring
        source.unlink()
        return out

    def _transpose(self, raw: Path) -> Path:
        """A (samples x genes) .npy of the (genes x samples) file, copied in square tiles."""
        n_genes, n_samples = np.load(raw, mmap_mode="r").shape
        path = self.directory / ".transposed.npy"
        _create_npy(path, (n_samples, n_genes))
        tile = max(1, int(np.sqrt(BLOCK_BYTES // 4)))  # 4096 x 4096 float32 by default
        for s0 in range(0, n_samples, tile):
            for g0 in range(0, n_genes, tile):
                matrix, target = np.load(raw, mmap_mode="r"), np.load(path, mmap_mode="r+")
                target[s0:s0 + tile, g0:g0 + tile] = np.asarray(matrix[g0:g0 + tile, s0:s0 + tile]).T
                target.flush()
                del matrix, target  # unmapped per tile: see the class docstring
        return path


def _create_npy(path: Path, shape: tuple[int, int]) -> None:
    """An all-zero float32 .npy of `shape` at `path` (sparse on disk until written)."""
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape).flush()

