"""Item and context representations shared by every model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmctr.config.dims import DataDims
from mmctr.config.model import BeyondConfig, Projection
from mmctr.model.semantic import assign_codes, normalised

EMBEDDING_INIT_STD = 1e-4  # the release's init of every embedding table


class ItemEncoder(nn.Module):
    """id embedding ++ masked mean of tag embeddings ++ item features ++ (projected) frozen
    multimodal embedding.

    Item features (``data.item_feature_cols``: integer attributes such as an item's likes and
    views levels) are embedded one table per column, ``feature_dim`` wide, value 0 (unknown,
    and the padding item's) to a fixed zero vector; without any the vector is as before.

    The item feature table (tags, features and frozen embedding of every item) lives in
    non-persistent buffers filled by ``load_item_features``: it belongs to the data, not to the
    weights, and is gathered by index on the device. Padding id 0 maps to the zero vector.

    A new item (one without a learned id: registered after training with ``append_items``, or
    held out of it with ``mark_new_items``) reads the id table's padding row, which is zero,
    and is represented by its tags and frozen embedding alone (``id_rows``).

    Two switches read the frozen embedding on the id side (docs/beyond.md): semantic IDs
    (each level's residual k-means code embedded, ++ to the vector) and the id table started
    at its principal components (``id_init = "mm"``). They are fitted by an explicit step
    (``model/item_fit.py``) that hands the result to ``apply_fit``; this module only applies
    it. The codebooks and the ``fitted`` flag are in the state dict, so a trained model never
    refits.

    Shape: (...) int ids -> (..., out_dim).
    """

    item_tags: torch.Tensor  # (N, T) buffer
    item_features: torch.Tensor  # (N, C) buffer: each item's integer features
    item_emb: torch.Tensor  # (N, D) buffer
    id_rows: torch.Tensor  # (N,) buffer: the id-embedding row of each item, 0 for a new one
    sid_books: torch.Tensor  # (L, K, D) buffer, with semantic IDs: the residual codebooks
    sid_codes: torch.Tensor  # (N, L) buffer: each item's code at each level
    sid_offsets: torch.Tensor  # (L,) buffer: first row of each level in the code table
    fitted: torch.Tensor  # () bool buffer: the switches' fit to the item table is done

    def __init__(
        self,
        *,
        id_dim: int,
        tag_dim: int,
        mm_dim: int,
        mm_projection: Projection,
        beyond: BeyondConfig,
        dims: DataDims,
        feature_dim: int = 16,
    ) -> None:
        """``mm_dim`` 0: no multimodal part; ``mm_projection = "none"``: the raw vector."""
        super().__init__()
        n, emb_dim = dims.num_items, dims.emb_dim
        self.id_emb = nn.Embedding(n, id_dim, padding_idx=0)
        self.tag_emb = nn.Embedding(dims.num_tags, tag_dim, padding_idx=0)
        self.register_buffer(
            "item_tags", torch.zeros(n, dims.tags_per_item, dtype=torch.long), persistent=False
        )
        sizes = dims.item_feature_vocab_sizes
        self.feature_emb = nn.ModuleList(nn.Embedding(v, feature_dim, padding_idx=0) for v in sizes)
        self.register_buffer(
            "item_features", torch.zeros(n, len(sizes), dtype=torch.long), persistent=False
        )
        self.use_multimodal = mm_dim > 0
        self.register_buffer("item_emb", torch.zeros(n, emb_dim), persistent=False)
        self.register_buffer("id_rows", torch.arange(n), persistent=False)
        self.num_id_rows = n
        self.mm_proj: nn.Linear | None = None
        mm_width = 0
        if self.use_multimodal:
            linear = mm_projection == "linear"
            self.mm_proj = nn.Linear(emb_dim, mm_dim, bias=False) if linear else None
            mm_width = mm_dim if linear else emb_dim
        self.id_init = beyond.id_init
        self.sid_emb: nn.Embedding | None = None
        sid_width = 0
        if beyond.semantic_ids:
            L, K = beyond.sid_levels, beyond.sid_codes
            self.sid_emb = nn.Embedding(L * K, beyond.sid_dim)
            self.register_buffer("sid_books", torch.zeros(L, K, emb_dim))
            self.register_buffer("sid_offsets", torch.arange(L) * K, persistent=False)
            self.register_buffer("sid_codes", torch.zeros(n, L, dtype=torch.long), persistent=False)
            self.register_load_state_dict_post_hook(_recode_after_load)
            sid_width = L * beyond.sid_dim
        self.needs_fit = beyond.semantic_ids or beyond.id_init == "mm"
        if self.needs_fit:
            self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.out_dim = id_dim + tag_dim + feature_dim * len(sizes) + mm_width + sid_width
        self._spare: dict[str, torch.Tensor] | None = None  # the table's buffers with free rows

    @property
    def num_items(self) -> int:
        """Items in the table: the trained ones and any appended since."""
        return int(self.item_tags.shape[0])

    def load_item_features(
        self, tags: torch.Tensor, emb: torch.Tensor, features: torch.Tensor | None = None
    ) -> None:
        """Copy the data's item table in: tags (N, T) ints, emb (N, D) floats, features (N, C)
        ints (None: every feature 0, unknown).

        N may exceed the items the model was trained on: the extra rows are new items, which
        read the zero id row. Items marked new (``mark_new_items``) stay marked.
        """
        if features is None:
            features = torch.zeros(tags.shape[0], self.item_features.shape[1], dtype=torch.long)
        mine = (self.item_tags, self.item_emb, self.item_features)
        if tags.shape[0] < self.num_id_rows or any(
            given.shape[0] != tags.shape[0] or given.shape[1:] != own.shape[1:]
            for given, own in zip((tags, emb, features), mine, strict=True)
        ):
            raise ValueError(
                f"item features of shape {tuple(tags.shape)}, {tuple(emb.shape)}, "
                f"{tuple(features.shape)} do not fit a model built for "
                f"{', '.join(str(tuple(t.shape)) for t in mine)}"
            )
        device = self.item_tags.device
        if tags.shape[0] != self.item_tags.shape[0]:
            known = torch.arange(tags.shape[0], device=device)
            known[self.num_id_rows :] = 0
            known[: self.num_id_rows] = self.id_rows[: self.num_id_rows]
            self.item_tags = torch.empty_like(tags, device=device)
            self.item_emb = torch.empty(emb.shape, dtype=self.item_emb.dtype, device=device)
            self.item_features = torch.empty(features.shape, dtype=torch.long, device=device)
            self.id_rows = known
        self.item_tags.copy_(tags)
        self.item_features.copy_(features)
        self.item_emb.copy_(emb)
        self._recode()

    def append_items(
        self, tags: torch.Tensor, emb: torch.Tensor, features: torch.Tensor | None = None, *,
        room: int = 0, first: int | None = None,
    ) -> int:  # fmt: skip
        """Add new items (M, T) tags, (M, D) embeddings and (M, C) features (None: all 0,
        unknown) at the end of the table; they read the zero id row. Returns the first new id.

        ``first``: the id the first of them must get (default: the table's size); rows the
        table already holds from there are skipped, so the call can be repeated. The rows are
        written beside the live table, into free rows after it, and the table is then widened
        over them: only the new rows are copied. Where too few rows are free, the table moves
        once into buffers with ``room`` free rows beyond these items (a whole copy), so that a
        server registering items call after call copies the table once, not per call.
        """
        size = self.num_items
        start = size if first is None else first
        if not start <= size <= start + tags.shape[0]:
            raise ValueError(f"new items from id {start}: the table holds {size} items")
        tags, emb = tags[size - start :], emb[size - start :]
        if features is None:
            features = torch.zeros(tags.shape[0], self.item_features.shape[1], dtype=torch.long)
        features = features[features.shape[0] - tags.shape[0] :]
        end = size + tags.shape[0]
        if end == size:
            return start
        if self._free_rows() < tags.shape[0]:
            self._move(end + room)
        spare = self._spare
        assert spare is not None
        spare["item_tags"][size:end] = tags
        spare["item_emb"][size:end] = emb
        spare["item_features"][size:end] = features
        spare["id_rows"][size:end] = 0
        if self.sid_emb is not None:
            spare["sid_codes"][size:end] = assign_codes(spare["item_emb"][size:end], self.sid_books)
        for name, store in spare.items():  # a full buffer is itself, not a view of itself
            setattr(self, name, store if end == store.shape[0] else store[:end])
        return start

    def _free_rows(self) -> int:
        """Rows free beside the live table: 0 unless every table buffer is still the start of
        the buffer ``_move`` made (loading, ``to`` or a cast replaces them)."""
        spare = self._spare
        if spare is None:
            return 0
        for name, store in spare.items():
            live = getattr(self, name)
            if live.data_ptr() != store.data_ptr() or (live.dtype, live.device) != (
                store.dtype, store.device
            ):  # fmt: skip
                return 0
        return int(spare["item_tags"].shape[0]) - self.num_items

    def _move(self, rows: int) -> None:
        """Move the table into buffers of ``rows`` rows; the live table is their first rows."""
        names = ["item_tags", "item_emb", "item_features", "id_rows"]
        names += ["sid_codes"] if self.sid_emb is not None else []
        size = self.num_items
        self._spare = {}
        for name in names:
            live = getattr(self, name)
            store = live.new_empty((rows, *live.shape[1:]))
            store[:size] = live
            self._spare[name] = store
            setattr(self, name, store[:size])

    def take_table(self, other: ItemEncoder) -> None:
        """Load ``other``'s item table as it stands: appended items and new-item marks too."""
        self.load_item_features(other.item_tags, other.item_emb, other.item_features)
        self.id_rows.copy_(other.id_rows)

    def mark_new_items(self, ids: torch.Tensor) -> None:
        """Treat these items as new: their id embedding is the zero padding row, never trained
        (a cold-start evaluation holds items out of training this way)."""
        self.id_rows[ids.to(self.id_rows.device)] = 0

    def trained_item_embeddings(self) -> torch.Tensor:
        """The frozen embeddings of the items with a learned id (rows 1 .. of the id table):
        what the switches are fitted on. Shape: -> (N - 1, D)."""
        return self.item_emb[1 : self.num_id_rows]

    @torch.no_grad()
    def apply_fit(self, *, codebooks: torch.Tensor | None, id_init: torch.Tensor | None) -> None:
        """Take what ``item_fit.fit_items`` fitted: the semantic-ID codebooks (L, K, D) and the
        id table's rows 1 .. (N - 1, id_dim); either None where its switch is off."""
        if codebooks is not None:
            self.sid_books.copy_(codebooks)
        if id_init is not None:
            table = self.id_emb.weight
            table[1 : self.num_id_rows] = id_init.to(table)
        self.fitted.fill_(True)
        self._recode()

    def _recode(self) -> None:
        """Every item's semantic-ID codes from the codebooks and the loaded table."""
        if self.sid_emb is not None:
            self.sid_codes = assign_codes(self.item_emb, self.sid_books)

    def similarity(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of the frozen embeddings of two equally shaped id tensors; 0 where
        either has none (padding). Shape: (...), (...) -> (...)."""
        a, b = normalised(self.item_emb[history]), normalised(self.item_emb[target])
        return (a * b).sum(-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tags = self.item_tags[ids]  # (..., T)
        count = (tags != 0).sum(-1, keepdim=True).clamp(min=1)
        # padding tags embed to zero, so the sum over all T slots is the sum over real tags
        parts = [self.id_emb(self.id_rows[ids]), self.tag_emb(tags).sum(-2) / count]
        if len(self.feature_emb):
            features = self.item_features[ids]  # (..., C)
            parts.extend(emb(features[..., f]) for f, emb in enumerate(self.feature_emb))
        if self.use_multimodal:
            frozen = self.item_emb[ids]
            parts.append(frozen if self.mm_proj is None else self.mm_proj(frozen))
        if self.sid_emb is not None:
            codes = self.sid_codes[ids] + self.sid_offsets  # (..., L) rows of the code table
            parts.append(self.sid_emb(codes).flatten(-2))
        return torch.cat(parts, dim=-1)


def _recode_after_load(module: nn.Module, _keys: Any) -> None:
    """Loaded codebooks replace the fitted ones: the items' codes follow them."""
    assert isinstance(module, ItemEncoder)
    with torch.no_grad():
        module._recode()


class ContextEncoder(nn.Module):
    """One embedding per categorical context field, concatenated.

    With ``zero_level_padding`` the value 0 of every field embeds to a fixed zero vector that
    is never trained, as in the release: FuxiCTR gives every categorical field
    ``padding_idx = 0``, context levels included (docs/fidelity.md measures what it changes).

    Shape: (B, F) int -> (B, F * context_dim).
    """

    def __init__(
        self, *, vocab_sizes: tuple[int, ...], dim: int, zero_level_padding: bool = True
    ) -> None:
        super().__init__()
        padding = 0 if zero_level_padding else None
        self.fields = nn.ModuleList(nn.Embedding(v, dim, padding_idx=padding) for v in vocab_sizes)
        self.out_dim = dim * len(vocab_sizes)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        if not self.fields:
            return context.new_zeros((context.shape[0], 0), dtype=torch.float32)
        return torch.cat([emb(context[:, f]) for f, emb in enumerate(self.fields)], dim=-1)
