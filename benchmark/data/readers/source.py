"""What every reader returns, a `MatrixSource` of blocks of file rows, and how read errors read.

Shared by the format modules of `benchmark.data.readers`: the source itself, the block
size a reader parses at a time, and the one-line `UserError` messages for the errors
reading any file can raise (truncated gzip streams, undecodable text, I/O errors).
"""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from benchmark.data.canonical import Dataset
from benchmark.data.rows import rows_per_block
from benchmark.errors import UserError

SAMPLES_AS_ROWS = "samples as rows, genes as columns"
GENES_AS_ROWS = "genes as rows, samples as columns"
# Every reader's provenance says the same of the values: genebench does not rescale them.
VALUES_AS_STORED = "as stored in the file; genebench applies only the dataset transform (datasets.<name>.transform)"


@dataclass
class MatrixSource:
    """A matrix file opened for reading in blocks of file rows.

    `blocks` yields `(row_ids, values)`: the ids of the next file rows and their float32
    values, (rows, len(col_ids)); it is consumed once. `genes_are_rows` is the file's
    orientation (file rows are genes, columns samples). Parse errors surface as `UserError`
    while the blocks are read.
    """

    path: Path
    genes_are_rows: bool
    col_ids: list[str]
    note: str
    provenance: dict
    blocks: Iterator[tuple[list[str], np.ndarray]]
    generated_ids: str | None = None  # "sample" or "gene" when the file has no id column and ids were made up

    def dataset(self) -> Dataset:
        """Every block read into one samples x genes `Dataset` (file order)."""
        row_ids: list[str] = []
        parts = []
        for ids, values in self.blocks:
            row_ids += ids
            parts.append(values)
        values = np.concatenate(parts) if parts else np.zeros((0, len(self.col_ids)), dtype=np.float32)
        if self.genes_are_rows:
            X, genes, samples = values.T, row_ids, list(self.col_ids)
        else:
            X, genes, samples = values, list(self.col_ids), row_ids
        return Dataset(X=np.ascontiguousarray(X, dtype=np.float32), genes=genes, samples=samples,
                       provenance=self.provenance)


def block_rows(n_cols: int, requested: int | None) -> int:
    """File rows parsed at a time: `requested`, else what fits a block (~32 MiB of float32)."""
    # float64 while parsing: half the float32 rows of a block
    return requested or max(200, rows_per_block(2 * n_cols))


def dense_float32(matrix) -> np.ndarray:
    """A dense C-order float32 copy of a numpy, scipy.sparse or h5py-backed matrix."""
    import scipy.sparse

    if scipy.sparse.issparse(matrix):
        matrix = matrix.toarray()
    return np.ascontiguousarray(np.asarray(matrix), dtype=np.float32)


# What reading a file can raise besides the readers' own UserErrors: gzip streams that end
# early (EOFError) or are damaged (zlib.error, BadGzipFile, an OSError), undecodable text,
# csv's own errors, and I/O errors such as a permission denied.
READ_ERRORS = (EOFError, zlib.error, OSError, UnicodeDecodeError, csv.Error)


def is_compression_error(exc: BaseException) -> bool:
    return isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile))


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def read_error(path: Path, exc: BaseException) -> str:
    """The one-line message for an exception of `READ_ERRORS` raised while reading `path`."""
    if is_compression_error(exc):
        return (f"{path}: the compressed file is truncated or corrupt ({one_line(exc)}); "
                "download or compress it again")
    if isinstance(exc, UnicodeDecodeError):
        return f"{path}: not UTF-8 text ({one_line(exc)}); save it as UTF-8 text"
    return f"{path}: cannot read ({one_line(exc)})"


def block_error(path: Path, exc: BaseException) -> UserError:
    """The UserError for a pandas parse error or one of `READ_ERRORS` met while reading blocks."""
    import pandas as pd

    if isinstance(exc, pd.errors.ParserError):
        return UserError(f"{path}: rows have different numbers of fields ({' '.join(str(exc).split())})")
    return UserError(read_error(path, exc))


def guarded(path: Path, blocks: Iterator) -> Iterator:
    """`blocks` with read, decompression and parse errors turned into one-line UserErrors."""
    import pandas as pd

    try:
        yield from blocks
    except (pd.errors.ParserError, *READ_ERRORS) as exc:
        raise block_error(path, exc) from None
