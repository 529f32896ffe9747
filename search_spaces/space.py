"""Parse a YAML search space into validated distributions, then into Optuna's own types."""

from __future__ import annotations

import math
import random
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_validator

__all__ = ["PARAMETERS", "SearchSpace", "SearchSpaceError", "available_spaces", "load_space"]

# The hyperparameters the trainable knows how to apply; anything else would be sampled and
# silently ignored, so it is an error.
PARAMETERS = ("learning_rate", "weight_decay", "lora_r", "lora_alpha", "lora_dropout")
REQUIRED = ("learning_rate", "lora_r")


class SearchSpaceError(ValueError):
    """A search space that cannot be used; the message names the file and the key."""


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Range(_Dist):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"`low < high` must hold, but got (low={self.low}, high={self.high})")
        return self


class Uniform(_Range):
    type: Literal["uniform"]


class LogUniform(_Range):
    type: Literal["loguniform"]

    @model_validator(mode="after")
    def _positive(self):
        if self.low <= 0:
            raise ValueError(f"a log scale needs low > 0, but got low={self.low}")
        return self


class IntRange(_Range):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False


class Choice(_Dist):
    type: Literal["choice"]
    values: list[float | int | str | bool] = Field(min_length=1)


Distribution = Annotated[Uniform | LogUniform | IntRange | Choice, Field(discriminator="type")]


class SearchSpace(RootModel[dict[str, Distribution]]):
    """{hyperparameter name: distribution}, checked against what the trainable applies."""

    @model_validator(mode="after")
    def _known_names(self):
        unknown = sorted(set(self.root) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {unknown}; choose from {list(PARAMETERS)}")
        missing = [p for p in REQUIRED if p not in self.root]
        if missing:
            raise ValueError(f"missing {missing}; a LoRA search needs {list(REQUIRED)}")
        ranks = _values(self.root["lora_r"])
        if not all(_is_positive_int(v) for v in ranks):
            raise ValueError(f"lora_r: ranks must be positive integers, but got {ranks}")
        return self

    def to_optuna(self) -> dict[str, BaseDistribution]:
        out: dict[str, BaseDistribution] = {}
        for name, d in self.root.items():
            if isinstance(d, Choice):
                out[name] = CategoricalDistribution(d.values)
            elif isinstance(d, IntRange):
                out[name] = IntDistribution(d.low, d.high, log=d.log)
            else:
                out[name] = FloatDistribution(d.low, d.high, log=isinstance(d, LogUniform))
        return out

    def stratified(self, n: int, seed: int) -> list[dict]:
        """`n` points of a Latin hypercube over the space, for the sweep's start-up trials.

        Each range is cut into `n` equal slices (equal on the log scale for a log range) and
        each slice gets exactly one point, at a random place in it; a choice deals its values
        out in shuffled rounds, so each value is used n/len(values) times, give or take one.
        Hyperparameters are paired at random. Unlike `n` independent draws, the points never
        bunch at one end of a range: with 4 draws over 1e-5..1e-3, independent draws miss the
        top half-decade of learning rates 32% of the time, stratified ones never do.
        """
        rng = random.Random(seed)
        columns = {name: _column(d, n, rng) for name, d in self.root.items()}
        return [{name: values[i] for name, values in columns.items()} for i in range(n)]

    def describe(self) -> dict:
        """Plain data, for the results folder and the model card."""
        return {k: v.model_dump() for k, v in self.root.items()}


def available_spaces() -> list[str]:
    folder = resources.files("search_spaces")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_space(name_or_path: str) -> SearchSpace:
    """Load a shipped space by name (`lora_default`) or any YAML file by path."""
    path = _locate(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        detail = " ".join(str(e).split())
        raise SearchSpaceError(
            f"search.space={path}: not valid YAML ({detail}); fix the file"
        ) from e
    if not isinstance(raw, dict) or not raw:
        raise SearchSpaceError(
            f"search.space={path}: expected a mapping of hyperparameter -> distribution, "
            f"got {type(raw).__name__}; write e.g. `lora_r: {{type: choice, values: [8, 16]}}`"
        )
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(_describe(err) for err in e.errors())
        raise SearchSpaceError(
            f"search.space={path}: {problems}; fix the file, or pass a shipped space "
            f"({', '.join(available_spaces())})"
        ) from None


def _locate(name_or_path: str) -> Path:
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    shipped = resources.files("search_spaces").joinpath(f"{name_or_path}.yaml")
    if shipped.is_file():
        return Path(str(shipped))
    raise SearchSpaceError(
        f"search.space={name_or_path}: no such file and no shipped space of that name; "
        f"shipped: {', '.join(available_spaces())}, or give a path to a YAML file"
    )


def _column(d, n: int, rng: random.Random) -> list:
    """`n` values of `d` in random order: one from each of a range's `n` equal slices, or a
    choice's values dealt out evenly."""
    if isinstance(d, Choice):
        rounds = -(-n // len(d.values))
        return [v for _ in range(rounds) for v in rng.sample(d.values, len(d.values))][:n]
    return [_at(d, (k + rng.random()) / n) for k in rng.sample(range(n), n)]


def _at(d, u: float):
    """The value at quantile `u` in [0, 1) of range `d`, on the scale Optuna draws it on."""
    if isinstance(d, IntRange):
        # Every integer low..high owns an equal slice (equal in log scale when log=True).
        lo, hi = (math.log(d.low), math.log(d.high + 1)) if d.log else (d.low, d.high + 1)
        x = lo + u * (hi - lo)
        return min(max(int(math.floor(math.exp(x) if d.log else x)), d.low), d.high)
    if isinstance(d, LogUniform):
        x = math.exp(math.log(d.low) + u * (math.log(d.high) - math.log(d.low)))
    else:
        x = d.low + u * (d.high - d.low)
    return min(max(x, d.low), d.high)  # rounding must not step outside Optuna's bounds


def _is_positive_int(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0 and v == int(v)


def _values(d) -> list:
    return list(d.values) if isinstance(d, Choice) else [d.low, d.high]


def _describe(err: dict) -> str:
    # Drop pydantic's discriminator tag from the location: users wrote `lora_r.low`.
    loc = ".".join(
        str(p) for p in err["loc"] if p not in ("uniform", "loguniform", "int", "choice")
    )
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] != "value_error" and not isinstance(err.get("input"), dict):
        msg = f"got {err.get('input')!r}; {msg[0].lower()}{msg[1:]}"
    return f"{loc}: {msg}" if loc else msg
