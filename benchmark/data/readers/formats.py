"""Which format a matrix file is, and the reader that opens it.

`detect_format` names the format from the extension (a directory or `matrix.mtx[.gz]`
is 10x; a `.txt` whose first line starts with `!Series_` is a GEO series matrix);
`open_matrix` checks the path and hands it to its format's reader, every read or
decompression error turned into one `UserError` line; `read_matrix` reads every block.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.data.canonical import Dataset
from benchmark.data.readers.delimited import open_delimited
from benchmark.data.readers.gct import open_gct
from benchmark.data.readers.geo import is_geo_series_matrix, open_geo
from benchmark.data.readers.h5ad import open_h5ad
from benchmark.data.readers.parquet import open_parquet
from benchmark.data.readers.source import READ_ERRORS, MatrixSource, guarded, read_error
from benchmark.data.readers.tenx import MTX_FILE, open_10x
from benchmark.errors import UserError

FORMATS = ("csv", "tsv", "parquet", "h5ad", "gct", "geo", "10x")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".tab": "tsv", ".parquet": "parquet",
               ".pq": "parquet", ".h5ad": "h5ad", ".gct": "gct"}
# Each reader: (path, fmt, transpose, block_rows) -> MatrixSource; csv and tsv also take index_column.
_READERS = {"parquet": open_parquet, "h5ad": open_h5ad, "gct": open_gct, "geo": open_geo, "10x": open_10x}


def detect_format(path: Path) -> str:
    """The format of `path` from its extension; a directory or a `matrix.mtx[.gz]` is 10x,
    and a `.txt[.gz]` file whose first line starts with `!Series_` is a GEO series matrix."""
    if path.is_dir() or MTX_FILE.match(path.name):
        return "10x"
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    fmt = _EXTENSIONS.get(Path(name).suffix)
    if fmt is None:
        raise UserError(
            f"{path}: unknown file extension {Path(name).suffix or '(none)'!r}; expected one of "
            f"{', '.join(sorted(_EXTENSIONS))}, a 10x directory, or pass --format {{{','.join(FORMATS)}}}"
        )
    if Path(name).suffix == ".txt" and is_geo_series_matrix(path):
        return "geo"
    return fmt


def read_matrix(path: str | Path, fmt: str | None = None, transpose: bool | None = None,
                index_column: bool | None = None, block_rows: int | None = None) -> tuple[Dataset, str]:
    """Read `path` into a float32 samples x genes Dataset; also return the note on how it was read.

    Any read or decompression error (a truncated `.gz`, bytes that are not UTF-8, an
    unreadable file) is a `UserError` naming `path`, never a traceback.
    """
    source = open_matrix(path, fmt=fmt, transpose=transpose, index_column=index_column, block_rows=block_rows)
    return source.dataset(), source.note


def open_matrix(path: str | Path, fmt: str | None = None, transpose: bool | None = None,
                block_rows: int | None = None, index_column: bool | None = None) -> MatrixSource:
    """`path` opened for reading in blocks of about `block_rows` file rows (default: ~32 MiB of float32).

    `transpose`: True (`--transpose`, genes are rows), False (`--no-transpose`) or None
    (decided on evidence where the format leaves it open, csv, tsv and parquet).
    `index_column`: whether a csv or tsv file's first column is row ids (`--index-column`,
    `--no-index-column`); None: decided on evidence. Either raises UserError asking for
    the flag when the evidence is weak.

    Every format is read block by block (h5ad in backed mode; GCT and GEO a block of genes
    at a time), so a matrix larger than memory can be streamed; a 10x matrix is read whole
    as a sparse matrix and made dense a block of barcodes at a time.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    try:
        fmt = fmt or detect_format(path)
        if path.is_dir() and fmt != "10x":
            raise UserError(f"{path}: is a directory; expected a matrix file or a 10x Genomics directory "
                            "(matrix.mtx[.gz], features.tsv[.gz] or genes.tsv, barcodes.tsv[.gz])")
        if path.is_file() and path.stat().st_size == 0:
            raise UserError(f"{path}: the file is empty")
        if fmt in ("csv", "tsv"):
            source = open_delimited(path, fmt, transpose, block_rows, index_column)
        elif index_column is not None:
            raise UserError(f"{path}: --{'' if index_column else 'no-'}index-column applies to csv and tsv files only")
        else:
            source = _READERS[fmt](path, fmt, transpose, block_rows)
        source.blocks = guarded(path, source.blocks)
        return source
    except READ_ERRORS as exc:
        raise UserError(read_error(path, exc)) from None
