"""A search space from TOML: which config keys a search varies, over what, and when.

One ``[[param]]`` table per key, in the order they are drawn::

    [[param]]
    key = "train.lr"                       # any config key that --set accepts
    type = "float"                         # "int", "float" or "categorical"
    low = 1e-4
    high = 1e-2
    log = true                             # drawn on a log scale (optional)

    [[param]]
    key = "model.kind"
    type = "categorical"
    choices = ["target_transformer", "qin"]

    [[param]]
    key = "model.target_transformer.first_k"
    type = "int"
    low = 1
    high = 8
    step = 1                               # optional grid step
    when = { "model.kind" = "target_transformer" }   # drawn only for that kind

A ``when`` value may be a list (any of them). Every key is checked against the base config
before the first trial: a key that no config has, bounds the wrong way round, or a choice the
key cannot take is an error naming the param, its line and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from mmctr.config import Config
from mmctr.config.kinds import canonical_kind
from mmctr.errors import ConfigError

TYPES = ("int", "float", "categorical")
KEYS = {"key", "type", "low", "high", "log", "step", "choices", "when"}
Scalar = bool | int | float | str


class Suggests(Protocol):
    """What a space draws from: an Optuna trial (its suggest_* methods)."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...  # fmt: skip  # noqa: E501

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class Param:
    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    # categorical: the values as the config takes them (lists allowed) ...
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Scalar, ...]] = field(default_factory=dict)

    @property
    def labels(self) -> tuple[Scalar, ...]:
        """... and as Optuna stores them (scalars: a list choice becomes "256,128")."""
        return tuple(label(c) for c in self.choices)

    def applies(self, values: dict[str, Any]) -> bool:
        """Whether this param is drawn, given the trial's config values so far."""
        return all(same(values.get(key), wanted) for key, wanted in self.when.items())

    def draw(self, trial: Suggests) -> Any:
        """This param's value for ``trial``, as the config takes it."""
        if self.type == "int":
            assert isinstance(self.low, int) and isinstance(self.high, int)
            step = int(self.step or 1)
            return trial.suggest_int(self.key, self.low, self.high, step=step, log=self.log)
        if self.type == "float":
            assert self.low is not None and self.high is not None
            return trial.suggest_float(
                self.key, float(self.low), float(self.high), step=self.step, log=self.log
            )
        label = trial.suggest_categorical(self.key, list(self.labels))
        return self.choices[self.labels.index(label)]

    def values_to_check(self) -> list[Any]:
        if self.type == "categorical":
            return list(self.choices)
        return [self.low, self.high]


@dataclass(frozen=True)
class Space:
    params: tuple[Param, ...]
    source: str = "space"

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def suggest(self, trial: Suggests, base: Config) -> dict[str, Any]:
        """The params drawn for ``trial`` (those whose ``when`` holds), in file order."""
        values = flat_values(base)
        drawn: dict[str, Any] = {}
        for param in self.params:
            if param.applies(values):
                drawn[param.key] = values[param.key] = param.draw(trial)
        return drawn

    def to_dict(self) -> list[dict[str, Any]]:
        """The space as plain data (what a resumed search compares against)."""
        out = []
        for p in self.params:
            entry: dict[str, Any] = {"key": p.key, "type": p.type}
            for name in ("low", "high", "step"):
                if getattr(p, name) is not None:
                    entry[name] = getattr(p, name)
            if p.log:
                entry["log"] = True
            if p.choices:
                entry["choices"] = list(p.choices)
            if p.when:
                entry["when"] = {k: list(v) for k, v in p.when.items()}
            out.append(entry)
        return out


def overrides(params: dict[str, Any]) -> list[str]:
    """``params`` as ``--set`` strings, in order (model.kind first: it picks the sections)."""
    keys = sorted(params, key=lambda k: k != "model.kind")
    return [f"{key}={set_text(params[key])}" for key in keys]


def trial_config(base: Config, params: dict[str, Any]) -> Config:
    return base.with_overrides(overrides(params)) if params else base


def set_text(value: Any) -> str:
    """A value as ``--set`` parses it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(set_text(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def flat_values(config: Config) -> dict[str, Any]:
    """Every key of ``config`` as ``section.key``; the kind's own keys as
    ``model.<kind>.key``."""
    out: dict[str, Any] = {}

    def walk(table: dict[str, Any], prefix: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(config.to_dict(), "")
    return out


def label(value: Any) -> Scalar:
    if isinstance(value, list | tuple):
        return set_text(value)
    if isinstance(value, dict) or value is None:
        raise ConfigError(f"a choice must be a value or a list, got {value!r}")
    return value


def same(value: Any, wanted: tuple[Scalar, ...]) -> bool:
    """Whether a config value is one of ``wanted`` (kinds compared by their canonical name)."""
    for w in wanted:
        if isinstance(w, str) and isinstance(value, str):
            a = canonical_kind(value, strict=False)
            b = canonical_kind(w, strict=False)
            if a == b or value == w:
                return True
        elif (value == w and type(value) is type(w)) or (
            isinstance(value, list | tuple) and set_text(value) == label(w)
        ):
            return True
    return False
