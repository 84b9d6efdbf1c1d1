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
    dir: str = "data"  # datasets live in <dir>/<name>/, tracked as a whole by <dir>.dvc
    # A task whose feature matrix (development + held-out rows, float32) is larger than
    # this is streamed from the memory-mapped data/<name>/expression.npy (see Scale in
    # DESIGN.md); smaller ones are loaded into memory.
    stream_above_mb: float = Field(default=256.0, ge=0)


DATASET_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Sections a dataset may override for its own stages (its size decides its budgets).
DATASET_OVERRIDES = ("features", "training", "tuning")


class DatasetParams(_Section):
    """One benchmarked dataset: its value transform and, optionally, its own budgets.

    `features`, `training` and `tuning` hold a subset of the keys of the top-level
    sections of the same name; they override those for this dataset's stages only.
    """

    transform: Literal["none", "log1p"] = "none"
    features: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    tuning: dict[str, Any] = Field(default_factory=dict)


class TaskParams(_Section):
    top_k: int = Field(50, ge=1)
    single_gene: Optional[str] = None


class FeatureParams(_Section):
    max_genes: Optional[int] = Field(None, ge=1)
    pca_components: Optional[int] = Field(None, ge=1)


class SplitParams(_Section):
    test_size: float = Field(0.2, gt=0, lt=1)
    folds: int = Field(5, ge=2)
    # Scored CV: the development samples tuning never validated on, split `repeats` times
    # into `folds - tuning.folds` folds (each partition seeded from `seed` and its repeat).
    repeats: int = Field(1, ge=1)
    seed: int = 42


