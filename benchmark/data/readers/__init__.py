"""Readers: an expression file in, a samples x genes matrix out, in blocks of file rows.

`open_matrix(path, fmt=None, transpose=None) -> MatrixSource` opens a file for reading in
blocks, which is how `data import` handles matrices larger than memory;
`read_matrix(path, ...) -> (Dataset, note)` reads every block into one `Dataset`. One
module per format, each streaming in blocks where the format allows:

- `delimited`: csv / tsv (also `.txt`, and any of them gzipped); row ids and orientation
  decided on evidence (`benchmark.data.layout`) unless a flag says;
- `parquet`: row group by row group;
- `h5ad`: AnnData in backed mode, `raw.X` when present, else `X`;
- `gct`: GCT v1.2 and v1.3, genes as rows by definition, a block of genes at a time;
- `geo`: a GEO series matrix (`GSE..._series_matrix.txt[.gz]`), genes as rows by
  definition, a block of genes at a time;
- `tenx`: a 10x Genomics (Cell Ranger) directory, via scanpy's `read_10x_mtx`.

`formats` detects the format and dispatches; `source` holds `MatrixSource` and the
one-line read errors; `text` the parsing the text formats share. `note` says how the
file was read (orientation and its evidence, where row ids came from, or which h5ad
matrix), for the user to check.

Parse-level problems (missing, empty, truncated or corrupt file, a gzip stream that ends
early, unknown format, non-numeric cell, malformed GCT, GEO or 10x layout) raise
`UserError` with one line naming the file and the row or column. Matrix-level checks
(NaN, duplicates, sizes) belong to `validation`.
"""

# The entry points callers use (commands, bundled, synthetic, tests).
from benchmark.data.readers.formats import FORMATS, detect_format, open_matrix, read_matrix
from benchmark.data.readers.source import MatrixSource, dense_float32

__all__ = ["FORMATS", "MatrixSource", "dense_float32", "detect_format", "open_matrix", "read_matrix"]
