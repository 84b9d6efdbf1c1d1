"""The search space of `models.<arch>.search_space`, checked and turned into trials.

- An empty space (`mean`) records that without trials, Optuna or TensorFlow.
- Every study starts from the architecture's defaults; a baseline whose space holds only
  choices is searched exhaustively (`planned_points`).
- `suggest` is the one place a space becomes `trial.suggest_*` calls.
"""

from __future__ import annotations

import itertools
from typing import Any

from benchmark import DEEP_ARCHS
from benchmark.config import Config, SearchParam
from benchmark.errors import UserError

# Deep models may tune these two without a default: they fall back to `training.*`.
TRAINING_HYPERPARAMETERS = ("learning_rate", "batch_size")
_CHOICE_TYPES = (type(None), bool, int, float, str)
def search_space(config: Config, arch: str) -> dict[str, SearchParam]:
    """`models.<arch>.search_space`, checked beyond what params validation can know.

    Raises UserError naming `models.<arch>.search_space.<key>` for a hyperparameter the
    architecture does not have, a choice Optuna cannot store, or a bad `step`.
    """
    model = config.params.model(arch)
    known = set(model.defaults) | (set(TRAINING_HYPERPARAMETERS) if arch in DEEP_ARCHS else set())
    for key, spec in model.search_space.items():
        where = f"{config.path.name}: models.{arch}.search_space.{key}"
        if key not in known:
            names = ", ".join(sorted(known)) or "none"
            raise UserError(f"{where}: {arch} has no hyperparameter {key!r} (known: {names}; "
                            f"a new one needs a value in models.{arch}.defaults)")
        if spec.type == "categorical":
            bad = [c for c in spec.choices if not isinstance(c, _CHOICE_TYPES)]
            if bad:
                raise UserError(f"{where}: choices must be numbers, strings, booleans or null, got {bad[0]!r}")
            if len(set(map(repr, spec.choices))) != len(spec.choices):
                raise UserError(f"{where}: choices contain duplicates")
        elif spec.step is not None:
            if spec.step <= 0:
                raise UserError(f"{where}: 'step' must be > 0, got {spec.step:g}")
            if spec.type == "int" and spec.step != int(spec.step):
                raise UserError(f"{where}: an int parameter needs an integer 'step', got {spec.step:g}")
    return dict(model.search_space)


def default_point(config: Config, arch: str, space: dict[str, SearchParam]) -> dict[str, Any]:
    """The architecture's defaults as a point of its search space (the first trial of every study).

    A tuned hyperparameter without a default (a deep model's `learning_rate` or
    `batch_size`) takes `training.*`'s value. Raises UserError naming the key when a default
    lies outside its search space: the study could not start from it.
    """
    defaults = config.params.model(arch).defaults
    training = config.params.training.model_dump()
    point = {}
    for name, spec in space.items():
        value = defaults[name] if name in defaults else training[name]
        where = f"{config.path.name}: models.{arch}.defaults.{name}"
        if spec.type == "categorical":
            if value not in spec.choices or type(value) is not type(spec.choices[spec.choices.index(value)]):
                raise UserError(f"{where} is {value!r}, not one of models.{arch}.search_space.{name}'s choices "
                                f"({', '.join(map(repr, spec.choices))}); every study starts from the defaults")
        elif value is None or not (spec.low <= float(value) <= spec.high):
            raise UserError(f"{where} is {value!r}, outside models.{arch}.search_space.{name} "
                            f"[{spec.low:g}, {spec.high:g}]; every study starts from the defaults")
        point[name] = value
    return point


def exhaustive(arch: str, space: dict[str, SearchParam]) -> bool:
    """A baseline whose search space holds only choices is searched exhaustively: its trials
    cost milliseconds to seconds, so its result never rests on the luck of a few trials."""
    return arch not in DEEP_ARCHS and bool(space) and all(spec.type == "categorical" for spec in space.values())


def planned_points(config: Config, arch: str, space: dict[str, SearchParam]) -> list[dict[str, Any]]:
    """The trials every study enqueues: the defaults first, then (`exhaustive`) every other
    point of the grid, in the order of the choices."""
    first = default_point(config, arch, space)
    points = [first]
    if exhaustive(arch, space):
        names = list(space)
        for values in itertools.product(*(space[name].choices for name in names)):
            point = dict(zip(names, values))
            if point != first:
                points.append(point)
    return points


def suggest(trial, space: dict[str, SearchParam]) -> dict[str, Any]:
    """The one place a search space becomes `trial.suggest_*` calls; returns the values."""
    values = {}
    for name, spec in space.items():
        if spec.type == "categorical":
            values[name] = trial.suggest_categorical(name, list(spec.choices))
        elif spec.type == "int":
            values[name] = trial.suggest_int(name, int(spec.low), int(spec.high),
                                             step=int(spec.step or 1), log=spec.log)
        else:
            values[name] = trial.suggest_float(name, float(spec.low), float(spec.high),
                                               step=spec.step, log=spec.log)
    return values
