"""What an experiment runs: its variants, their configs and the seeds, decided before anything runs.

An ablation compares fixed variants of the target-aware Transformer (paper Table 2) and the
DIN baseline; a
sweep varies one config key (paper Fig. 2). Every variant runs once per seed, the k-th seed being
``train.seed + k``, on the same data; all problems with the plan are raised here, up front.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from mmctr.config import Config
from mmctr.errors import ConfigError

ExperimentKind = Literal["ablation", "sweep", "peers", "confirm"]


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    overrides: tuple[str, ...] = ()  # section.key=value applied to the base config
    base: str = ""  # the other preset it is built on ("din", "qin"; preset_base), "" = --config
    items: bool = False  # reads the item features (peers: data.item_feature_cols = --item-cols)

    @property
    def din(self) -> bool:
        return self.base == "din"


ABLATION: tuple[Variant, ...] = (
    Variant("full", "the target-aware Transformer as configured"),
    Variant(
        "no-transformer",
        "without the Transformer: no history at all (model.target_transformer.use_sequence=false)",
        ("model.target_transformer.use_sequence=false",),
    ),
    Variant(
        "no-transformer-no-mm",
        "without the Transformer and the multimodal embedding (Table 2's ID-only row)",
        ("model.target_transformer.use_sequence=false", "model.use_multimodal=false"),
    ),
    Variant(
        "no-dcn",
        "without the DCNv2 cross network; the deep MLP stays "
        "(model.target_transformer.use_cross=false)",
        ("model.target_transformer.use_cross=false",),
    ),
    Variant(
        "no-multimodal",
        "item id and tags only, no frozen embedding (model.use_multimodal=false)",
        ("model.use_multimodal=false",),
    ),
    Variant(
        "no-target-concat",
        "history items enter the Transformer without the target "
        "(model.target_transformer.target_concat=false)",
        ("model.target_transformer.target_concat=false",),
    ),
    Variant(
        "raw-mm",
        "the frozen embedding fed raw, no learnable projection (model.mm_projection=none)",
        ("model.mm_projection=none",),
    ),
    Variant(
        "released-mask",
        "the release's inverted padding mask (model.target_transformer.mask=released)",
        ("model.target_transformer.mask=released",),
    ),
    Variant(
        "din", "DIN baseline with the multimodal embedding", ("model.use_multimodal=true",), "din"
    ),
    Variant(
        "din-no-mm", "DIN baseline, item id and tags only", ("model.use_multimodal=false",), "din"
    ),
)
# the switches beyond the paper (docs/beyond.md): named with --variants, not run by default
BEYOND: tuple[Variant, ...] = (
    Variant(
        "semantic-ids",
        "residual k-means codes of the frozen embedding, embedded (model.beyond.semantic_ids=true)",
        ("model.beyond.semantic_ids=true",),
    ),
    Variant(
        "mm-id-init",
        "id table initialised from the frozen embedding's principal components "
        "(model.beyond.id_init=mm)",
        ("model.beyond.id_init=mm",),
    ),
    Variant(
        "similarity",
        "target-history cosine of the frozen embeddings added to each token "
        "(model.target_transformer.similarity_input=true)",
        ("model.target_transformer.similarity_input=true",),
    ),
    Variant(
        "positions",
        "learned embeddings of history positions (model.target_transformer.positions=true)",
        ("model.target_transformer.positions=true",),
    ),
    Variant(
        "beyond-all",
        "all four switches above together",
        (
            "model.beyond.semantic_ids=true",
            "model.beyond.id_init=mm",
            "model.target_transformer.similarity_input=true",
            "model.target_transformer.positions=true",
        ),
    ),
)
VARIANTS = {v.name: v for v in (*ABLATION, *BEYOND)}


@dataclass(frozen=True)
class Job:
    """One training run of a plan, written to ``OUT/runs/<name>/``."""

    variant: str
    seed_index: int
    config: Config
    value: str = ""  # the swept value; empty in an ablation

    @property
    def name(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", self.variant)  # a swept value may hold anything
        return f"{safe}-seed{self.seed_index}"


@dataclass(frozen=True)
class Plan:
    kind: ExperimentKind
    jobs: tuple[Job, ...]
    descriptions: dict[str, str]  # variant -> what it is, in plan order
    param: str = ""  # the swept key, for a sweep
    ensemble_seeds: int = 0  # peers: an ensemble row per seed (peers.py), made of trained runs


DIN_PRESET = "din"  # the shipped preset the DIN variants start from (see load_config)


def preset_base(config: Config, other: Config) -> Config:
    """Another preset's config (DIN's, QIN's) made comparable: its model and train keys, with
    the [data] section and train.epochs/patience/seed/num_threads of ``config``."""
    train = replace(
        other.train,
        epochs=config.train.epochs,
        patience=config.train.patience,
        seed=config.train.seed,
        num_threads=config.train.num_threads,
    )
    return Config(data=config.data, model=other.model, train=train)


din_base = preset_base  # its name from before QIN


def with_seed(config: Config, k: int, quick: bool) -> Config:
    train = replace(config.train, seed=config.train.seed + k)
    if quick:
        train = replace(train, epochs=1)
    return replace(config, train=train)


def check_seeds(seeds: int) -> None:
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")


def ablation_plan(
    config: Config,
    din_config: Config | None,
    *,
    seeds: int = 1,
    variants: Sequence[str] | None = None,
    quick: bool = False,
) -> Plan:
    """Every chosen variant (default: all of ``ABLATION``; ``BEYOND``'s when named) x
    ``seeds`` seeds."""
    check_seeds(seeds)
    names = list(variants) if variants else [v.name for v in ABLATION]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ConfigError(
            f"--variants: unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"--variants lists a variant twice: {','.join(names)}")
    if config.model.kind != "target_transformer":
        raise ConfigError(
            "--config must describe the target-aware Transformer "
            "(model.kind = 'target_transformer')"
        )
    chosen = [VARIANTS[n] for n in names]
    if any(v.din for v in chosen):
        if din_config is None:
            raise ConfigError("the DIN variants need --din-config (configs/din.toml)")
        if din_config.model.kind != "din":
            raise ConfigError("--din-config must describe DIN (model.kind = 'din')")
    configs: dict[str, Config] = {}
    for v in chosen:
        base = din_base(config, din_config) if (v.din and din_config) else config
        try:
            configs[v.name] = base.with_overrides(list(v.overrides))
        except ConfigError as exc:
            raise ConfigError(f"variant {v.name} cannot be built from the config: {exc}") from None
    jobs = tuple(
        Job(v.name, k, with_seed(configs[v.name], k, quick)) for v in chosen for k in range(seeds)
    )
    return Plan("ablation", jobs, {v.name: v.description for v in chosen})


def sweep_plan(
    config: Config, param: str, values: Sequence[str], *, seeds: int = 1, quick: bool = False
) -> Plan:
    """One variant ``key=value`` per value of ``param`` (``section.key``) x ``seeds`` seeds.

    A value the config cannot take (e.g. model.target_transformer.first_k above model.max_len)
    is an error here, before anything runs: change the config with --set instead of having
    values silently moved.
    """
    check_seeds(seeds)
    if not values:
        raise ConfigError("--values is empty; give a comma-separated list, e.g. 1,2,4,8")
    if len(set(values)) != len(values):
        raise ConfigError(f"--values lists a value twice: {','.join(values)}")
    key = param.rpartition(".")[2]  # the run folders keep the short name: first_k=4-seed0
    configs: dict[str, Config] = {}
    for value in values:
        try:
            configs[value] = config.with_overrides([f"{param}={value}"])
        except ConfigError as exc:
            reason = str(exc).removeprefix("--set: ")
            raise ConfigError(
                f"{param}={value} cannot run with this config ({reason}); drop the value or "
                "change the config for every run with --set, e.g. --set model.max_len=100"
            ) from None
    jobs = tuple(
        Job(f"{key}={value}", k, with_seed(configs[value], k, quick), value)
        for value in values
        for k in range(seeds)
    )
    descriptions = {f"{key}={value}": f"{param} = {value}" for value in values}
    return Plan("sweep", jobs, descriptions, param)
