"""Rows of a memory-mapped matrix, read on demand: how large datasets reach the models.

A `RowView` stands for a (n_rows, n_cols) float32 array: some rows (samples) and columns
(genes) of the canonical `expression.npy`, with the dataset transform and optionally a
fitted preprocessing applied to every block it reads. Nothing is read until asked for:

    X = RowView(matrix, rows=dev, cols=features, transform="log1p")   # no I/O
    X_train = X[train]                      # a fold is an index set: still no I/O
    for start, block in X_train.blocks():   # ~32 MiB blocks, in row order
        ...
    X_train.read([5, 2, 9])                  # any rows (a shuffled batch), as an array

so memory is bounded by a block, not by the matrix. `np.asarray(view)` reads everything
(small matrices only). Rows are read from the file in increasing order whatever order is
asked for, which keeps the page cache and the disk sequential.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import numpy as np

BLOCK_BYTES = 1 << 25  # float32 bytes of one block of rows (32 MiB)


def rows_per_block(n_cols: int, block_bytes: int | None = None) -> int:
    """Rows of `n_cols` float32 values that fit in `block_bytes` (default `BLOCK_BYTES`; at least 1)."""
    return max(1, (block_bytes or BLOCK_BYTES) // (4 * max(int(n_cols), 1)))


def is_row_view(X) -> bool:
    return isinstance(X, RowView)


class RowView:
    """Rows `rows` and columns `cols` of `matrix` (n, G), float32 after `transform` and `fn`.

    `matrix`: a 2-D array, typically `np.load(..., mmap_mode="r")`. `rows`, `cols`: int
    positions into it (`cols=None`: every column). `transform`: the dataset transform
    ("none" or "log1p"), applied to the values read. `fn`: applied to each block after
    that (e.g. a fitted standardisation); must map rows independently.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, matrix, rows, cols=None, transform: str = "none",
                 fn: Optional[Callable[[np.ndarray], np.ndarray]] = None, n_out: Optional[int] = None):
        self.matrix = matrix
        self.rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        self.cols = None if cols is None else np.asarray(cols, dtype=np.int64).reshape(-1)
        self.transform = transform
        self.fn = fn
        self._n_out = n_out

    @property
    def shape(self) -> tuple[int, int]:
        if self._n_out is not None:
            return len(self.rows), self._n_out
        return len(self.rows), (self.matrix.shape[1] if self.cols is None else len(self.cols))

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"RowView({self.shape[0]} x {self.shape[1]} of a {self.matrix.shape[0]} x {self.matrix.shape[1]} matrix)"

    def _derive(self, rows=None, fn=None, n_out=None) -> "RowView":
        return RowView(self.matrix, self.rows if rows is None else rows, self.cols, self.transform,
                       fn if fn is not None else self.fn, n_out if n_out is not None else self._n_out)

    def __getitem__(self, index) -> "RowView":
        """Rows by position (an int array, a boolean mask or a slice): another view, no I/O."""
        if isinstance(index, tuple):
            raise TypeError("RowView selects rows only; columns are fixed when the view is made")
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return self._derive(rows=self.rows[index])

    def map(self, fn: Callable[[np.ndarray], np.ndarray], n_out: Optional[int] = None) -> "RowView":
        """The same rows with `fn` applied to every block after this view's own processing.

        `n_out`: the number of columns `fn` returns, when it changes them (e.g. a PCA)."""
        inner = self.fn
        composed = fn if inner is None else (lambda block: fn(inner(block)))
        return self._derive(fn=composed, n_out=n_out)

    def read(self, positions=None) -> np.ndarray:
        """The rows at `positions` (all by default), in the order asked, as an array.

        Read a block at a time: memory is the result plus one block of whole matrix rows."""
        positions = np.arange(len(self.rows)) if positions is None else np.asarray(positions, dtype=np.int64)
        size = self.block_rows()
        if len(positions) > size:
            return np.concatenate([self._read(positions[start:start + size])
                                   for start in range(0, len(positions), size)])
        return self._read(positions)

    def _read(self, positions: np.ndarray) -> np.ndarray:
        rows = self.rows[positions]
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        if len(sorted_rows) and np.all(sorted_rows[1:] - sorted_rows[:-1] == 1):
            block = np.asarray(self.matrix[sorted_rows[0]:sorted_rows[-1] + 1])  # one contiguous read
        else:
            block = np.asarray(self.matrix[sorted_rows])
        if self.cols is not None:
            block = block[:, self.cols]
        if not np.array_equal(order, np.arange(len(order))):
            block = block[np.argsort(order, kind="stable")]
        block = np.asarray(block, dtype=np.float32)
        if self.transform == "log1p":
            block = np.log1p(block)
        if self.fn is not None:
            block = self.fn(block)
        return block

    def block_rows(self, block_bytes: int | None = None) -> int:
        """Whole matrix rows in a block of `block_bytes` (default `BLOCK_BYTES`)."""
        return rows_per_block(self.matrix.shape[1], block_bytes)

    def blocks(self, block_rows: Optional[int] = None) -> Iterator[tuple[int, np.ndarray]]:
        """`(start, block)` over all rows in order; block is rows start..start+len(block)-1."""
        size = block_rows or self.block_rows()
        for start in range(0, len(self.rows), size):
            yield start, self._read(np.arange(start, min(start + size, len(self.rows))))

    def __array__(self, dtype=None, copy=None):
        block = self.read()
        return block if dtype is None else block.astype(dtype)
