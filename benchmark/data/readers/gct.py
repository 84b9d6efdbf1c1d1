"""GCT: GenePattern/CMap v1.2 and v1.3, genes as rows by definition, read in blocks of genes.

The first three lines (version, dimensions, header) say where the data rows start and
how many there are; pandas then parses the data rows a block at a time, so memory is a
block of genes whatever the file size. The row count the dimensions line declares is
checked once every block has been read.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.data.readers.source import GENES_AS_ROWS, VALUES_AS_STORED, MatrixSource, block_rows
from benchmark.data.readers.text import first_rows, genes_as_rows_blocks, read_table
from benchmark.errors import UserError


def _layout(path: Path) -> tuple[str, int, int, int, list[str]]:
    """(version, declared genes, row-metadata columns, lines before the data, header) of a GCT file.

    v1.2: `Name`, `Description`, samples. v1.3: line 2 is `rows cols row_meta col_meta`;
    the header is `id`, the `row_meta` metadata names, then sample ids; then `col_meta`
    lines of column metadata (name, `row_meta` filler cells, one value per sample).
    """
    head = first_rows(path, "\t", 3)
    version = head[0][0].strip() if head and head[0] else ""
    if version not in ("#1.2", "#1.3"):
        raise UserError(f"{path}: line 1 is {version!r}; a GCT file starts with '#1.2' or '#1.3'")
    if len(head) < 3:
        raise UserError(f"{path}: a GCT file needs a dimensions line and a header line")
    try:
        dims = [int(cell) for cell in head[1] if cell.strip()]
    except ValueError:
        raise UserError(f"{path}: line 2 must hold integer dimensions, got {chr(9).join(head[1])!r}") from None
    expected_dims = 2 if version == "#1.2" else 4
    if len(dims) != expected_dims:
        raise UserError(f"{path}: line 2 of a GCT {version[1:]} file must hold {expected_dims} integers, got {len(dims)}")
    n_rows, n_cols = dims[0], dims[1]
    n_row_meta, n_col_meta = (1, 0) if version == "#1.2" else (dims[2], dims[3])
    header = head[2]
    if len(header) != 1 + n_row_meta + n_cols:
        raise UserError(
            f"{path}: line 3 has {len(header)} fields; line 2 declares {n_cols} samples and "
            f"{n_row_meta} row-metadata column(s), so {1 + n_row_meta + n_cols} were expected"
        )
    return version, n_rows, n_row_meta, 3 + n_col_meta, header


def open_gct(path: Path, fmt: str, transpose: bool | None, block_size: int | None) -> MatrixSource:
    """A GCT file opened for reading in blocks of genes (file rows)."""
    if transpose:
        raise UserError(f"{path}: --transpose does not apply to GCT (genes are rows by definition)")
    version, n_rows, n_row_meta, skip, header = _layout(path)
    samples = header[1 + n_row_meta:]
    step = block_rows(len(header), block_size)

    def width_error(width: int) -> str:
        return f"{path}: data rows have {width + 1} fields, expected {len(header)}"

    def blocks():
        frames = read_table(path, "\t", skip, len(header), chunksize=step)
        seen = 0
        for ids, values in genes_as_rows_blocks(path, frames, samples, skip + 1, width_error, drop=n_row_meta):
            seen += len(ids)
            yield ids, values
        if seen != n_rows:
            raise UserError(f"{path}: line 2 declares {n_rows} genes but the file has {seen} data rows")

    provenance = {"format": f"gct {version[1:]}", "orientation": GENES_AS_ROWS, "values": VALUES_AS_STORED}
    note = f"GCT {version[1:]}: genes as rows (by definition), {n_rows} genes x {len(samples)} samples"
    return MatrixSource(path=path, genes_are_rows=True, col_ids=list(samples), note=note, provenance=provenance,
                        blocks=blocks())
