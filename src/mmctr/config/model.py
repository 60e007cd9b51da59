"""Typed hyper-parameters of the CTR models; defaults are the paper's configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MaskMode = Literal["correct", "released"]
Projection = Literal["linear", "none"]
ModelKind = Literal["seed", "din"]
IdInit = Literal["random", "mm"]


@dataclass(frozen=True)
class ModelConfig:
    kind: ModelKind = "seed"  # "din": the challenge's DIN baseline (fields din_*, see model/din.py)
    # item representation: id ++ mean(tags) ++ projected frozen embedding
    id_dim: int = 64  # item-id embedding width
    tag_dim: int = 64  # tag embedding width (masked mean over an item's tags)
    mm_dim: int = 128  # output width of the Linear on the frozen embedding
    use_multimodal: bool = True  # include the frozen multimodal embedding at all
    mm_projection: Projection = "linear"  # "none" feeds the raw frozen vector
    context_dim: int = 64  # embedding width of each context field
    context_padding: bool = True  # context value 0 embeds to a fixed zero vector (the release's)
    # sequence module: Transformer over history items, each concatenated with the target
    use_sequence: bool = True
    target_concat: bool = True
    max_len: int = 100  # read the last max_len history positions
    num_layers: int = 2
    num_heads: int = 1
    ff_dim: int = 256
    seq_dropout: float = 0.2
    first_k: int = 16  # flatten the outputs at the last first_k positions
    max_pool: bool = True  # ++ Linear(max-pool over real positions)
    mask: MaskMode = "correct"  # "released" reproduces the release's inverted padding mask
    trim_padding: bool = True  # skip all-padding columns of a batch (exact under mask=correct)
    pack_tokens: bool = True  # per-token layers on real items only (exact under mask=correct)
    # feature interaction: DCNv2 cross network in parallel with a deep MLP
    use_cross: bool = True
    num_cross_layers: int = 3
    cross_rank: int = 0  # 0: full-rank W (the paper's); r > 0: W = U V with U, V of rank r
    deep_mlp: tuple[int, ...] = (1024, 512, 256)
    deep_dropout: float = 0.2
    # prediction head
    pred_mlp: tuple[int, ...] = (64, 32)
    # beyond the paper (issue 17, docs/beyond.md); all off by default
    semantic_ids: bool = False  # residual k-means codes of the frozen embedding, embedded
    sid_levels: int = 3  # code levels (each clusters the previous levels' residual)
    sid_codes: int = 256  # codes per level
    sid_dim: int = 16  # embedding width of each level's code
    id_init: IdInit = "random"  # "mm": id table starts at the frozen embedding's top PCs
    similarity_input: bool = False  # cosine(target, history item) added to each token
    positions: bool = False  # learned embedding of each history position (from the newest)
    # DIN only (kind = "din"); it shares the item/context fields and max_len, trim_padding above
    din_attention_mlp: tuple[int, ...] = (512, 256)  # attention unit MLP on [h, t, h - t, h * t]
    din_attention_dropout: float = 0.1
    din_softmax: bool = False  # False as in the DIN paper and the baseline: raw weights
    din_mlp: tuple[int, ...] = (1024, 512, 256)  # Linear -> BatchNorm -> ReLU -> Dropout blocks
    din_dropout: float = 0.1
    din_batch_norm: bool = True

    def __post_init__(self) -> None:
        positive = {
            "id_dim": self.id_dim,
            "tag_dim": self.tag_dim,
            "mm_dim": self.mm_dim,
            "context_dim": self.context_dim,
            "max_len": self.max_len,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "first_k": self.first_k,
            "sid_levels": self.sid_levels,
            "sid_dim": self.sid_dim,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"model.{name} must be >= 1, got {value}")
        self._check_beyond()
        if self.cross_rank < 0:
            raise ValueError(f"model.cross_rank must be >= 0, got {self.cross_rank}")
        if self.num_cross_layers < 0:
            raise ValueError(f"model.num_cross_layers must be >= 0, got {self.num_cross_layers}")
        if self.kind not in ("seed", "din"):
            raise ValueError(f"model.kind must be 'seed' or 'din', got {self.kind!r}")
        mlps = {
            "deep_mlp": self.deep_mlp,
            "pred_mlp": self.pred_mlp,
            "din_attention_mlp": self.din_attention_mlp,
            "din_mlp": self.din_mlp,
        }
        for name, sizes in mlps.items():
            if any(s < 1 for s in sizes):
                raise ValueError(f"model.{name} sizes must all be >= 1, got {list(sizes)}")
        if not self.deep_mlp and not self.use_cross:
            raise ValueError("model.deep_mlp is empty and model.use_cross is false: nothing left")
        if not self.din_attention_mlp:
            raise ValueError("model.din_attention_mlp needs at least one hidden size")
        dropouts = {
            "seq_dropout": self.seq_dropout,
            "deep_dropout": self.deep_dropout,
            "din_attention_dropout": self.din_attention_dropout,
            "din_dropout": self.din_dropout,
        }
        for name, p in dropouts.items():
            if not 0.0 <= p < 1.0:
                raise ValueError(f"model.{name} must be in [0, 1), got {p}")
        # first_k only exists in the seed model's sequence module
        if self.kind == "seed" and self.first_k > self.max_len:
            raise ValueError(
                f"model.first_k ({self.first_k}) cannot exceed model.max_len ({self.max_len})"
            )
        if self.mask not in ("correct", "released"):
            raise ValueError(f"model.mask must be 'correct' or 'released', got {self.mask!r}")
        if self.kind == "din" and self.mask != "correct":
            raise ValueError("model.mask = 'released' applies to the seed model's Transformer only")
        if self.mm_projection not in ("linear", "none"):
            raise ValueError(
                f"model.mm_projection must be 'linear' or 'none', got {self.mm_projection!r}"
            )

    def _check_beyond(self) -> None:
        """The switches beyond the paper (issue 17)."""
        if self.sid_codes < 2:
            raise ValueError(f"model.sid_codes must be >= 2, got {self.sid_codes}")
        if self.id_init not in ("random", "mm"):
            raise ValueError(f"model.id_init must be 'random' or 'mm', got {self.id_init!r}")
        if self.kind == "din" and (self.similarity_input or self.positions):
            raise ValueError(
                "model.similarity_input and model.positions belong to the seed model's "
                "Transformer; DIN has none"
            )
