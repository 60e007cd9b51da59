"""``mmctr experiment peers``: the 1st-place model beside its peers on the same data ("the table").

The target-aware Transformer (``--config``) and QIN (the 2nd place, ``--qin-config``), each
with and without the item-level features (``data.item_feature_cols``), the DIN baseline
(``--din-config``), and an ``ensemble`` row: per seed, the runs of the two best single
variants by mean valid AUC, their logits combined with weights fitted on valid
(``ensemble_rows.py``). QIN and DIN are built from their own presets with the [data] section
and train.epochs/patience/seed/num_threads of ``--config`` (``preset_base``), so every run
sees the same data, epochs and seeds; the ``+items`` variants differ from theirs only in
``data.item_feature_cols``.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmctr.config import Config
from mmctr.errors import ConfigError
from mmctr.experiments.plan import Job, Plan, Variant, check_seeds, preset_base, with_seed

ENSEMBLE = "ensemble"  # the variant name of the ensemble rows
QIN_PRESET = "qin-cpu"  # the shipped preset the QIN variants start from by default
DEFAULT_ITEM_COLS = ("likes_level", "views_level")

PEERS: tuple[Variant, ...] = (
    Variant("target-transformer", "the target-aware Transformer (1st place) as configured"),
    Variant(
        "target-transformer+items",
        "the target-aware Transformer with the item-level features (data.item_feature_cols)",
        items=True,
    ),
    Variant("qin", "QIN (2nd place), from its preset (--qin-config)", base="qin"),
    Variant(
        "qin+items",
        "QIN with the item-level features (data.item_feature_cols)",
        base="qin",
        items=True,
    ),
    Variant("din", "the DIN baseline, from its preset (--din-config)", base="din"),
)
ENSEMBLE_DESCRIPTION = (
    "per seed, the runs of the two best single variants by mean valid AUC, their logits "
    "combined with non-negative weights summing to 1 fitted on valid (valid metrics are "
    "therefore in-sample; test is not)"
)


def peers_plan(
    config: Config,
    qin_config: Config,
    din_config: Config,
    *,
    item_cols: Sequence[str] = DEFAULT_ITEM_COLS,
    seeds: int = 1,
    quick: bool = False,
) -> Plan:
    """The five single variants of ``PEERS`` x ``seeds`` seeds, and an ensemble row a seed."""
    check_seeds(seeds)
    cols = [c.strip() for c in item_cols if c.strip()]
    if not cols:
        raise ConfigError("--item-cols is empty; name item_info columns, e.g. likes_level")
    if len(set(cols)) != len(cols):
        raise ConfigError(f"--item-cols lists a column twice: {','.join(cols)}")
    if config.data.item_feature_cols:
        raise ConfigError(
            "--config reads item features already (data.item_feature_cols = "
            f"{list(config.data.item_feature_cols)}); peers compares without and with them: "
            "leave the key empty and name the columns with --item-cols"
        )
    kinds = {"": (config, "target_transformer", "--config"), "qin": (qin_config, "qin",
             "--qin-config"), "din": (din_config, "din", "--din-config")}  # fmt: skip
    for given, kind, flag in kinds.values():
        if given.model.kind != kind:
            found = given.model.kind
            raise ConfigError(f"{flag} must describe model.kind = {kind!r}, not {found!r}")
    configs: dict[str, Config] = {}
    for v in PEERS:
        base = config if not v.base else preset_base(config, kinds[v.base][0])
        items = [f"data.item_feature_cols={','.join(cols)}"] if v.items else []
        try:
            configs[v.name] = base.with_overrides([*v.overrides, *items])
        except ConfigError as exc:
            raise ConfigError(f"variant {v.name} cannot be built from the config: {exc}") from None
    jobs = tuple(
        Job(v.name, k, with_seed(configs[v.name], k, quick)) for v in PEERS for k in range(seeds)
    )
    descriptions = {v.name: v.description for v in PEERS}
    descriptions[ENSEMBLE] = ENSEMBLE_DESCRIPTION
    return Plan("peers", jobs, descriptions, ensemble_seeds=seeds)