class TrainingParams(_Section):
    max_epochs: int = Field(60, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    patience: int = Field(8, ge=1)
    validation_fraction: float = Field(0.15, gt=0, lt=1)
    seed: int = 42
    # Deep models: the closed-form base they correct (benchmark.models.residual), and how
    # many networks an ensemble averages (1: a single network).
    base: Literal["none", "ridge", "stack"] = "stack"
    ensemble: int = Field(1, ge=1)
    # Threads of TensorFlow and BLAS in each fitting process. Results depend on it in their
    # last digits, so it is a parameter; `genebench run` runs cores // threads tasks at once.
    threads: int = Field(1, ge=1)


class TuningParams(_Section):
    n_trials: int = Field(16, ge=1)
    n_startup_trials: int = Field(5, ge=0)
    folds: int = Field(1, ge=1)
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


# A deep model's sizes, dropout and learning rate, wherever params.yaml gives them (defaults,
# search-space bounds and choices): a value out of range stops here with one line, not with
# Keras's traceback when the first network is built.
# The sizes, each an integer at least this (`head_units: 0` is no head).
_SIZE_HP = {"units": 1, "layers": 1, "steps": 1, "token_units": 1, "attention_units": 1, "head_units": 0}


def _hp_problem(key: str, value: Any) -> Optional[str]:
    """What is wrong with deep-model hyperparameter `key` = `value`, or None."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key in _SIZE_HP:
        if not number or not float(value).is_integer() or value < _SIZE_HP[key]:
            return f"expected an integer >= {_SIZE_HP[key]}, got {value!r}"
    elif key == "dropout" and not (number and 0 <= value < 1):
        return f"expected a rate in [0, 1), got {value!r}"
    elif key == "learning_rate" and not (number and value > 0):
        return f"expected a value > 0, got {value!r}"
    return None


def _check_deep_hyperparameters(arch: str, model: ModelParams) -> None:
    for key, value in model.defaults.items():
        problem = _hp_problem(key, value)
        if problem:
            raise ValueError(f"models.{arch}.defaults.{key}: {problem}")
    for key, spec in model.search_space.items():
        for value in spec.choices if spec.type == "categorical" else (spec.low, spec.high):
            problem = _hp_problem(key, value)
            if problem:
                raise ValueError(f"models.{arch}.search_space.{key}: {problem}")


class CompareParams(_Section):
    """The verdicts (Bayesian correlated t-test over the scored CV resamples)."""

    rope: float = Field(0.01, ge=0, lt=1)  # practical equivalence, relative to the reference's CV RMSE
    confidence: float = Field(0.95, gt=0.5, lt=1)  # posterior probability a verdict needs


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


def _default_datasets() -> dict[str, "DatasetParams"]:
    return {"pbmc68k": DatasetParams()}


class Params(_Section):
    data: DataParams = DataParams()
    datasets: dict[str, DatasetParams] = Field(default_factory=_default_datasets)
    task: TaskParams = TaskParams()
    features: FeatureParams = FeatureParams()
    split: SplitParams = SplitParams()
    training: TrainingParams = TrainingParams()
    tuning: TuningParams = TuningParams()
    models: dict[str, ModelParams] = Field(default_factory=dict)
    compare: CompareParams = CompareParams()
    mlflow: MlflowParams = MlflowParams()
    promotion: PromotionParams = PromotionParams()

    @model_validator(mode="after")
    def _check_models(self) -> "Params":
        import re

        if not self.datasets:
            raise ValueError("datasets: list at least one dataset")
        bad = next((name for name in self.datasets if not re.match(DATASET_NAME, name)), None)
        if bad is not None:
            raise ValueError(f"datasets: {bad!r} is not a valid dataset name (letters, digits, '_', '-', '.')")
        unknown = sorted(set(self.models) - set(ARCHS))
        if unknown:
            raise ValueError(f"unknown architecture {unknown[0]!r}; expected one of {', '.join(ARCHS)}")
        for arch in DEEP_ARCHS:
            if arch in self.models:
                _check_deep_hyperparameters(arch, self.models[arch])
        if self.split.folds - self.tuning.folds < 2:
            # Tuning's folds are never scored, so the reported CV and the paired tests need
            # at least two folds besides them.
            raise ValueError(
                f"split.folds ({self.split.folds}) must exceed tuning.folds ({self.tuning.folds}) by at least 2: "
                "the folds tuning validates on are not scored, and CV needs two scored folds"
            )
        for name in self.datasets:  # each dataset's overrides must give valid sections
            try:
                effective = self.for_dataset(name)
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = tuple(part for part in first["loc"] if not str(part).startswith("function"))
                raise ValueError(f"datasets.{name}.{_format_loc(loc)}: {_describe(first)}") from None
            if effective.split.folds - effective.tuning.folds < 2:
                raise ValueError(f"datasets.{name}: tuning.folds ({effective.tuning.folds}) leaves fewer than "
                                 f"2 of split.folds ({effective.split.folds}) to score")
        return self

    def model(self, arch: str) -> ModelParams:
        return self.models.get(arch, ModelParams())

    def for_dataset(self, name: str) -> "Params":
        """These params with dataset `name`'s overrides applied to its sections.

        Raises pydantic's ValidationError (located at `<section>.<key>`) for a bad override.
        """
        entry = self.datasets[name]
        sections = {}
        for section in DATASET_OVERRIDES:
            override = getattr(entry, section)
            if override:
                current = getattr(self, section)
                try:
                    sections[section] = type(current).model_validate({**current.model_dump(), **override})
                except ValidationError as exc:  # re-raised with the section in its location
                    raise ValidationError.from_exception_data(exc.title, [
                        {**e, "loc": (section, *e["loc"])} for e in exc.errors()]) from None
        return self.model_copy(update=sections)


class Config:
    """Validated params plus where they came from and the project root they resolve against.

    A config bound to a dataset (`config.for_dataset(name)`) carries that dataset's
    effective params (its `features`/`training`/`tuning` overrides applied), and its
    `data_dir`, `transform` and stage paths (`benchmark.paths`) are that dataset's.
    """

    def __init__(self, params: Params, path: Path, root: Path, dataset: str | None = None):
        self.params = params
        self.path = path
        self.root = root
        self.dataset = dataset

    @property
    def datasets(self) -> list[str]:
        return list(self.params.datasets)

    def for_dataset(self, name: str | None) -> "Config":
        """This config bound to dataset `name`; None picks the only one listed in `datasets`."""
        if name is None:
            if self.dataset is not None:
                return self
            if len(self.params.datasets) != 1:
                raise UserError(f"{self.path.name}: datasets lists {len(self.params.datasets)} datasets "
                                f"({', '.join(self.params.datasets)}); pass --dataset NAME")
            name = next(iter(self.params.datasets))
        if name not in self.params.datasets:
            raise UserError(f"{self.path.name}: datasets: no dataset {name!r} (listed: {', '.join(self.params.datasets)})")
        return Config(self.params.for_dataset(name), self.path, self.root, dataset=name)

    @property
    def data_root(self) -> Path:
        """`<root>/<data.dir>`: one sub-directory per dataset, tracked by `<data.dir>.dvc`."""
        return self.resolve(self.params.data.dir)

    @property
    def transform(self) -> str:
        return self.params.datasets[self._bound()].transform

    def _bound(self) -> str:
        if self.dataset is None:
            raise RuntimeError("this needs a config bound to a dataset (config.for_dataset(name))")
        return self.dataset

    def __getattr__(self, name: str) -> Any:  # config.split, config.tuning, ...
        return getattr(self.params, name)

    def resolve(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def resolve_url(self, url: str) -> str:
        return resolve_url(url, self.root)

    @property
    def data_dir(self) -> Path:
        """`<data root>/<dataset>`: the bound dataset's canonical files."""
        return self.data_root / self._bound()

    @property
    def tracking_uri(self) -> str:
        return self.resolve_url(os.environ.get("MLFLOW_TRACKING_URI") or self.params.mlflow.tracking_uri)

    @property
    def storage_url(self) -> str:
        return self.resolve_url(os.environ.get("OPTUNA_STORAGE") or self.params.tuning.storage)


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
        if loc == ("data", "transform") and first.get("type") == "extra_forbidden":
            raise UserError(f"{source}: data.transform: moved to datasets.<name>.transform "
                            "(each dataset has its own)") from None
        where = f"{_format_loc(loc)}: " if loc else ""
        raise UserError(f"{source}: {where}{_describe(first)}") from None


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
