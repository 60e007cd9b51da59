"""The one place that turns TOML presets and ``--set`` overrides into typed, frozen configs.

A config file has the sections ``[data]``, ``[model]`` and ``[train]``; every key must be a
field of the matching dataclass, and every value is checked against the field's type.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from mmctr.config.data import DataConfig
from mmctr.config.model import ModelConfig
from mmctr.config.train import TrainConfig
from mmctr.errors import ConfigError

SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
PRESET_PACKAGE = "mmctr.config.presets"  # *.toml beside this file; configs/ at the root links there


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: _plain(dataclasses.asdict(getattr(self, name))) for name in SECTIONS}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config") -> Config:
        unknown = sorted(set(raw) - set(SECTIONS))
        if unknown:
            raise ConfigError(
                f"{source}: unknown section [{unknown[0]}]; expected {', '.join(SECTIONS)}"
            )
        parts: dict[str, Any] = {}
        for name, section_cls in SECTIONS.items():
            values = raw.get(name, {})
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [{name}] must be a table of key = value")
            parts[name] = _build(section_cls, name, values, source)
        return cls(**parts)

    def diff(self, other: Config) -> list[str]:
        """The keys whose values differ, as ``section.key: ours -> theirs`` lines."""
        ours, theirs = self.to_dict(), other.to_dict()
        return [
            f"{section}.{key}: {value!r} -> {theirs[section][key]!r}"
            for section in SECTIONS
            for key, value in ours[section].items()
            if theirs[section][key] != value
        ]

    def with_overrides(self, overrides: list[str]) -> Config:
        """Apply ``section.key=value`` strings, each value parsed by the field's type."""
        raw = self.to_dict()
        for item in overrides:
            key, sep, text = item.partition("=")
            section, dot, name = key.strip().partition(".")
            if not sep or not dot:
                raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=1e-3")
            if section not in SECTIONS:
                raise ConfigError(
                    f"--set {item!r}: unknown section {section!r}; expected {', '.join(SECTIONS)}"
                )
            hints = typing.get_type_hints(SECTIONS[section])
            if name not in hints:
                raise ConfigError(f"--set {item!r}: unknown key {section}.{name}")
            raw[section][name] = _parse_text(text.strip(), hints[name], f"{section}.{name}")
        return Config.from_dict(raw, source="--set")


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a TOML preset: a file, or the name of a preset shipped with mmctr (``paper``,
    ``cpu``, ``din``, ...); a missing file or any bad key or value raises ConfigError."""
    text, source = _preset_text(str(path))
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    config = Config.from_dict(raw, source=source)
    return config.with_overrides(overrides) if overrides else config


def preset_names() -> list[str]:
    """The presets shipped inside the package (package data, so an installed wheel has them)."""
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in resources.files(PRESET_PACKAGE).iterdir()
        if entry.name.endswith(".toml")
    )


def _preset_text(name: str) -> tuple[str, str]:
    """The TOML text of a file, else of the shipped preset of that name, and where it came from."""
    path = Path(name)
    if path.is_file():
        return _read_text(path), str(path)
    stem = name.removesuffix(".toml")
    if "/" not in name and stem in preset_names():
        preset = resources.files(PRESET_PACKAGE) / f"{stem}.toml"
        return preset.read_text(), f"preset {stem}"
    if path.is_dir():
        raise ConfigError(f"config {name}: is a directory, not a TOML file")
    raise ConfigError(
        f"config file not found: {name} (a path, or a shipped preset: {', '.join(preset_names())})"
    )


def _read_text(path: Path) -> str:
    """A config file's text; an unreadable or non-UTF-8 file (TOML is UTF-8) is a ConfigError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line} is not UTF-8 text ({exc.reason}); TOML files are UTF-8"
        ) from None


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _build(section_cls: type, section: str, values: dict[str, Any], source: str) -> Any:
    hints = typing.get_type_hints(section_cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{source}: unknown key {section}.{key}")
        kwargs[key] = _check_value(value, hints[key], f"{section}.{key}", source)
    try:
        return section_cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _check_value(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = get_origin(hint)
    bad = ConfigError(f"{source}: {key} = {value!r} is not a valid {_describe(hint)}")
    if origin is Literal:
        if value not in get_args(hint):
            raise bad
        return value
    if origin is tuple:
        item_type = get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise bad
        return tuple(_check_value(v, item_type, key, source) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin in (Union, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported in configs")
    raise ConfigError(f"{key}: unsupported config type {hint!r}")


def _parse_text(text: str, hint: Any, key: str) -> Any:
    """Parse a command-line string into a value of ``hint``'s type."""
    origin = get_origin(hint)
    try:
        if origin is tuple:
            body = text.strip("[]() ")
            parts = [p.strip().strip("'\"") for p in body.split(",") if p.strip()]
            return [_parse_text(p, get_args(hint)[0], key) for p in parts]
        if hint is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"--set {key}={text}: not a valid {_describe(hint)}") from None
    return text.strip("'\"")


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "choice of " + " | ".join(repr(a) for a in get_args(hint))
    if origin is tuple:
        return f"list of {_describe(get_args(hint)[0])}"
    return getattr(hint, "__name__", str(hint))
