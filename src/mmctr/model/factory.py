"""The model kinds and the one place that builds a model from its config.

A kind is a ``CTRModel`` subclass built from ``(cfg, dims)`` and a frozen dataclass of its own
``[model.<kind>]`` keys, registered with the decorator::

    @register_model("my_kind", MyKindConfig)
    class MyKind(CTRModel): ...

after which configs may say ``kind = "my_kind"`` and every face (train, resume, evaluate,
predict, export, serve) works with it. The command line finds kinds outside mmctr as
plug-ins: the modules named in the environment variable ``MMCTR_MODELS`` (comma-separated)
and the entry points of group ``mmctr.models`` are imported when a config first names a kind
that is not registered (a served model's own process inherits the variable).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TypeVar

from mmctr.config.dims import DataDims
from mmctr.config.kinds import add_kind_finder, canonical_kind, register_kind
from mmctr.config.model import ModelConfig
from mmctr.errors import ConfigError
from mmctr.model.base import CTRModel

M = TypeVar("M", bound=type[CTRModel])
_MODELS: dict[str, type[CTRModel]] = {}
PLUGIN_VARIABLE = "MMCTR_MODELS"
PLUGIN_GROUP = "mmctr.models"


def register_model(kind: str, section: type, *, aliases: tuple[str, ...] = ()) -> Callable[[M], M]:
    """Register a model class under ``kind`` with ``section`` as its ``[model.<kind>]``."""

    def register(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, CTRModel)):
            raise TypeError(f"register_model({kind!r}) needs a CTRModel subclass, got {cls!r}")
        register_kind(kind, section, aliases=aliases)
        _MODELS[kind] = cls
        return cls

    return register


def model_class(kind: str) -> type[CTRModel]:
    return _MODELS[canonical_kind(kind)]


def build_model(cfg: ModelConfig, dims: DataDims) -> CTRModel:
    """The model of ``cfg.kind``, freshly initialised (seed torch's generator first for a
    reproducible init: ``training/run.py`` does)."""
    return model_class(cfg.kind)(cfg, dims)


def load_plugin_kinds() -> None:
    """Import the modules that register kinds from outside mmctr (see the module's doc)."""
    names = [n.strip() for n in os.environ.get(PLUGIN_VARIABLE, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(
                f"{PLUGIN_VARIABLE}: cannot import model module {name!r} ({exc})"
            ) from None
    for point in entry_points(group=PLUGIN_GROUP):
        point.load()


add_kind_finder(load_plugin_kinds)
