"""A search space file read and checked: every ``[[param]]`` table against the base config
(the format is in ``space.py``), or a space shipped with mmctr (``spaces/*.toml``) by name."""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from mmctr.config import Config
from mmctr.errors import ConfigError
from mmctr.search.space import (
    KEYS,
    TYPES,
    Param,
    Scalar,
    Space,
    flat_values,
    label,
    same,
    trial_config,
)

SPACES_PACKAGE = "mmctr.search.spaces"  # shipped spaces, *.toml (package data)


def space_names() -> list[str]:
    """The search spaces shipped with mmctr (``--space NAME``)."""
    files = resources.files(SPACES_PACKAGE).iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def load_space(path: str | Path, base: Config) -> Space:
    """Read a space file (or a shipped space by name) and check it against ``base``; every
    fault is a ConfigError naming it."""
    path = Path(path)
    shipped = str(path).removesuffix(".toml")
    if not path.exists() and "/" not in str(path) and shipped in space_names():
        text = (resources.files(SPACES_PACKAGE) / f"{shipped}.toml").read_text()
        path = Path(f"{shipped}.toml")
    else:
        text = _read(path)
    return _parse(text, path, base)


def _read(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(
            f"search space {path}: no such file (a path, or a shipped space: "
            f"{', '.join(space_names())})"
        )
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"search space {path}: cannot be read ({exc})") from None


def _parse(text: str, path: Path, base: Config) -> Space:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"search space {path}: not valid TOML: {exc}") from None
    extra = sorted(set(raw) - {"param"})
    if extra:
        raise ConfigError(
            f"search space {path}: unknown table or key {extra[0]!r}; a space is a list of "
            "[[param]] tables"
        )
    entries = raw.get("param")
    if isinstance(entries, dict):
        raise ConfigError(
            f"search space {path}: [param] is one table; a space is a list of [[param]] "
            "tables (two brackets)"
        )
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"search space {path}: no [[param]] tables; nothing to search")
    params: list[Param] = []
    for i, entry in enumerate(entries, start=1):
        where = _where(path, text, i, entry)
        param = _param(entry, where)
        if param.key in {p.key for p in params}:
            raise ConfigError(f"{where}: key {param.key!r} is searched twice")
        _check_when(param, params, base, where)
        _check_values(param, params, base, where)
        params.append(param)
    return Space(tuple(params), source=str(path))


def _where(path: Path, text: str, index: int, entry: Any) -> str:
    """``FILE: param N (line L, KEY)``: the line is that of the param's ``key =``."""
    key = entry.get("key") if isinstance(entry, dict) else None
    line = _line_of_param(text, index)
    parts = [f"line {line}"] if line else []
    if isinstance(key, str):
        parts.append(key)
    return f"search space {path}: param {index}" + (f" ({', '.join(parts)})" if parts else "")


def _line_of_param(text: str, index: int) -> int | None:
    """The line of the ``index``-th ``[[param]]`` header (1-based), if it can be found."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().replace(" ", "") == "[[param]]":
            seen += 1
            if seen == index:
                return number
    return None


def _param(entry: Any, where: str) -> Param:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table of key = value")
    unknown = sorted(set(entry) - KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; expected {', '.join(sorted(KEYS))}"
        )
    key, kind = entry.get("key"), entry.get("type")
    if not isinstance(key, str) or key.count(".") < 1:
        raise ConfigError(f'{where}: key must be a config key such as "train.lr", got {key!r}')
    if kind not in TYPES:
        raise ConfigError(f"{where}: type must be one of {', '.join(TYPES)}, got {kind!r}")
    when = _when(entry.get("when", {}), where)
    if kind == "categorical":
        return _categorical(entry, key, when, where)
    return _range(entry, key, str(kind), when, where)


def _categorical(entry: dict[str, Any], key: str, when: Any, where: str) -> Param:
    for name in ("low", "high", "log", "step"):
        if name in entry:
            raise ConfigError(f"{where}: {name!r} is for int and float params, not categorical")
    choices = entry.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{where}: choices must be a non-empty list")
    labels = [label(c) for c in choices]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: choices repeat a value")
    return Param(key, "categorical", choices=tuple(choices), when=when)


def _range(entry: dict[str, Any], key: str, kind: str, when: Any, where: str) -> Param:
    if "choices" in entry:
        raise ConfigError(f"{where}: choices are for categorical params; {kind} takes low/high")
    values: dict[str, Any] = {}
    what = "an int" if kind == "int" else "a number"
    for name in ("low", "high"):
        value: Any = entry.get(name)
        if not _is_number(value, kind):
            raise ConfigError(f"{where}: {name} must be {what}, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {name} must be finite, got {value!r}")
        values[name] = value
    low, high = values["low"], values["high"]
    if low > high:
        raise ConfigError(f"{where}: low {low!r} > high {high!r}")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {low!r}")
    step: Any = entry.get("step")
    if step is not None:
        if not _is_number(step, kind) or not step > 0:
            raise ConfigError(f"{where}: step must be a positive {kind}, got {step!r}")
        if log and (kind == "float" or step != 1):
            raise ConfigError(f"{where}: step and log cannot go together")
    if kind == "float":
        low, high = float(low), float(high)
    return Param(key, kind, low=low, high=high, log=log, step=step, when=when)


def _is_number(value: Any, kind: str) -> bool:
    """An int for an int param, an int or float for a float one (a bool is neither)."""
    wanted = int if kind == "int" else (int, float)
    return not isinstance(value, bool) and isinstance(value, wanted)


def _when(raw: Any, where: str) -> dict[str, tuple[Scalar, ...]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: when must be a table, e.g. when = {{ \"model.kind\" = \"qin\" }}")  # fmt: skip  # noqa: E501
    out: dict[str, tuple[Scalar, ...]] = {}
    for key, wanted in raw.items():
        values = wanted if isinstance(wanted, list) else [wanted]
        if not values or any(isinstance(v, list | dict) for v in values):
            raise ConfigError(f"{where}: when {key!r} must be a value or a list of values")
        out[key] = tuple(values)
    return out


def _check_when(param: Param, earlier: list[Param], base: Config, where: str) -> None:
    known = flat_values(base)
    for key, wanted in param.when.items():
        source = next((p for p in earlier if p.key == key), None)
        if source is None and key not in known:
            raise ConfigError(
                f"{where}: when names {key!r}, which is neither an earlier param nor a key "
                "of the base config"
            )
        possible = source.values_to_check() if source and source.type == "categorical" else None
        if possible is not None and not any(same(v, wanted) for v in possible):
            raise ConfigError(f"{where}: when {key!r} = {list(wanted)!r} is none of its choices")


def _check_values(param: Param, earlier: list[Param], base: Config, where: str) -> None:
    """Each bound or choice applied to the base config (with the ``when`` it needs)."""
    if param.key.startswith("data.") and param.key != "data.item_feature_cols":
        raise ConfigError(
            f"{where}: a search reads the data once for every trial, so it can vary "
            "data.item_feature_cols but no other data key"
        )
    setup = {key: wanted[0] for key, wanted in param.when.items()}
    for value in param.values_to_check():
        try:
            trial_config(base, {**setup, param.key: value})
        except ConfigError as exc:
            message = str(exc).removeprefix("--set: ").removeprefix("--set ")
            raise ConfigError(f"{where}: {param.key} = {value!r}: {message}") from None
