"""How a table is laid out, decided on evidence: is its first column row ids, and which axis holds genes.

A user's CSV says neither. Guessing is how a gene silently became the sample ids and a
genes x samples file was read as 200 samples x 300 genes, so both are decided from what
the ids look like, and where that is weak the user is asked for the flag that decides:

- `index_column(...)`: a first column of non-numeric ids is row ids; a numeric first
  column is data (its header cell is then a gene or sample id, and row ids are
  generated). A header cell that names a row-id column (empty, `sample`, `gene_id`,
  ...) over numbers, or a column that mixes text and numbers, is refused
  (`--index-column` / `--no-index-column` decide).
- `orientation(...)`: ids are classified one by one (`id_kind`: Ensembl, Entrez, gene
  symbol, sample id, row number, other) and an axis takes the kind of at least
  `AXIS_SHARE` of its ids. Gene-like ids (Ensembl, Entrez, symbols) on one axis and
  sample-like ids on the other decide, and so do Ensembl ids against anything not
  gene-like, or a first header cell that names the rows (`gene_id`, `sample`, ...).
  Anything weaker is refused (`--transpose` / `--no-transpose` decide). Matrix shape
  is never used: expression data have more genes than samples as often as the reverse.

Each decision comes back with its reason in words, for the one-line summary.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from benchmark.errors import UserError

# Share of an axis's ids that must be of one kind for the axis to be of that kind.
AXIS_SHARE = 0.9
# Ids looked at per axis (a header may name 60,000 genes; this many decide as well).
IDS_LOOKED_AT = 2000

GENE_KINDS = ("ensembl", "entrez", "symbol")
KIND_WORDS = {"ensembl": "Ensembl gene ids", "entrez": "Entrez gene ids (integers)", "symbol": "gene symbols",
              "sample": "sample ids", "row number": "row numbers", None: "neither gene nor sample ids"}

# First header cells that say what the rows are.
GENE_CORNERS = {"gene", "genes", "gene_id", "gene_ids", "geneid", "gene_symbol", "genesymbol", "symbol",
                "gene_name", "ensembl", "ensembl_id", "ensembl_gene_id", "entrez", "entrez_id", "id_ref",
                "probe", "probe_id"}
SAMPLE_CORNERS = {"sample", "samples", "sample_id", "sampleid", "cell", "cells", "cell_id", "barcode",
                  "barcodes", "obs", "obs_names"}
# First header cells that name a row-id column without saying of what.
_ID_CORNERS = {"", "id", "ids", "index", "name", "names", "row", "rows", "rownames", "row_names", "unnamed: 0"}

_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
_INTEGER = re.compile(r"^\d{1,9}$")
# Positional gene ids (`g0001`, `GENE01`), as bundled zeisel and cbmc and `data synth` write them.
_GENE_WORD = re.compile(r"^(gene|g)[-_.]?\d+$", re.IGNORECASE)
_SAMPLE_ID = [
    re.compile(r"^[ACGTN]{8,}(-\d+)?$"),                    # 10x / Drop-seq barcodes
    re.compile(r"^(GSM|SRR|SRX|SRS|ERR|ERS|DRR|SAMN|SAMEA)\d+$"),  # GEO and SRA accessions
    re.compile(r"^(TCGA|GTEX)-", re.IGNORECASE),          # TCGA and GTEx sample barcodes
    re.compile(r"^(sample|cell|patient|donor|subject|replicate|rep|well|batch|ctrl|control|case|barcode|"
               r"spot|plate|tumou?r|normal|s|c)([-_.]?\d+\w*|[-_.]\w+)?$", re.IGNORECASE),
    re.compile(r"^[a-z]{1,4}[-_.]?\d+$"),                 # s1, pt3, ctl2: lower-case prefix, a number
]
# HGNC-style (TP53, HLA-DRB1, RP11-34P13.7), MGI-style (Gapdh, H2-Ab1) and RIKEN (1700001C19Rik) symbols.
_SYMBOL = re.compile(r"^([A-Z][A-Z0-9]*([-.][A-Za-z0-9]+)*|[A-Z][a-z0-9]+([-.][A-Za-z0-9]+)*|\d+[A-Z]\d+Rik)$")


def id_kind(value: str) -> str | None:
    """'ensembl', 'entrez', 'symbol', 'sample' or None (neither), for one id."""
    value = value.strip().strip('"')
    if _ENSEMBL.match(value):
        return "ensembl"
    if _INTEGER.match(value):
        return "entrez"
    if _GENE_WORD.match(value):
        return "symbol"
    if any(p.match(value) for p in _SAMPLE_ID):
        return "sample"
    if _SYMBOL.match(value):
        return "symbol"
    return None


def axis_kind(ids: list[str]) -> str | None:
    """The kind of at least `AXIS_SHARE` of `ids` (their first `IDS_LOOKED_AT`), else None.

    Integers counting up from 0 or 1 are 'row number' (what R and pandas write when a
    table has no ids), not Entrez ids.
    """
    ids = [str(i) for i in ids[:IDS_LOOKED_AT]]
    if not ids:
        return None
    if all(_INTEGER.match(i.strip()) for i in ids):
        numbers = [int(i) for i in ids]
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))) and numbers[0] in (0, 1):
            return "row number"
    kind, count = Counter(id_kind(i) for i in ids).most_common(1)[0]
    return kind if kind is not None and count >= AXIS_SHARE * len(ids) else None


def _examples(ids: list[str]) -> str:
    shown = ", ".join(repr(str(i)) for i in ids[:3])
    return shown + (", ..." if len(ids) > 3 else "")


def _corner_key(corner: str) -> str:
    return corner.strip().strip('"').lower().replace(" ", "_")


def orientation(path: Path, corner: str, row_ids: list[str] | None, col_ids: list[str]) -> tuple[bool, str]:
    """(genes_are_rows, evidence) for a table without `--transpose`/`--no-transpose`.

    `row_ids` is None when the table has no id column (its row ids are generated); then
    the header's ids alone decide. Raises UserError asking for the flag when the
    evidence is weak or contradicts itself.
    """
    key = _corner_key(corner)
    corner_says = True if key in GENE_CORNERS else False if key in SAMPLE_CORNERS else None
    rows = axis_kind(row_ids) if row_ids is not None else None
    cols = axis_kind(col_ids)
    rows_words = f"row ids are {KIND_WORDS[rows]}" if row_ids is not None else "rows have no ids"
    cols_words = f"column ids are {KIND_WORDS[cols]}"

    ids_say = None
    if cols in GENE_KINDS and (rows in ("sample", "row number") or (row_ids is None)):
        ids_say = False
    elif rows in GENE_KINDS and cols == "sample":
        ids_say = True
    elif cols == "ensembl" and rows not in GENE_KINDS:
        ids_say = False
    elif rows == "ensembl" and cols not in GENE_KINDS:
        ids_say = True
    elif row_ids is None and cols == "sample":
        ids_say = True
    flags = "pass --transpose if genes are rows (samples are columns), --no-transpose if samples are rows"
    if corner_says is not None and ids_say is not None and corner_says != ids_say:
        raise UserError(f"{path}: the first header cell {corner!r} says the rows are "
                        f"{'genes' if corner_says else 'samples'}, but {cols_words} and {rows_words}; {flags}")
    if ids_say is not None:
        return ids_say, f"{cols_words}, {rows_words}" + (f", first header cell {corner!r}" if corner_says is not None else "")
    if corner_says is not None:
        return corner_says, f"first header cell {corner!r} names {'genes' if corner_says else 'samples'}"
    row_examples = f" ({_examples(row_ids)})" if row_ids is not None else ""
    raise UserError(f"{path}: cannot tell which axis holds the genes: {cols_words} ({_examples(col_ids)}), "
                    f"{rows_words}{row_examples}; {flags}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def index_column(path: Path, corner: str, first_column: list[str], missing: set[str]) -> tuple[bool, str]:
    """(the first column holds row ids, why: 'it holds text ids' or 'it holds numbers'), from
    its values in the first rows.

    `missing`: the tokens read as missing values (not evidence either way). Raises
    UserError naming `--index-column` / `--no-index-column` where the header and the
    column disagree or the column mixes text and numbers.
    """
    values = [(row, v) for row, v in enumerate(first_column, start=1) if v.strip() not in missing]
    text = [(row, v) for row, v in values if not _is_number(v)]
    flags = "pass --index-column if it holds row ids, --no-index-column if it holds a gene's or sample's values"
    if not values or len(text) == len(values):
        return True, "it holds text ids"
    if not text:
        if _corner_key(corner) in _ID_CORNERS | GENE_CORNERS | SAMPLE_CORNERS:
            above = "is empty, as over a row-id column" if not corner.strip() else f"{corner!r} names a row-id column"
            raise UserError(f"{path}: the first header cell {above}, but the first column holds numbers "
                            f"({_examples([v for _, v in values])}); {flags}")
        return False, "it holds numbers"
    number = next((row, v) for row, v in values if _is_number(v))
    raise UserError(f"{path}: the first column{_named(corner)} mixes text and numbers ({text[0][1]!r} in data row "
                    f"{text[0][0]}, {number[1]!r} in data row {number[0]}); {flags}")


def _named(corner: str) -> str:
    return f" ({corner!r})" if corner.strip() else ""
