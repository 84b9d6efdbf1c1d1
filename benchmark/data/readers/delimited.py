"""csv and tsv tables (also `.txt`, and any of them gzipped), read in blocks of file rows.

The header holds column ids (with or without a corner cell); the first column holds row
ids when it holds text, and is data when it holds numbers (row ids are then generated).
Which axis holds genes is decided from the ids (gene symbols, Ensembl or Entrez ids
against sample ids), or by `transpose`; where the evidence is weak the read is refused
(`benchmark.data.layout`).
"""

from __future__ import annotations

from pathlib import Path

from benchmark.data import layout
from benchmark.data.readers.source import (GENES_AS_ROWS, READ_ERRORS, SAMPLES_AS_ROWS, VALUES_AS_STORED,
                                           MatrixSource, block_error, block_rows)
from benchmark.data.readers.text import NA_TOKENS, first_rows, open_text, read_table, to_float32
from benchmark.errors import UserError

SEPARATORS = {"csv": ",", "tsv": "\t"}


def generated_id(kind: str, row: int) -> str:
    """The id given to data row `row` (from 1) of a table without an id column: `sample000001`."""
    return f"{kind}{row:06d}"


def _header_lines(path: Path) -> int:
    """File lines up to and including the header (blank lines before it count)."""
    with open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                return number
    return 0


def _first_two_rows(path: Path, sep: str) -> tuple[list[str], list[str]]:
    head = first_rows(path, sep, 2)
    if not head:
        raise UserError(f"{path}: the file is empty")
    if len(head) < 2:
        raise UserError(f"{path}: the file has a header but no data rows")
    header, first = head
    if len(first) < 2:
        raise UserError(
            f"{path}: the first data row has a single field; is this a {'comma' if sep == ',' else 'tab'}-separated "
            f"file? (pass --format {'tsv' if sep == ',' else 'csv'} otherwise)"
        )
    return header, first


def _index_column(path: Path, sep: str, header: list[str], n_fields: int, index_column: bool | None,
                  skip: int, peek_rows: int) -> tuple[str, bool, str]:
    """(corner cell, whether the first column is row ids, why): from the header's width,
    the flag, or the first column's text over the first block of rows."""
    if len(header) == n_fields - 1:  # R's write.table: no corner cell, so the rows' first field is their id
        if index_column is False:
            raise UserError(f"{path}: --no-index-column, but the header has {len(header)} fields and the rows "
                            f"{n_fields}: the rows' first field is an id the header does not name")
        return "", True, "the header has one field fewer than the rows"
    if len(header) != n_fields:
        raise UserError(
            f"{path}: the header has {len(header)} fields but the first data row has {n_fields}; "
            "expected one id column followed by one column per gene or sample"
        )
    corner = header[0]
    if index_column is not None:
        return corner, index_column, "--index-column" if index_column else "--no-index-column"
    peek = read_table(path, sep, skip, n_fields, nrows=peek_rows)
    has_index, reason = layout.index_column(path, corner, [str(i) for i in peek.index], set(NA_TOKENS))
    return corner, has_index, reason


def open_delimited(path: Path, fmt: str, transpose: bool | None, block_size: int | None,
                   index_column: bool | None = None) -> MatrixSource:
    """A csv or tsv table: whether its first column is row ids, and its orientation, on
    evidence (`benchmark.data.layout`) unless `index_column` / `transpose` say."""
    import pandas as pd

    sep = SEPARATORS[fmt]
    header, first = _first_two_rows(path, sep)
    n_fields = len(first)
    skip = _header_lines(path)
    step = block_rows(n_fields, block_size)
    corner, has_index, index_reason = _index_column(path, sep, header, n_fields, index_column, skip, step)
    col_ids = header[-(n_fields - 1):] if has_index else list(header)
    chunks = read_table(path, sep, skip, n_fields, chunksize=step, index=has_index)
    try:
        frame = next(chunks)  # the first block's row ids are the orientation's evidence
    except StopIteration:  # pragma: no cover - first_rows found a data row
        raise UserError(f"{path}: the file has a header but no data rows") from None
    except (pd.errors.ParserError, *READ_ERRORS) as exc:
        chunks.close()
        raise block_error(path, exc) from None

    if transpose is not None:
        genes_rows, reason = transpose, "--transpose" if transpose else "--no-transpose"
    else:
        row_ids = [str(i) for i in frame.index] if has_index else None
        genes_rows, reason = layout.orientation(path, corner if has_index else "", row_ids, col_ids)
    row_kind, col_kind = ("gene", "sample") if genes_rows else ("sample", "gene")

    def blocks(frame=frame):
        line, row = skip + 1, 1
        with chunks:
            while frame is not None:
                if frame.shape[1] != len(col_ids):
                    raise UserError(f"{path}: the header names {len(col_ids)} columns but the rows have "
                                    f"{frame.shape[1]} values")
                if not has_index:
                    frame.index = [generated_id(row_kind, row + k) for k in range(len(frame))]
                frame.columns = col_ids
                yield [str(i) for i in frame.index], to_float32(frame, path, row_kind, col_kind, line_offset=line)
                line += len(frame)
                row += len(frame)
                frame = next(chunks, None)

    orientation = GENES_AS_ROWS if genes_rows else SAMPLES_AS_ROWS
    provenance = {"format": fmt, "orientation": orientation, "values": VALUES_AS_STORED}
    if not has_index:
        provenance[f"{row_kind}_ids"] = "generated from the data row number (the file has no id column)"
    note = f"read as {orientation} ({reason}); {_ids_note(corner, has_index, index_reason, row_kind, col_kind)}"
    return MatrixSource(path=path, genes_are_rows=genes_rows, col_ids=list(col_ids), note=note,
                        provenance=provenance, blocks=blocks(), generated_ids=None if has_index else row_kind)


def _ids_note(corner: str, has_index: bool, index_reason: str, row_kind: str, col_kind: str) -> str:
    """Where the row ids came from, in words, for the note the user checks."""
    first = f"the first column{f' {corner!r}' if corner.strip() else ''}"
    if has_index:
        return f"{row_kind} ids from {first} ({index_reason})"
    return (f"no id column ({first}: {index_reason}, so it is {col_kind} {corner!r}): {row_kind} ids generated, "
            f"{generated_id(row_kind, 1)} for data row 1 on")
