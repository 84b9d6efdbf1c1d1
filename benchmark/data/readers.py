"""Readers: an expression file in, a samples x genes `Dataset` out.

`read_matrix(path, fmt=None, transpose=None) -> (Dataset, note)` reads a whole matrix;
`open_matrix(path, fmt=None, transpose=None) -> MatrixSource` opens it for reading in
blocks of file rows (csv, tsv, parquet and h5ad in backed mode stream; the others come as
one block), which is how `data import` handles matrices larger than memory. Both read

- csv / tsv (also `.txt`, and any of them gzipped): the header holds column ids (with or
  without a corner cell); the first column holds row ids when it holds text, and is data
  when it holds numbers (row ids are then generated). Which axis holds genes is decided
  from the ids (gene symbols, Ensembl or Entrez ids against sample ids), or by
  `transpose`; where the evidence is weak the read is refused (`benchmark.data.layout`);
- parquet: sample ids from the index when it is not a plain range, else from the first
  string column; every other column is a gene;
- h5ad: `adata.raw.X` with `raw.var_names` when `raw` is present (scanpy keeps the full
  log-normalised matrix there, while `X` is often scaled or subset), else `adata.X`;
  dense or sparse. obs are samples, var are genes;
- gct: GenePattern/CMap GCT v1.2 and v1.3; genes are rows by definition, so the matrix
  is transposed to samples x genes and `transpose` does not apply;
- geo: a GEO series matrix (`GSE..._series_matrix.txt[.gz]`): `!Series_*` and `!Sample_*`
  metadata lines, then the table between `!series_matrix_table_begin` and
  `!series_matrix_table_end`: an `ID_REF` header of sample (GSM) ids, then one row per
  probe or gene. Genes are rows by definition. A `.txt` file is read as geo when its
  first line starts with `!Series_` (else as tsv);
- 10x: a 10x Genomics (Cell Ranger) matrix directory, read with scanpy's `read_10x_mtx`:
  v3 `matrix.mtx.gz`, `features.tsv.gz`, `barcodes.tsv.gz`, or v2 `matrix.mtx`,
  `genes.tsv`, `barcodes.tsv`, each name with an optional common prefix (pass the
  matrix file to pick one of several prefixes). Barcodes are samples; genes are named
  by their ids (the first column), Gene Expression features only.

`note` says how the file was read (orientation and its evidence, where row ids came
from, or which h5ad matrix), for the user to check.

Parse-level problems (missing, empty, truncated or corrupt file, a gzip stream that ends
early, unknown format, non-numeric cell, malformed GCT, GEO or 10x layout) raise
`UserError` with one line naming the file and the row or column. Matrix-level checks
(NaN, duplicates, sizes) belong to `validation`.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from benchmark.data import layout
from benchmark.data.canonical import Dataset
from benchmark.errors import UserError

FORMATS = ("csv", "tsv", "parquet", "h5ad", "gct", "geo", "10x")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".tab": "tsv", ".parquet": "parquet",
               ".pq": "parquet", ".h5ad": "h5ad", ".gct": "gct"}
_SEPARATORS = {"csv": ",", "tsv": "\t", "gct": "\t"}

# Cells read as missing (then rejected as NaN by validation, with their position).
NA_TOKENS = ["", "NA", "N/A", "NaN", "nan", "NAN", "null", "NULL", "None", "#N/A", "na"]

SAMPLES_AS_ROWS = "samples as rows, genes as columns"
GENES_AS_ROWS = "genes as rows, samples as columns"


def detect_format(path: Path) -> str:
    """The format of `path` from its extension; a directory or a `matrix.mtx[.gz]` is 10x,
    and a `.txt[.gz]` file whose first line starts with `!Series_` is a GEO series matrix."""
    if path.is_dir() or _MTX_FILE.match(path.name):
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
    if Path(name).suffix == ".txt" and _is_geo_series_matrix(path):
        return "geo"
    return fmt


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


def read_matrix(path: str | Path, fmt: str | None = None, transpose: bool | None = None,
                index_column: bool | None = None) -> tuple[Dataset, str]:
    """Read `path` into a float32 samples x genes Dataset; also return the note on how it was read.

    Any read or decompression error (a truncated `.gz`, bytes that are not UTF-8, an
    unreadable file) is a `UserError` naming `path`, never a traceback.
    """
    source = open_matrix(path, fmt=fmt, transpose=transpose, index_column=index_column)
    return source.dataset(), source.note


def open_matrix(path: str | Path, fmt: str | None = None, transpose: bool | None = None,
                block_rows: int | None = None, index_column: bool | None = None) -> MatrixSource:
    """`path` opened for reading in blocks of about `block_rows` file rows (default: ~32 MiB of float32).

    `transpose`: True (`--transpose`, genes are rows), False (`--no-transpose`) or None
    (decided on evidence where the format leaves it open, csv, tsv and parquet).
    `index_column`: whether a csv or tsv file's first column is row ids (`--index-column`,
    `--no-index-column`); None: decided on evidence. Either raises UserError asking for
    the flag when the evidence is weak.

    csv, tsv, parquet and h5ad are read block by block (h5ad in backed mode), so a matrix
    larger than memory can be streamed; GCT, GEO and 10x files are read whole and given
    as one block.
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
        streamed = {"csv": _open_delimited, "tsv": _open_delimited, "parquet": _open_parquet, "h5ad": _open_h5ad}
        if fmt in streamed:
            if index_column is not None and fmt not in ("csv", "tsv"):
                raise UserError(f"{path}: --{'' if index_column else 'no-'}index-column applies to csv and tsv files only")
            source = (_open_delimited(path, fmt, transpose, block_rows, index_column) if fmt in ("csv", "tsv")
                      else streamed[fmt](path, fmt, transpose, block_rows))
            source.blocks = _guarded(path, source.blocks)
            return source
        ds, note = {"gct": _read_gct, "geo": _read_geo, "10x": _read_10x}[fmt](path, fmt, transpose)
        return MatrixSource(path=path, genes_are_rows=False, col_ids=list(ds.genes), note=note,
                            provenance=ds.provenance, blocks=iter([(list(ds.samples), ds.X)]))
    except _READ_ERRORS as exc:
        raise UserError(_read_error(path, exc)) from None


