"""A config as a TOML file that ``--config`` reads back to the same config (a search's best,
for one). Every value of a config is a bool, int, float, str or a list of those, so a small
writer of our own is enough."""

from __future__ import annotations

import json
import math
from typing import Any

from mmctr.config.load import Config


def to_toml(config: Config, *, comment: str = "") -> str:
    """TOML text of ``config``: [data], [model], [model.beyond], [model.<kind>], [train],
    every key written out, so the file does not depend on the defaults of a later mmctr."""
    raw = config.to_dict()
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    for name in ("data", "model", "train"):
        lines += _table(name, raw[name])
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(name: str, values: dict[str, Any]) -> list[str]:
    lines = ["", f"[{name}]"]
    nested = []
    for key, value in values.items():
        if isinstance(value, dict):
            nested.append((key, value))
        else:
            lines.append(f"{key} = {_value(value)}")
    for key, value in nested:
        lines += _table(f"{name}.{key}", value)
    return lines


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: the same escapes as JSON's
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as a TOML value")
