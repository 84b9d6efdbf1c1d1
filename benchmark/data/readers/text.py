"""Parsing shared by the text formats (csv, tsv, GCT, GEO series matrix).

Text is opened as UTF-8 (gzipped or not, a byte-order mark dropped), split with csv's
quoting rules for the first few rows, and parsed in frames of rows by pandas' C parser,
whose values become float32 with any non-numeric cell named by its row, column and line.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np

from benchmark.data.readers.source import is_compression_error, one_line
from benchmark.errors import UserError

# Cells read as missing (then rejected as NaN by validation, with their position).
NA_TOKENS = ["", "NA", "N/A", "NaN", "nan", "NAN", "null", "NULL", "None", "#N/A", "na"]


def open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")  # -sig: drop a byte-order mark before the corner cell


def first_rows(path: Path, sep: str, n: int) -> list[list[str]]:
    """The first `n` non-blank rows, split on `sep` (csv quoting rules)."""
    rows: list[list[str]] = []
    try:
        with open_text(path) as fh:
            for row in csv.reader(fh, delimiter=sep):
                if row and any(cell.strip() for cell in row):
                    rows.append(row)
                    if len(rows) == n:
                        break
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        if is_compression_error(exc):
            raise
        raise UserError(f"{path}: cannot read as {'tab' if sep == chr(9) else 'comma'}-separated text "
                        f"({one_line(exc)})") from None
    return rows


def read_table(path: Path, sep: str, skiprows: int, n_fields: int, nrows: int | None = None, handle=None,
               chunksize: int | None = None, index: bool = True):
    """Rows after `skiprows` lines: column 0 kept as text ids, the rest parsed as numbers
    (`index=False`: every column parsed as numbers, a range index).

    `handle`: an open text stream already positioned at the first row to read (then
    `skiprows` is ignored); `nrows`: stop after that many rows (None: read to the end);
    `chunksize`: an iterator of frames of that many rows instead of one frame.
    """
    import pandas as pd

    try:
        return pd.read_csv(
            path if handle is None else handle, sep=sep, header=None, skiprows=skiprows if handle is None else 0,
            nrows=nrows, index_col=0 if index else None, dtype={0: str} if index else None, keep_default_na=False,
            na_values={i: NA_TOKENS for i in range(1 if index else 0, n_fields)},
            skip_blank_lines=True, low_memory=False, engine="c", chunksize=chunksize,
        )
    except pd.errors.ParserError as exc:
        message = " ".join(str(exc).split())
        raise UserError(f"{path}: rows have different numbers of fields ({message})") from None
    except (UnicodeDecodeError, pd.errors.EmptyDataError, OSError) as exc:
        if is_compression_error(exc):
            raise
        raise UserError(f"{path}: cannot read ({one_line(exc)})") from None


def to_float32(frame, path: Path, row_kind: str, col_kind: str, line_offset: int | None = None) -> np.ndarray:
    """Float32 values of `frame` (index = row ids, columns = column ids).

    A cell that is neither a number nor an NA token raises UserError naming its row and
    column ids (and its line when `line_offset`, the file line of the first data row, is known).
    """
    import pandas as pd

    for pos, column in enumerate(frame.columns):
        series = frame.iloc[:, pos]
        if series.dtype.kind in "fiub":
            continue
        numeric = pd.to_numeric(series, errors="coerce")
        bad = numeric.isna() & series.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            where = f" (line {line_offset + row})" if line_offset is not None else ""
            raise UserError(
                f"{path}: non-numeric value {str(series.iloc[row])!r} at {row_kind} {str(frame.index[row])!r}, "
                f"{col_kind} {str(column)!r}{where}"
            )
    try:
        return frame.to_numpy(dtype=np.float64).astype(np.float32)
    except (TypeError, ValueError):  # a column pandas kept as object but every cell is numeric text
        return frame.apply(pd.to_numeric).to_numpy(dtype=np.float64).astype(np.float32)


def genes_as_rows_blocks(path: Path, frames, samples: list[str], first_line: int, width_error, drop: int = 0):
    """`(gene ids, values)` per frame of a genes-as-rows table (GCT, GEO): the first `drop`
    value columns (row metadata) left out, columns named `samples`, cells checked as numbers.

    `first_line`: the file line of the first data row, so a bad cell is named by its line.
    A frame whose width is not `drop + len(samples)` raises UserError(`width_error(width)`).
    """
    line = first_line
    with frames:
        for frame in frames:
            if frame.shape[1] != drop + len(samples):
                raise UserError(width_error(frame.shape[1]))
            frame = frame.iloc[:, drop:]
            frame.columns = samples
            yield [str(i) for i in frame.index], to_float32(frame, path, "gene", "sample", line_offset=line)
            line += len(frame)
