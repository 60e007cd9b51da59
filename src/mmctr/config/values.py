"""Values of config keys: checked against their field's type when read from TOML, parsed from
text when given with ``--set``.

A float key never holds nan or an infinity, whichever section it belongs to (a plug-in kind's
included): TOML and ``float()`` both accept them, and they would otherwise surface as a failure
deep inside PyTorch instead of an error naming the key.
"""

from __future__ import annotations

import math
import types
from typing import Any, Literal, Union, get_args, get_origin

from mmctr.errors import ConfigError


def check_value(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = get_origin(hint)
    bad = ConfigError(f"{source}: {key} = {value!r} is not a valid {describe(hint)}")
    if origin is Literal:
        if value not in get_args(hint):
            raise bad
        return value
    if origin is tuple:
        item_type = get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise bad
        return tuple(check_value(v, item_type, key, source) for v in value)
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
        if not math.isfinite(value):
            raise ConfigError(f"{source}: {key} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin in (Union, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported in configs")
    raise ConfigError(f"{key}: unsupported config type {hint!r}")


def parse_text(text: str, hint: Any, key: str) -> Any:
    """Parse a command-line string into a value of ``hint``'s type."""
    origin = get_origin(hint)
    try:
        if origin is tuple:
            body = text.strip("[]() ")
            parts = [p.strip().strip("'\"") for p in body.split(",") if p.strip()]
            return [parse_text(p, get_args(hint)[0], key) for p in parts]
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
        raise ConfigError(f"--set {key}={text}: not a valid {describe(hint)}") from None
    return text.strip("'\"")


def describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "choice of " + " | ".join(repr(a) for a in get_args(hint))
    if origin is tuple:
        return f"list of {describe(get_args(hint)[0])}"
    return getattr(hint, "__name__", str(hint))
