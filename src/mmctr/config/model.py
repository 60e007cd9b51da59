"""Typed hyper-parameters of the CTR models; defaults are the paper's configuration.

``[model]`` holds what every model kind shares (the item and context inputs, the history
window), ``[model.beyond]`` the item-side switches beyond the paper, and ``[model.<kind>]`` the
keys of the chosen kind alone (its dataclass is registered with the model: config/kinds.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from mmctr.config.checks import check_fields
from mmctr.config.kinds import canonical_kind, section_of_kind

MaskMode = Literal["correct", "released"]
Projection = Literal["linear", "none"]
IdInit = Literal["random", "mm"]
DEFAULT_KIND = "target_transformer"
S = TypeVar("S")


@dataclass(frozen=True)
class BeyondConfig:
    """What the frozen embedding can give an item's id side (docs/beyond.md); off by default.
    Every model kind applies them, through the item encoder they share."""

    semantic_ids: bool = False  # residual k-means codes of the frozen embedding, embedded
    sid_levels: int = 3  # code levels (each clusters the previous levels' residual)
    sid_codes: int = 256  # codes per level
    sid_dim: int = 16  # embedding width of each level's code
    id_init: IdInit = "random"  # "mm": id table starts at the frozen embedding's top PCs

    def __post_init__(self) -> None:
        check_fields(self, "model.beyond", at_least_one=("sid_levels", "sid_dim"))
        if self.sid_codes < 2:
            raise ValueError(f"model.beyond.sid_codes must be >= 2, got {self.sid_codes}")


@dataclass(frozen=True)
class ModelConfig:
    kind: str = DEFAULT_KIND  # a registered kind: "target_transformer" (alias "seed"), "din"
    # item representation: id ++ mean(tags) ++ projected frozen embedding
    id_dim: int = 64  # item-id embedding width
    tag_dim: int = 64  # tag embedding width (masked mean over an item's tags)
    mm_dim: int = 128  # output width of the Linear on the frozen embedding
    use_multimodal: bool = True  # include the frozen multimodal embedding at all
    mm_projection: Projection = "linear"  # "none" feeds the raw frozen vector
    context_dim: int = 64  # embedding width of each context field
    context_padding: bool = True  # context value 0 embeds to a fixed zero vector (the release's)
    item_feature_dim: int = 16  # embedding width of each item feature (data.item_feature_cols)
    max_len: int = 100  # the history window: the last max_len positions
    beyond: BeyondConfig = field(default_factory=BeyondConfig)
    # the kind's own keys, [model.<kind>]: an instance of its registered dataclass
    # (None: its defaults)
    kind_section: Any = None

    def __post_init__(self) -> None:
        kind = canonical_kind(self.kind)
        object.__setattr__(self, "kind", kind)
        section_cls = section_of_kind(kind)
        if self.kind_section is None:
            object.__setattr__(self, "kind_section", section_cls())
        elif not isinstance(self.kind_section, section_cls):
            raise ValueError(
                f"model.kind = {kind!r} takes [model.{kind}] keys, got "
                f"{type(self.kind_section).__name__}"
            )
        check_fields(
            self,
            "model",
            at_least_one=(
                "id_dim",
                "tag_dim",
                "mm_dim",
                "context_dim",
                "item_feature_dim",
                "max_len",
            ),
        )
        check_with = getattr(self.kind_section, "check_with", None)
        if check_with is not None:
            check_with(self)

    def section(self, cls: type[S]) -> S:
        """The kind's own section as its type (models read their keys through this)."""
        if not isinstance(self.kind_section, cls):
            raise TypeError(f"model.kind {self.kind!r} has no {cls.__name__} section")
        return self.kind_section

    def replace_section(self, **changes: Any) -> ModelConfig:
        """A copy with keys of the kind's own section changed."""
        return dataclasses.replace(
            self, kind_section=dataclasses.replace(self.kind_section, **changes)
        )

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del out["kind_section"]
        out["beyond"] = _plain(dataclasses.asdict(self.beyond))
        out[self.kind] = _plain(dataclasses.asdict(self.kind_section))
        return out


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
