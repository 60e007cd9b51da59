"""Where the keys of the flat ``[model]`` section of mmctr 0.1 live now.

A run's saved config (config.json, a checkpoint) written before the sections existed is moved
to them silently, so every old run still loads; a new file or ``--set`` that writes an old
key gets a one-line hint to its new place instead.
"""

from __future__ import annotations

from typing import Any

from mmctr.config.kinds import canonical_kind
from mmctr.errors import ConfigError

_TRANSFORMER = (
    "use_sequence", "target_concat", "num_layers", "num_heads", "ff_dim", "seq_dropout",
    "first_k", "max_pool", "mask", "use_cross", "num_cross_layers", "cross_rank", "deep_mlp",
    "deep_dropout", "pred_mlp", "similarity_input", "positions",
)  # fmt: skip
_BEYOND = ("semantic_ids", "sid_levels", "sid_codes", "sid_dim", "id_init")
_DIN = ("attention_mlp", "attention_dropout", "softmax", "mlp", "dropout", "batch_norm")
# old key -> (its section now, its name there)
MOVED: dict[str, tuple[str, str]] = {
    **{key: ("target_transformer", key) for key in _TRANSFORMER},
    **{key: ("beyond", key) for key in _BEYOND},
    **{f"din_{key}": ("din", key) for key in _DIN},
}
# speed paths that give the same scores: the model's execution setting, not its config
EXECUTION = ("trim_padding", "pack_tokens")


def hint(key: str) -> str | None:
    """Where an old flat model key lives now, as a sentence; None for a key that never moved."""
    if key in EXECUTION:
        return (
            f"model.{key} is no longer a config key: trimming and packing are exact, and a model "
            "chooses them itself (CTRModel.executing for a caller who must switch them off)"
        )
    if key not in MOVED:
        return None
    section, name = MOVED[key]
    return (
        f"model.{key} has moved: write it as {name} under [model.{section}] "
        f"(--set model.{section}.{name}=...)"
    )


def move_flat_keys(values: dict[str, Any], source: str, *, saved: bool) -> dict[str, Any]:
    """``values`` of a [model] table with its old flat keys moved to their sections.

    ``saved``: the table comes from a run written by an older mmctr (move silently, dropping
    the keys of the kinds it is not); otherwise an old key is a ConfigError with its hint.
    """
    old = [key for key in values if key in MOVED or key in EXECUTION]
    if not old:
        return values
    if not saved:
        raise ConfigError(f"{source}: {hint(old[0])}")
    kind = canonical_kind(str(values.get("kind", "target_transformer")), strict=False)
    out = {key: value for key, value in values.items() if key not in old}
    for key in old:
        if key in EXECUTION:
            continue
        section, name = MOVED[key]
        if section in ("beyond", kind):
            out.setdefault(section, {})[name] = values[key]
    return out
