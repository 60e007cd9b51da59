"""The one place that turns TOML presets and ``--set`` overrides into typed, frozen configs.

A config file has the sections ``[data]``, ``[model]`` (with ``[model.beyond]`` and the
kind's own ``[model.<kind>]``) and ``[train]``; every key must be a field of the matching
dataclass, and every value is checked against the field's type.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mmctr.config.data import DataConfig
from mmctr.config.kinds import canonical_kind, kind_names, section_of_kind
from mmctr.config.model import DEFAULT_KIND, BeyondConfig, ModelConfig
from mmctr.config.moved import hint, move_flat_keys
from mmctr.config.train import TrainConfig
from mmctr.config.values import check_value, parse_text
from mmctr.errors import ConfigError
from mmctr.version import RECORD_KEY

SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
PRESET_PACKAGE = "mmctr.config.presets"  # *.toml beside this file; configs/ at the root links there


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            "data": _plain(dataclasses.asdict(self.data)),
            "model": self.model.to_dict(),
            "train": _plain(dataclasses.asdict(self.train)),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config") -> Config:
        """A config from a new file's tables; an old flat model key is an error with a hint."""
        return _from_dict(raw, source, saved=False)

    @classmethod
    def from_saved(cls, raw: dict[str, Any], *, source: str) -> Config:
        """A config a run saved (config.json, a checkpoint), by this or an older mmctr; the
        version config.json records beside the sections is not part of the config."""
        sections = {k: v for k, v in raw.items() if k != RECORD_KEY}
        return _from_dict(sections, source, saved=True)

    def diff(self, other: Config) -> list[str]:
        """The keys whose values differ, as ``section.key: ours -> theirs`` lines."""
        ours, theirs = _flat(self.to_dict()), _flat(other.to_dict())
        return [
            f"{key}: {ours.get(key)!r} -> {theirs.get(key)!r}"
            for key in [*ours, *(k for k in theirs if k not in ours)]
            if ours.get(key) != theirs.get(key)
        ]

    def with_overrides(self, overrides: list[str]) -> Config:
        """Apply ``section.key=value`` strings (``model.<kind>.key=value`` for a key of the
        model kind's own section), each value parsed by the field's type."""
        raw = self.to_dict()
        written: set[str] = set()
        for item in overrides:
            path, sep, text = item.partition("=")
            keys = path.strip().split(".")
            if not sep or len(keys) < 2:
                raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=1e-3")
            table, type_hint = _override_target(raw, keys, item)
            table[keys[-1]] = parse_text(text.strip(), type_hint, ".".join(keys))
            written.add(".".join(keys[:-1]))
        kind = self.model.kind
        new_kind = canonical_kind(str(raw["model"]["kind"]), strict=False)
        if new_kind != kind and f"model.{kind}" not in written:
            del raw["model"][kind]  # another kind: its own defaults, not this kind's keys
        return Config.from_dict(raw, source="--set")


def _from_dict(raw: dict[str, Any], source: str, *, saved: bool) -> Config:
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        expected = ", ".join(SECTIONS)
        raise ConfigError(f"{source}: unknown section [{unknown[0]}]; expected {expected}")
    parts: dict[str, Any] = {}
    for name, section_cls in SECTIONS.items():
        values = _table(raw.get(name, {}), name, source)
        if section_cls is ModelConfig:
            parts[name] = _build_model(values, source, saved)
        else:
            parts[name] = _build(section_cls, name, values, source)
    return Config(**parts)


def _table(values: Any, name: str, source: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [{name}] must be a table of key = value")
    return values


def _build_model(values: dict[str, Any], source: str, saved: bool) -> ModelConfig:
    """[model], [model.beyond] and [model.<kind>] into one ModelConfig."""
    values = move_flat_keys(values, source, saved=saved)
    kind = _kind_of(values, source)
    shared = typing.get_type_hints(ModelConfig)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key == "beyond":
            beyond = _table(value, "model.beyond", source)
            kwargs[key] = _build(BeyondConfig, "model.beyond", beyond, source)
        elif key in kind_names() or _is_alias_of(key, kind):
            if canonical_kind(key, strict=False) != kind:
                raise ConfigError(
                    f"{source}: [model.{key}] holds the keys of model.kind = {key!r}, but "
                    f"model.kind is {kind!r}"
                )
            section = _table(value, f"model.{kind}", source)
            kwargs["kind_section"] = _build(section_of_kind(kind), f"model.{kind}", section, source)
        elif key in shared and key not in ("beyond", "kind_section"):
            kwargs[key] = check_value(value, shared[key], f"model.{key}", source)
        else:
            raise ConfigError(f"{source}: unknown key model.{key}")
    try:
        return ModelConfig(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _kind_of(values: dict[str, Any], source: str) -> str:
    name = values.get("kind", DEFAULT_KIND)
    if not isinstance(name, str):
        raise ConfigError(f"{source}: model.kind = {name!r} is not a valid str")
    try:
        return canonical_kind(name)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _is_alias_of(key: str, kind: str) -> bool:
    return key != kind and canonical_kind(key, strict=False) == kind


def _override_target(raw: dict[str, Any], keys: list[str], item: str) -> tuple[dict[str, Any], Any]:
    """The table of ``raw`` that ``--set`` writes into and the type of the key it sets."""
    section, *middle, name = keys
    if section not in SECTIONS:
        raise ConfigError(
            f"--set {item!r}: unknown section {section!r}; expected {', '.join(SECTIONS)}"
        )
    table, cls = raw[section], SECTIONS[section]
    if section == "model" and middle:
        sub = middle[0]
        kind = canonical_kind(str(table.get("kind", DEFAULT_KIND)), strict=False)
        if len(middle) > 1 or not (sub == "beyond" or canonical_kind(sub, strict=False) == kind):
            raise ConfigError(
                f"--set {item!r}: unknown key {'.'.join(keys[:-1])}; the model's sections are "
                f"model.beyond and model.{kind}"
            )
        cls = BeyondConfig if sub == "beyond" else section_of_kind(kind)
        table = table.setdefault("beyond" if sub == "beyond" else kind, {})
    elif middle:
        raise ConfigError(f"--set {item!r}: unknown key {'.'.join(keys)}")
    hints = typing.get_type_hints(cls)
    if name not in hints or name in ("beyond", "kind_section"):
        moved = hint(name) if section == "model" and not middle else None
        raise ConfigError(f"--set {item!r}: " + (moved or f"unknown key {'.'.join(keys)}"))
    return table, hints[name]


def _flat(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys: {"model": {"beyond": {"sid_dim": 16}}} gives
    model.beyond.sid_dim."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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
        kwargs[key] = check_value(value, hints[key], f"{section}.{key}", source)
    try:
        return section_cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
