"""params.yaml: schema, loading, validation, and the project root everything resolves to.

Every command reads one params file (default `<root>/params.yaml`). Unknown keys, wrong
types and out-of-range values raise `UserError` with one line naming the file and the key.
Relative paths and `sqlite:///relative.db` URLs resolve against the project root, so the
stores are the same whatever the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmark import ARCHS, DEEP_ARCHS
from benchmark.errors import UserError

ROOT_MARKERS = ("dvc.yaml", "params.yaml", ".dvc")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Section):
    dir: str = "data"
    transform: Literal["none", "log1p"] = "none"


class TaskParams(_Section):
    top_k: int = Field(50, ge=1)
    single_gene: Optional[str] = None


class FeatureParams(_Section):
    max_genes: Optional[int] = Field(None, ge=1)
    pca_components: Optional[int] = Field(None, ge=1)


class SplitParams(_Section):
    test_size: float = Field(0.2, gt=0, lt=1)
    folds: int = Field(5, ge=2)
    seed: int = 42


class TrainingParams(_Section):
    max_epochs: int = Field(60, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    patience: int = Field(8, ge=1)
    validation_fraction: float = Field(0.15, gt=0, lt=1)
    seed: int = 42


class TuningParams(_Section):
    n_trials: int = Field(16, ge=1)
    n_startup_trials: int = Field(5, ge=0)
    folds: int = Field(2, ge=1)
    pruner: Literal["none", "median", "hyperband"] = "median"
    storage: str = "sqlite:///optuna.db"
    seed: int = 42
    timeout: Optional[float] = Field(None, gt=0)
    heartbeat_interval: int = Field(30, ge=1)
    grace_period: int = Field(90, ge=1)


class SearchParam(_Section):
    """One hyperparameter: int or float in [low, high] (optionally log or stepped), or a choice."""

    type: Literal["int", "float", "categorical"]
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _check(self) -> "SearchParam":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None:
                raise ValueError("a categorical parameter takes 'choices', not 'low'/'high'")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"an {self.type} parameter needs both 'low' and 'high'")
        if self.choices is not None:
            raise ValueError(f"an {self.type} parameter takes 'low'/'high', not 'choices'")
        if self.low > self.high:
            raise ValueError(f"'low' ({self.low:g}) must not exceed 'high' ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled parameter needs 'low' > 0")
        if self.log and self.step is not None:
            raise ValueError("'log' and 'step' cannot be combined")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int parameter needs integer 'low' and 'high'")
        return self


class ModelParams(_Section):
    defaults: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, SearchParam] = Field(default_factory=dict)


class MlflowParams(_Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "genebench"


class PromotionParams(_Section):
    enabled: bool = True
    candidate: str = "attention_lstm"
    min_improvement: float = Field(0.0, ge=0, lt=1)

    @field_validator("candidate")
    @classmethod
    def _known(cls, candidate: str) -> str:
        if candidate != "best" and candidate not in ARCHS:
            raise ValueError(f"expected 'best' or one of {', '.join(ARCHS)}, got {candidate!r}")
        return candidate


class Params(_Section):
    data: DataParams = DataParams()
    task: TaskParams = TaskParams()
    features: FeatureParams = FeatureParams()
    split: SplitParams = SplitParams()
    training: TrainingParams = TrainingParams()
    tuning: TuningParams = TuningParams()
    models: dict[str, ModelParams] = Field(default_factory=dict)
    mlflow: MlflowParams = MlflowParams()
    promotion: PromotionParams = PromotionParams()

    @model_validator(mode="after")
    def _check_models(self) -> "Params":
        unknown = sorted(set(self.models) - set(ARCHS))
        if unknown:
            raise ValueError(f"unknown architecture {unknown[0]!r}; expected one of {', '.join(ARCHS)}")
        if self.tuning.folds > self.split.folds:
            raise ValueError(
                f"tuning.folds ({self.tuning.folds}) cannot exceed split.folds ({self.split.folds})"
            )
        return self

    def model(self, arch: str) -> ModelParams:
        return self.models.get(arch, ModelParams())


class Config:
    """Validated params plus where they came from and the project root they resolve against."""

    def __init__(self, params: Params, path: Path, root: Path):
        self.params = params
        self.path = path
        self.root = root

    def __getattr__(self, name: str) -> Any:  # config.split, config.tuning, ...
        return getattr(self.params, name)

    def resolve(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def resolve_url(self, url: str) -> str:
        return resolve_url(url, self.root)

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.params.data.dir)

    @property
    def tracking_uri(self) -> str:
        return self.resolve_url(os.environ.get("MLFLOW_TRACKING_URI") or self.params.mlflow.tracking_uri)

    @property
    def storage_url(self) -> str:
        return self.resolve_url(self.params.tuning.storage)


def resolve_url(url: str, root: Path) -> str:
    """Make `sqlite:///rel.db` and journal `file.journal` paths absolute under `root`."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rel = url[len("sqlite:///"):]
        if rel and rel != ":memory:":
            return "sqlite:///" + str((root / rel).resolve())
    if "://" not in url:  # a bare path: Optuna journal file or a local MLflow directory
        return str((root / url).resolve()) if not os.path.isabs(url) else url
    return url


def mask_url(url: str) -> str:
    """`url` with any password replaced by `***`, for logs, tags and result files."""
    parts = urlsplit(url)
    if "://" not in url or not parts.password:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def find_root(start: Path | None = None) -> Path:
    """The project root: $GENEBENCH_ROOT, else the nearest ancestor holding dvc.yaml, params.yaml or .dvc."""
    env = os.environ.get("GENEBENCH_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if any((candidate / marker).exists() for marker in ROOT_MARKERS):
            return candidate
    return here


def _format_loc(loc: tuple) -> str:
    return ".".join(str(part) for part in loc if part not in ("function-after",)) or "(top level)"


def _describe(error: dict) -> str:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    got = error.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        bound = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        limit = next(iter(ctx.values()), "?")
        return f"expected a value {bound} {limit}, got {got!r}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected', '?')}, got {got!r}"
    if kind == "value_error":
        return str(ctx.get("error", error.get("msg", "invalid value")))
    return f"{error.get('msg', 'invalid value')}, got {got!r}"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(part for part in first["loc"] if not str(part).startswith("function"))
        raise UserError(f"{source}: {_format_loc(loc)}: {_describe(first)}") from None


def load_config(path: str | os.PathLike | None = None, root: Path | None = None) -> Config:
    """Load and validate a params file (default `<root>/params.yaml`)."""
    root = root or find_root()
    params_path = Path(path) if path is not None else root / "params.yaml"
    if not params_path.is_absolute():
        params_path = (Path.cwd() / params_path).resolve()
    if not params_path.exists():
        if path is None:
            return Config(Params(), params_path, root)
        raise UserError(f"{params_path}: params file not found")
    try:
        raw = yaml.safe_load(params_path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{params_path.name}{where}: not valid YAML") from None
    return Config(parse_params(raw, params_path.name), params_path, root)


def is_deep(arch: str) -> bool:
    return arch in DEEP_ARCHS
