"""Parquet tables, read row group by row group.

Sample ids come from the index pyarrow stored when it is not a plain range, else from the
first string column; every other column is a gene (a sample with `--transpose`, or when
the ids say genes are rows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.data import layout
from benchmark.data.readers.source import (GENES_AS_ROWS, READ_ERRORS, SAMPLES_AS_ROWS, VALUES_AS_STORED,
                                           MatrixSource, block_rows, one_line)
from benchmark.data.readers.text import to_float32
from benchmark.errors import UserError


def open_parquet(path: Path, fmt: str, transpose: bool | None, block_size: int | None) -> MatrixSource:
    """Row ids from the pandas index pyarrow stored (unless it was a plain range), else from
    the first text column; every other column is a gene (a sample with --transpose)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        schema = table.schema_arrow
        n_rows = table.metadata.num_rows
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise UserError(f"{path}: not a readable Parquet file ({one_line(exc)})") from None
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
            raise UserError(f"{path}: not a readable Parquet file ({one_line(exc)})") from None
        transpose, reason = layout.orientation(path, "" if id_column is None else str(id_column), row_ids, col_ids)
    else:
        reason = "--transpose" if transpose else "--no-transpose"
    row_kind, col_kind = ("gene", "sample") if transpose else ("sample", "gene")

    def blocks():
        # Row group by row group: pyarrow's iter_batches buffered ~1 GB reading a 480 MB
        # file, read_row_group one group at a time. A row group is read whole, so memory
        # follows the file's largest row group (data synth writes ~64 MiB ones).
        try:
            size = block_rows(len(value_columns), block_size)
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
                yield list(frame.index), to_float32(frame, path, row_kind, col_kind)
        except (UserError, *READ_ERRORS):
            raise
        except Exception as exc:  # a damaged column chunk surfaces while reading
            raise UserError(f"{path}: not a readable Parquet file ({one_line(exc)})") from None

    orientation = GENES_AS_ROWS if transpose else SAMPLES_AS_ROWS
    note = f"read as {orientation} ({reason}); {row_kind} ids from {id_source}"
    provenance = {"format": fmt, "orientation": orientation, "values": VALUES_AS_STORED}
    return MatrixSource(path=path, genes_are_rows=transpose, col_ids=col_ids, note=note, provenance=provenance,
                        blocks=blocks())
