"""Field checks that every config section shares, so a section states only its own rules.

Choices come from the fields' ``Literal`` types, read once here; ranges are named by the
section (``at_least_one``, ``at_least_zero``, ``probabilities``). A failed check raises
``ValueError`` naming ``section.key``; the loader turns it into a ConfigError with the file.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterable
from typing import Any, Literal, get_args, get_origin


def check_fields(
    obj: Any,
    section: str,
    *,
    at_least_one: Iterable[str] = (),
    at_least_zero: Iterable[str] = (),
    probabilities: Iterable[str] = (),
) -> None:
    """Every Literal field holds one of its choices and every float is finite; the named
    fields are >= 1 (ints, or every size of a tuple), >= 0, or in [0, 1)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        if get_origin(hint) is Literal and value not in get_args(hint):
            choices = " or ".join(repr(c) for c in get_args(hint))
            raise ValueError(f"{section}.{f.name} must be {choices}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{section}.{f.name} must be a finite number, got {value!r}")
    for name in at_least_one:
        value = getattr(obj, name)
        if isinstance(value, tuple):
            if any(v < 1 for v in value):
                raise ValueError(f"{section}.{name} sizes must all be >= 1, got {list(value)}")
        elif value < 1:
            raise ValueError(f"{section}.{name} must be >= 1, got {value}")
    for name in at_least_zero:
        if getattr(obj, name) < 0:
            raise ValueError(f"{section}.{name} must be >= 0, got {getattr(obj, name)}")
    for name in probabilities:
        if not 0.0 <= getattr(obj, name) < 1.0:
            raise ValueError(f"{section}.{name} must be in [0, 1), got {getattr(obj, name)}")
