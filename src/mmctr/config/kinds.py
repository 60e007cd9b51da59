"""The model kinds a config may name, each with the dataclass of its own ``[model.<kind>]`` keys.

Model files register themselves here (``mmctr.model.register_model``), so that a new kind is
one file: its module, its section and its name. The config layer only looks names up.
"""

from __future__ import annotations

from collections.abc import Callable

_SECTIONS: dict[str, type] = {}  # kind -> the frozen dataclass of its [model.<kind>] section
_ALIASES: dict[str, str] = {}  # an older or shorter name -> the kind
_FINDERS: list[Callable[[], None]] = []  # called on a lookup of an unknown kind


def register_kind(kind: str, section: type, *, aliases: tuple[str, ...] = ()) -> None:
    """Make ``kind`` (and its ``aliases``) a valid ``model.kind`` whose own keys are the fields
    of ``section``. Registering a name twice with another section is an error."""
    for name in (kind, *aliases):
        if not name.isidentifier():
            raise ValueError(f"a model kind must be an identifier, got {name!r}")
        taken = _SECTIONS.get(_ALIASES.get(name, name))
        if taken is not None and taken is not section:
            raise ValueError(f"model kind {name!r} is already registered")
    _SECTIONS[kind] = section
    for alias in aliases:
        _ALIASES[alias] = kind


def add_kind_finder(finder: Callable[[], None]) -> None:
    """``finder`` registers kinds from elsewhere (plug-ins); it runs whenever a config names
    a kind that is not registered yet (so a plug-in named after an earlier miss is found)."""
    _FINDERS.append(finder)


def canonical_kind(name: str, *, strict: bool = True) -> str:
    """The registered kind ``name`` stands for (itself or what it is an alias of); ``strict``:
    one that is registered, after looking for plug-ins, else ValueError."""
    kind = _ALIASES.get(name, name)
    if strict and kind not in _SECTIONS:
        for finder in _FINDERS:
            finder()
        kind = _ALIASES.get(name, name)
    if strict and kind not in _SECTIONS:
        raise ValueError(f"model.kind must be one of {', '.join(kind_names())}, got {name!r}")
    return kind


def kind_names() -> list[str]:
    return sorted(_SECTIONS)


def section_of_kind(kind: str) -> type:
    """The dataclass of ``[model.<kind>]``."""
    return _SECTIONS[canonical_kind(kind)]