def _guarded(path: Path, blocks: Iterator) -> Iterator:
    """`blocks` with read, decompression and parse errors turned into one-line UserErrors."""
    import pandas as pd

    try:
        yield from blocks
    except (pd.errors.ParserError, *_READ_ERRORS) as exc:
        raise _block_error(path, exc) from None


def _block_error(path: Path, exc: BaseException) -> UserError:
    import pandas as pd

    if isinstance(exc, pd.errors.ParserError):
        return UserError(f"{path}: rows have different numbers of fields ({' '.join(str(exc).split())})")
    return UserError(_read_error(path, exc))


def _block_rows(n_cols: int, block_rows: int | None) -> int:
    from benchmark.data.rows import rows_per_block

    # float64 while parsing: half the float32 rows of a block
    return block_rows or max(200, rows_per_block(2 * n_cols))


# What reading a file can raise besides the readers' own UserErrors: gzip streams that end
# early (EOFError) or are damaged (zlib.error, BadGzipFile, an OSError), undecodable text,
# csv's own errors, and I/O errors such as a permission denied.
_READ_ERRORS = (EOFError, zlib.error, OSError, UnicodeDecodeError, csv.Error)


def _is_compression_error(exc: BaseException) -> bool:
    return isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile))


def _read_error(path: Path, exc: BaseException) -> str:
    """The one-line message for an exception of `_READ_ERRORS` raised while reading `path`."""
    if _is_compression_error(exc):
        return (f"{path}: the compressed file is truncated or corrupt ({_one_line(exc)}); "
                "download or compress it again")
    if isinstance(exc, UnicodeDecodeError):
        return f"{path}: not UTF-8 text ({_one_line(exc)}); save it as UTF-8 text"
    return f"{path}: cannot read ({_one_line(exc)})"


