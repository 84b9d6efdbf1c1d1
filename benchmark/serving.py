"""`genebench serve-example`: a valid `mlflow models serve` request for a registered model.

A served model takes its feature genes as columns (hundreds of gene ids), which no user
types by hand; a request missing them gets HTTP 400 naming what is missing. This writes
one that works: the registered model's input columns (its signature) and the raw `data/`
values (before `datasets.<name>.transform`, as the model expects) of held-out samples,
in MLflow's `dataframe_split` form:

    genebench serve-example --dataset pbmc68k --task multi --rows 2 > request.json
    curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d @request.json
"""

from __future__ import annotations

import json

from benchmark.config import Config, mask_url
from benchmark.errors import UserError

ALIAS = "champion"
DEFAULT_ROWS = 2


def model_uri(config: Config, task: str, alias: str = ALIAS) -> str:
    """`models:/genebench-<dataset>-<task>@champion` (config bound to the dataset)."""
    return f"models:/genebench-{config.dataset}-{task}@{alias}"


def feature_genes(config: Config, task: str, alias: str = ALIAS) -> list[str]:
    """The input columns of the registered model's signature (its feature gene ids)."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    from benchmark import tracking

    tracking.configure(config)
    uri = model_uri(config, task, alias)
    try:
        signature = get_model_info(uri).signature
    except MlflowException as exc:  # no such registered model, or no version with that alias
        detail = " ".join(str(exc.message).split())[:200]
        raise UserError(f"{uri}: not found in {mask_url(config.tracking_uri)} ({detail}); run "
                        f"`genebench promote --dataset {config.dataset} --task {task}` first") from None
    if signature is None or signature.inputs is None:
        raise UserError(f"{uri}: the model has no input signature to build a request from")
    return list(signature.inputs.input_names())


def example_request(config: Config, task: str, rows: int = DEFAULT_ROWS, alias: str = ALIAS) -> dict:
    """`{"dataframe_split": {"columns", "index", "data"}}`: the first `rows` held-out samples
    (prepare's split) of `config.dataset`, every feature gene the model takes, raw values."""
    from benchmark import tracking
    from benchmark.data.canonical import load_dataset
    from benchmark.paths import prepared_dir

    genes = feature_genes(config, task, alias)
    if not (prepared_dir(config) / "split.json").exists():
        raise UserError(f"{prepared_dir(config).relative_to(config.root)}: not prepared; run "
                        f"`genebench prepare --dataset {config.dataset}` first")
    known = set(load_dataset(config.data_dir).genes)
    missing = [g for g in genes if g not in known]
    if missing:
        raise UserError(f"{model_uri(config, task, alias)}: takes gene {missing[0]!r}, which data/{config.dataset}/ "
                        f"no longer has ({len(missing)} of its {len(genes)} feature genes are missing)")
    frame = tracking.raw_frame(config, "test", genes=genes, limit=rows)
    return {"dataframe_split": {"columns": list(frame.columns), "index": [str(i) for i in frame.index],
                                "data": frame.to_numpy().tolist()}}


def serve_example(config: Config, task: str, rows: int = DEFAULT_ROWS) -> int:
    """Print the request (JSON, one line) on stdout, for `> request.json`."""
    print(json.dumps(example_request(config, task, rows)))
    return 0
