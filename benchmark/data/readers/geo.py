"""GEO series matrix (`GSE..._series_matrix.txt[.gz]`): genes (ID_REF) x samples (GSM ids).

`!Series_*` and `!Sample_*` metadata lines, then the table between
`!series_matrix_table_begin` and `!series_matrix_table_end`: an `ID_REF` header of sample
ids, then one row per probe or gene. A first pass streams the file line by line for the
table's line numbers and a little metadata (the series accession and what the submitters
did to the values); the second hands pandas the table rows only, a block of genes at a
time, so the `!` metadata lines never reach the parser and memory is one block.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.data.readers.source import GENES_AS_ROWS, VALUES_AS_STORED, MatrixSource, block_rows
from benchmark.data.readers.text import genes_as_rows_blocks, open_text, read_table
from benchmark.errors import UserError

GEO_BEGIN = "!series_matrix_table_begin"
GEO_END = "!series_matrix_table_end"


def is_geo_series_matrix(path: Path) -> bool:
    """True when the first non-blank line starts with `!Series_` (GEO's own first line) or
    opens the table, which is how a series matrix differs from any tab-separated table."""
    with open_text(path) as fh:
        for line in itertools.islice(fh, 100):
            if line.strip():
                return line.lstrip().strip('"').lower().startswith(("!series_", GEO_BEGIN))
    return False


def _first_cell(line: str) -> str:
    return line.split("\t", 1)[0].strip().strip('"')


def _metadata_values(line: str) -> list[str]:
    """The quoted values after the key of a `!Series_*` / `!Sample_*` line."""
    row = next(csv.reader([line.rstrip("\r\n")], delimiter="\t"), [])
    return [cell.strip() for cell in row[1:] if cell.strip()]


@dataclass
class _Table:
    """Where a series matrix's table lies (file line numbers) and the metadata read on the way."""

    begin: int | None = None
    header_line: int | None = None
    end: int | None = None
    header: list[str] = field(default_factory=list)
    data_rows: int = 0
    accession: str | None = None
    processing: list[str] = field(default_factory=list)


def _scan(path: Path) -> _Table:
    """The first pass: line by line, nothing but the header and the counts kept."""
    table = _Table()
    with open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            if table.begin is None:
                key = _first_cell(line)
                if key.lower() == GEO_BEGIN:
                    table.begin = number
                elif key == "!Series_geo_accession":
                    table.accession = next(iter(_metadata_values(line)), None)
                elif key == "!Sample_data_processing":  # one value per sample, mostly the same text
                    table.processing += [v for v in dict.fromkeys(_metadata_values(line)) if v not in table.processing]
            elif _first_cell(line).lower() == GEO_END:
                table.end = number
                break
            elif not line.strip():
                continue
            elif table.header_line is None:
                table.header_line = number
                table.header = next(csv.reader([line.rstrip("\r\n")], delimiter="\t"))
            else:
                table.data_rows += 1
    return table


def _checked(path: Path, table: _Table) -> _Table:
    if table.begin is None:
        raise UserError(f"{path}: no {GEO_BEGIN!r} line; a GEO series matrix holds its table between "
                        f"{GEO_BEGIN!r} and {GEO_END!r}")
    if table.end is None:
        raise UserError(f"{path}: no {GEO_END!r} line after the table (line {table.begin} opens it): "
                        "the file is truncated; download it again")
    if table.header_line is None or table.data_rows == 0:
        raise UserError(f"{path}: the table between lines {table.begin} and {table.end} has "
                        f"{'no header' if table.header_line is None else 'a header but no data rows'}")
    if len(table.header) < 2:
        raise UserError(f"{path}: line {table.header_line}: the table header names no samples (expected 'ID_REF', "
                        "then one GSM id per sample, tab-separated)")
    return table


def open_geo(path: Path, fmt: str, transpose: bool | None, block_size: int | None) -> MatrixSource:
    """The table of a GEO series matrix, opened for reading in blocks of genes (file rows)."""
    if transpose:
        raise UserError(f"{path}: --transpose does not apply to a GEO series matrix (genes are rows by definition)")
    table = _checked(path, _scan(path))
    samples = [cell.strip() for cell in table.header[1:]]
    step = block_rows(len(table.header), block_size)

    def width_error(width: int) -> str:
        return (f"{path}: line {table.header_line}: the header names {len(samples)} samples but the rows have "
                f"{width} values")

    def blocks():
        with open_text(path) as fh:
            for _ in range(table.header_line):
                fh.readline()
            # nrows stops pandas at the table's end line, which is no data row
            frames = read_table(path, "\t", 0, len(table.header), nrows=table.data_rows, handle=fh, chunksize=step)
            yield from genes_as_rows_blocks(path, frames, samples, table.header_line + 1, width_error)

    id_column = table.header[0].strip() or "the first column"
    provenance = {"format": "geo series matrix", "orientation": GENES_AS_ROWS,
                  "gene_ids": f"{id_column}: the platform's probe or gene ids", "values": VALUES_AS_STORED}
    if table.accession:
        provenance["series"] = table.accession
    if table.processing:  # the submitters' own account of normalisation and log scale
        provenance["source_processing"] = " | ".join(table.processing)
    accession = f" {table.accession}" if table.accession else ""
    note = (f"GEO series matrix{accession}: the table of lines {table.begin}-{table.end}, genes as rows "
            f"(by definition; ids from {id_column}, the platform's probe or gene ids), "
            f"{table.data_rows} genes x {len(samples)} samples")
    return MatrixSource(path=path, genes_are_rows=True, col_ids=samples, note=note, provenance=provenance,
                        blocks=blocks())