# --- numeric conversion shared by the text formats ------------------------------------


def _to_float32(frame, path: Path, row_kind: str, col_kind: str, line_offset: int | None = None) -> np.ndarray:
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


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")  # -sig: drop a byte-order mark before the corner cell


def _first_rows(path: Path, sep: str, n: int) -> list[list[str]]:
    """The first `n` non-blank rows, split on `sep` (csv quoting rules)."""
    rows: list[list[str]] = []
    try:
        with _open_text(path) as fh:
            for row in csv.reader(fh, delimiter=sep):
                if row and any(cell.strip() for cell in row):
                    rows.append(row)
                    if len(rows) == n:
                        break
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        if _is_compression_error(exc):
            raise
        raise UserError(f"{path}: cannot read as {'tab' if sep == chr(9) else 'comma'}-separated text "
                        f"({_one_line(exc)})") from None
    return rows


def _read_table(path: Path, sep: str, skiprows: int, n_fields: int, nrows: int | None = None, handle=None,
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
        if _is_compression_error(exc):
            raise
        raise UserError(f"{path}: cannot read ({_one_line(exc)})") from None


def _open_delimited(path: Path, fmt: str, transpose: bool | None, block_rows: int | None,
                    index_column: bool | None = None) -> MatrixSource:
    """A csv or tsv table: whether its first column is row ids, and its orientation, on
    evidence (`benchmark.data.layout`) unless `index_column` / `transpose` say."""
    import pandas as pd

    sep = _SEPARATORS[fmt]
    head = _first_rows(path, sep, 2)
    if not head:
        raise UserError(f"{path}: the file is empty")
    if len(head) < 2:
        raise UserError(f"{path}: the file has a header but no data rows")
    header, first = head
    n_fields = len(first)
    if n_fields < 2:
        raise UserError(
            f"{path}: the first data row has a single field; is this a {'comma' if sep == ',' else 'tab'}-separated "
            f"file? (pass --format {'tsv' if sep == ',' else 'csv'} otherwise)"
        )
    header_lines = _header_lines(path)
    chunk_rows = _block_rows(n_fields, block_rows)
    if len(header) == n_fields - 1:  # R's write.table: no corner cell, so the rows' first field is their id
        if index_column is False:
            raise UserError(f"{path}: --no-index-column, but the header has {len(header)} fields and the rows "
                            f"{n_fields}: the rows' first field is an id the header does not name")
        corner, has_index, index_reason = "", True, "the header has one field fewer than the rows"
    elif len(header) == n_fields:
        corner = header[0]
        if index_column is not None:
            has_index = index_column
            index_reason = "--index-column" if index_column else "--no-index-column"
        else:
            # The first column as text, over the first block of rows, is the evidence.
            peek = _read_table(path, sep, header_lines, n_fields, nrows=chunk_rows)
            has_index, index_reason = layout.index_column(path, corner, [str(i) for i in peek.index],
                                                          set(NA_TOKENS))
    else:
        raise UserError(
            f"{path}: the header has {len(header)} fields but the first data row has {n_fields}; "
            "expected one id column followed by one column per gene or sample"
        )
    col_ids = header[-(n_fields - 1):] if has_index else list(header)
    chunks = _read_table(path, sep, header_lines, n_fields, chunksize=chunk_rows, index=has_index)
    try:
        frame = next(chunks)
    except StopIteration:  # pragma: no cover - _first_rows found a data row
        raise UserError(f"{path}: the file has a header but no data rows") from None
    except (pd.errors.ParserError, *_READ_ERRORS) as exc:
        chunks.close()
        raise _block_error(path, exc) from None

    if transpose is not None:
        genes_rows, reason = transpose, "--transpose" if transpose else "--no-transpose"
    else:
        row_ids = [str(i) for i in frame.index] if has_index else None
        genes_rows, reason = layout.orientation(path, corner if has_index else "", row_ids, col_ids)
    row_kind, col_kind = ("gene", "sample") if genes_rows else ("sample", "gene")

    def blocks(frame=frame):
        line, row = header_lines + 1, 1
        with chunks:
            while frame is not None:
                if frame.shape[1] != len(col_ids):
                    raise UserError(f"{path}: the header names {len(col_ids)} columns but the rows have "
                                    f"{frame.shape[1]} values")
                if not has_index:
                    frame.index = [generated_id(row_kind, row + k) for k in range(len(frame))]
                frame.columns = col_ids
                yield [str(i) for i in frame.index], _to_float32(frame, path, row_kind, col_kind, line_offset=line)
                line += len(frame)
                row += len(frame)
                frame = next(chunks, None)

    orientation = GENES_AS_ROWS if genes_rows else SAMPLES_AS_ROWS
    first = f"the first column{f' {corner!r}' if corner.strip() else ''}"
    if has_index:
        ids = f"{row_kind} ids from {first} ({index_reason})"
    else:
        ids = (f"no id column ({first}: {index_reason}, so it is {col_kind} {corner!r}): {row_kind} ids generated, "
               f"{generated_id(row_kind, 1)} for data row 1 on")
    note = f"read as {orientation} ({reason}); {ids}"
    provenance = {"format": fmt, "orientation": orientation,
                  "values": "as stored in the file; genebench applies only the dataset transform (datasets.<name>.transform)"}
    if not has_index:
        provenance[f"{row_kind}_ids"] = "generated from the data row number (the file has no id column)"
    return MatrixSource(path=path, genes_are_rows=genes_rows, col_ids=list(col_ids), note=note,
                        provenance=provenance, blocks=blocks(), generated_ids=None if has_index else row_kind)


def generated_id(kind: str, row: int) -> str:
    """The id given to data row `row` (from 1) of a table without an id column: `sample000001`."""
    return f"{kind}{row:06d}"


def _header_lines(path: Path) -> int:
    """File lines up to and including the header (blank lines before it count)."""
    with _open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                return number
    return 0


# --- parquet --------------------------------------------------------------------------


def _open_parquet(path: Path, fmt: str, transpose: bool, block_rows: int | None) -> MatrixSource:
    """Row ids from the pandas index pyarrow stored (unless it was a plain range), else from
    the first text column; every other column is a gene (a sample with --transpose)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        schema = table.schema_arrow
        n_rows = table.metadata.num_rows
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise UserError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None
    meta = schema.pandas_metadata or {}
    stored_index = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    names = list(schema.names)
    if n_rows == 0 or len(names) - len(stored_index) == 0:
        raise UserError(f"{path}: the Parquet table is empty")
    if stored_index:
        id_column, id_source = stored_index[0], "the index"
    else:
        text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                or (pa.types.is_dictionary(f.type) and pa.types.is_string(f.type.value_type))]
        if not text:
            raise UserError(
                f"{path}: no row ids: expected a non-range index or a text column of "
                f"{'gene' if transpose else 'sample'} ids"
            )
        id_column, id_source = text[0], f"column {text[0]!r}"
    value_columns = [c for c in names if c != id_column and c not in stored_index]
    col_ids = [str(c) for c in value_columns]
    if transpose is None:
        try:
            row_ids = [str(i) for i in table.read_row_group(0, columns=[id_column]).column(0).to_pylist()]
        except Exception as exc:  # a damaged first row group
            raise UserError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None
        transpose, reason = layout.orientation(path, "" if id_column is None else str(id_column), row_ids, col_ids)
    else:
        reason = "--transpose" if transpose else "--no-transpose"
    row_kind, col_kind = ("gene", "sample") if transpose else ("sample", "gene")

    def blocks():
        # Row group by row group: pyarrow's iter_batches buffered ~1 GB reading a 480 MB
        # file, read_row_group one group at a time. A row group is read whole, so memory
        # follows the file's largest row group (data synth writes ~64 MiB ones).
        try:
            size = _block_rows(len(value_columns), block_rows)
            batches = (batch for group in range(table.num_row_groups)
                       for batch in table.read_row_group(group, columns=[id_column, *value_columns],
                                                         use_threads=False).to_batches(max_chunksize=size))
            numeric = all(pa.types.is_floating(schema.field(c).type) or pa.types.is_integer(schema.field(c).type)
                          for c in value_columns)
            for batch in batches:
                if numeric:  # straight from Arrow: no pandas frame, one float32 copy
                    values = np.empty((batch.num_rows, len(value_columns)), dtype=np.float32)
                    for j in range(len(value_columns)):
                        values[:, j] = batch.column(j + 1).to_numpy(zero_copy_only=False)
                    yield [str(i) for i in batch.column(0).to_pylist()], values
                    continue
                frame = pa.Table.from_batches([batch]).to_pandas(ignore_metadata=True)
                frame = frame.set_index(id_column)
                frame.index = [str(i) for i in frame.index]
                frame.columns = col_ids
                yield list(frame.index), _to_float32(frame, path, row_kind, col_kind)
        except (UserError, *_READ_ERRORS):
            raise
        except Exception as exc:  # a damaged column chunk surfaces while reading
            raise UserError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None

    orientation = GENES_AS_ROWS if transpose else SAMPLES_AS_ROWS
    note = f"read as {orientation} ({reason}); {row_kind} ids from {id_source}"
    provenance = {"format": fmt, "orientation": orientation,
                  "values": "as stored in the file; genebench applies only the dataset transform (datasets.<name>.transform)"}
    return MatrixSource(path=path, genes_are_rows=transpose, col_ids=col_ids, note=note, provenance=provenance,
                        blocks=blocks())


# --- h5ad -----------------------------------------------------------------------------


def h5ad_matrix(adata) -> tuple[object, list[str], str]:
    """(matrix, gene ids, which) of an AnnData: `raw.X` when raw is present, else `X`."""
    if adata.raw is not None and adata.raw.X is not None:
        return adata.raw.X, [str(g) for g in adata.raw.var_names], "raw.X"
    return adata.X, [str(g) for g in adata.var_names], "X"


def dense_float32(matrix) -> np.ndarray:
    """A dense C-order float32 copy of a numpy, scipy.sparse or h5py-backed matrix."""
    import scipy.sparse

    if scipy.sparse.issparse(matrix):
        matrix = matrix.toarray()
    return np.ascontiguousarray(np.asarray(matrix), dtype=np.float32)


def _open_h5ad(path: Path, fmt: str, transpose: bool, block_rows: int | None) -> MatrixSource:
    """The h5ad file in anndata's backed mode: its matrix is read block by block of obs."""
    import anndata

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # old-layout files: anndata moves elements and warns
            adata = anndata.read_h5ad(path, backed="r")
        matrix, var_ids, which = h5ad_matrix(adata)
        if matrix is None:
            raise UserError(f"{path}: the AnnData object has no X matrix")
        dtype = np.dtype(matrix.dtype)
        obs_ids = [str(s) for s in adata.obs_names]
    except UserError:
        raise
    except Exception as exc:  # h5py/anndata raise OSError, KeyError, ... for a damaged file
        raise UserError(f"{path}: not a readable h5ad file ({_one_line(exc)})") from None
    if not np.issubdtype(dtype, np.number) and dtype.kind != "b":
        raise UserError(f"{path}: {which} is not numeric")
    step = _block_rows(len(var_ids), block_rows)

    def blocks():
        try:
            for start in range(0, len(obs_ids), step):
                yield obs_ids[start:start + step], dense_float32(matrix[start:start + step])
        except Exception as exc:
            raise UserError(f"{path}: not a readable h5ad file ({_one_line(exc)})") from None
        finally:
            adata.file.close()

    orientation = GENES_AS_ROWS if transpose else SAMPLES_AS_ROWS
    note = f"used {which} ({'raw is present' if which == 'raw.X' else 'no raw'}); obs as {'genes (--transpose)' if transpose else 'samples'}"
    provenance = {"format": fmt, "matrix": which, "orientation": orientation,
                  "values": "as stored in the file; genebench applies only the dataset transform (datasets.<name>.transform)"}
    return MatrixSource(path=path, genes_are_rows=bool(transpose), col_ids=var_ids, note=note, provenance=provenance,
                        blocks=blocks())


# --- GCT ------------------------------------------------------------------------------


def _read_gct(path: Path, fmt: str, transpose: bool) -> tuple[Dataset, str]:
    """GCT v1.2 (`Name`, `Description`, samples...) and v1.3 (row and column metadata).

    v1.3 layout: line 2 is `rows cols row_meta col_meta`; the header is `id`, the
    `row_meta` metadata names, then sample ids; then `col_meta` lines of column metadata
    (name, `row_meta` filler cells, one value per sample); then the data rows.
    """
    if transpose:
        raise UserError(f"{path}: --transpose does not apply to GCT (genes are rows by definition)")
    head = _first_rows(path, "\t", 3)
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
    samples = header[1 + n_row_meta:]
    skip = 3 + n_col_meta
    n_fields = len(header)
    frame = _read_table(path, "\t", skip, n_fields)
    if frame.shape[0] != n_rows:
        raise UserError(f"{path}: line 2 declares {n_rows} genes but the file has {frame.shape[0]} data rows")
    if frame.shape[1] != n_fields - 1:
        raise UserError(f"{path}: data rows have {frame.shape[1] + 1} fields, expected {n_fields}")
    frame = frame.iloc[:, n_row_meta:]
    frame.columns = samples
    genes = [str(i) for i in frame.index]
    values = _to_float32(frame, path, "gene", "sample", line_offset=skip + 1)
    provenance = {"format": f"gct {version[1:]}", "orientation": GENES_AS_ROWS,
                  "values": "as stored in the file; genebench applies only the dataset transform (datasets.<name>.transform)"}
    note = f"GCT {version[1:]}: genes as rows (by definition), {n_rows} genes x {n_cols} samples"
    return Dataset(X=np.ascontiguousarray(values.T, dtype=np.float32), genes=genes, samples=list(samples),
                   provenance=provenance), note


# --- GEO series matrix ----------------------------------------------------------------

_GEO_BEGIN = "!series_matrix_table_begin"
_GEO_END = "!series_matrix_table_end"


def _is_geo_series_matrix(path: Path) -> bool:
    """True when the first non-blank line starts with `!Series_` (GEO's own first line) or
    opens the table, which is how a series matrix differs from any tab-separated table."""
    with _open_text(path) as fh:
        for line in itertools.islice(fh, 100):
            if line.strip():
                return line.lstrip().strip('"').lower().startswith(("!series_", _GEO_BEGIN))
    return False


def _first_cell(line: str) -> str:
    return line.split("\t", 1)[0].strip().strip('"')


def _metadata_values(line: str) -> list[str]:
    """The quoted values after the key of a `!Series_*` / `!Sample_*` line."""
    row = next(csv.reader([line.rstrip("\r\n")], delimiter="\t"), [])
    return [cell.strip() for cell in row[1:] if cell.strip()]


def _read_geo(path: Path, fmt: str, transpose: bool) -> tuple[Dataset, str]:
    """The table of a GEO series matrix: genes (ID_REF) x samples (GSM ids), transposed.

    A first pass streams the file for the table's line numbers and a little metadata (the
    series accession and what the submitters did to the values); the second hands pandas
    the table rows only, so the `!` metadata lines never reach the parser.
    """
    if transpose:
        raise UserError(f"{path}: --transpose does not apply to a GEO series matrix (genes are rows by definition)")
    begin = header_line = end = None
    header: list[str] = []
    data_rows = 0
    accession, processing = None, []
    with _open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            if begin is None:
                key = _first_cell(line)
                if key.lower() == _GEO_BEGIN:
                    begin = number
                elif key == "!Series_geo_accession":
                    accession = next(iter(_metadata_values(line)), None)
                elif key == "!Sample_data_processing":  # one value per sample, mostly the same text
                    processing += [v for v in dict.fromkeys(_metadata_values(line)) if v not in processing]
            elif _first_cell(line).lower() == _GEO_END:
                end = number
                break
            elif not line.strip():
                continue
            elif header_line is None:
                header_line = number
                header = next(csv.reader([line.rstrip("\r\n")], delimiter="\t"))
            else:
                data_rows += 1
    if begin is None:
        raise UserError(f"{path}: no {_GEO_BEGIN!r} line; a GEO series matrix holds its table between "
                        f"{_GEO_BEGIN!r} and {_GEO_END!r}")
    if end is None:
        raise UserError(f"{path}: no {_GEO_END!r} line after the table (line {begin} opens it): "
                        "the file is truncated; download it again")
    if header_line is None or data_rows == 0:
        raise UserError(f"{path}: the table between lines {begin} and {end} has "
                        f"{'no header' if header_line is None else 'a header but no data rows'}")
    if len(header) < 2:
        raise UserError(f"{path}: line {header_line}: the table header names no samples (expected 'ID_REF', then "
                        "one GSM id per sample, tab-separated)")
    with _open_text(path) as fh:
        for _ in range(header_line):
            fh.readline()
        frame = _read_table(path, "\t", 0, len(header), nrows=data_rows, handle=fh)
    if frame.shape[1] != len(header) - 1:
        raise UserError(f"{path}: line {header_line}: the header names {len(header) - 1} samples but the rows have "
                        f"{frame.shape[1]} values")
    samples = [cell.strip() for cell in header[1:]]
    frame.columns = samples
    genes = [str(i) for i in frame.index]
    values = _to_float32(frame, path, "gene", "sample", line_offset=header_line + 1)
    id_column = header[0].strip() or "the first column"
    provenance = {"format": "geo series matrix", "orientation": GENES_AS_ROWS,
                  "gene_ids": f"{id_column}: the platform's probe or gene ids",
                  "values": "as stored in the file; genebench applies only the dataset transform (datasets.<name>.transform)"}
    if accession:
        provenance["series"] = accession
    if processing:  # the submitters' own account of normalisation and log scale
        provenance["source_processing"] = " | ".join(processing)
    note = (f"GEO series matrix{' ' + accession if accession else ''}: the table of lines {begin}-{end}, genes as rows "
            f"(by definition; ids from {id_column}, the platform's probe or gene ids), "
            f"{len(genes)} genes x {len(samples)} samples")
    return Dataset(X=np.ascontiguousarray(values.T, dtype=np.float32), genes=genes, samples=samples,
                   provenance=provenance), note


# --- 10x Genomics ---------------------------------------------------------------------

_MTX_FILE = re.compile(r"^(.*)matrix\.mtx(\.gz)?$")
# The two layouts scanpy's read_10x_mtx reads (it picks v2 when genes.tsv exists).
_TENX_LAYOUTS = {
    "Cell Ranger v2": ("matrix.mtx", "genes.tsv", "barcodes.tsv"),
    "Cell Ranger v3": ("matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz"),
}
_TENX_PARTS = re.compile(r"^(matrix\.mtx|features\.tsv|genes\.tsv|barcodes\.tsv)(\.gz)?$")


def _tenx_location(path: Path) -> tuple[Path, str]:
    """(directory, file-name prefix) of the 10x matrix that `path` (a directory or its matrix file) names."""
    if path.is_file():
        match = _MTX_FILE.match(path.name)
        if match is None:
            raise UserError(f"{path}: a 10x Genomics matrix is a directory, or its file named matrix.mtx[.gz] "
                            "(with an optional prefix)")
        return path.parent, match.group(1)
    prefixes = sorted({m.group(1) for p in path.iterdir() if (m := _MTX_FILE.match(p.name)) and p.is_file()})
    if not prefixes:
        raise UserError(f"{path}: no matrix.mtx or matrix.mtx.gz: not a 10x Genomics directory (expected "
                        "matrix.mtx[.gz], features.tsv[.gz] or genes.tsv, barcodes.tsv[.gz])")
    if len(prefixes) > 1:
        raise UserError(f"{path}: holds {len(prefixes)} 10x matrices (prefixes {', '.join(map(repr, prefixes))}); "
                        f"pass one of their matrix files, e.g. {path / (prefixes[0] + 'matrix.mtx.gz')}")
    return path, prefixes[0]


def _read_10x(path: Path, fmt: str, transpose: bool) -> tuple[Dataset, str]:
    """A 10x Genomics matrix directory via `scanpy.read_10x_mtx`: barcodes x genes.

    Genes are named by their ids (features.tsv's first column): the symbols of the second
    column repeat (scanpy would rename them '-1', '-2'), ids do not. Only 'Gene
    Expression' features are kept (antibody or guide captures are not expression).
    """
    if transpose:
        raise UserError(f"{path}: --transpose does not apply to a 10x directory (barcodes are samples by definition)")
    directory, prefix = _tenx_location(path)
    present = {p.name[len(prefix):] for p in directory.iterdir()
               if p.name.startswith(prefix) and _TENX_PARTS.match(p.name[len(prefix):])}
    layout = "Cell Ranger v2" if "genes.tsv" in present else "Cell Ranger v3"
    missing = [name for name in _TENX_LAYOUTS[layout] if name not in present]
    if missing:
        found = ", ".join(prefix + name for name in sorted(present)) or "none of its files"
        raise UserError(
            f"{directory}: found {found} but not {prefix}{missing[0]}; a 10x directory is read in scanpy's two "
            f"layouts, v3 ({', '.join(_TENX_LAYOUTS['Cell Ranger v3'])}) or v2 "
            f"({', '.join(_TENX_LAYOUTS['Cell Ranger v2'])}): gzip or gunzip the files to match one"
        )
    import scanpy as sc

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scanpy/anndata chatter about names and dtypes
            adata = sc.read_10x_mtx(directory, var_names="gene_ids", prefix=prefix or None)
        X = dense_float32(adata.X)
    except Exception as exc:  # a malformed .mtx or .tsv raises ValueError, KeyError, EOFError, ...
        raise UserError(f"{directory}: not a readable 10x Genomics matrix ({_one_line(exc)})") from None
    genes_file = prefix + _TENX_LAYOUTS[layout][1]
    provenance = {"format": "10x", "layout": layout, "orientation": "barcodes (cells) as samples, genes as columns",
                  "gene_ids": f"first column of {_TENX_LAYOUTS[layout][1]}; Gene Expression features only",
                  "values": "as stored in the file; genebench applies only the dataset transform (datasets.<name>.transform)"}
    note = (f"10x Genomics matrix ({layout}{', prefix ' + repr(prefix) if prefix else ''}): barcodes as samples, "
            f"genes named by {genes_file}'s first column (ids are unique; symbols may repeat)")
    return Dataset(X=X, genes=[str(g) for g in adata.var_names], samples=[str(s) for s in adata.obs_names],
                   provenance=provenance), note


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
