"""Which float format a model computes in: detecting fast bfloat16 and resolving ``auto``.

Training precision (``train.precision``) is autocast with fp32 master weights and fp32 Adam
state: ``fp32``, ``bf16``, or ``auto``, which is bf16 where the hardware multiplies bf16
matrices fast (AMX or AVX512-BF16 on a CPU, compute capability 8.0 or later on an NVIDIA GPU)
and fp32 elsewhere. Inference precision (``predict`` / ``evaluate`` / ``serve --precision``)
converts a loaded model for scoring: ``bf16`` stores its weights in bfloat16, ``int8``
quantises its Linear layers' weights to int8 per tensor, with activations quantised on the fly
(PyTorch's dynamic quantisation).
"""

from __future__ import annotations

import warnings
from typing import Literal, TypeVar, cast

import torch
from torch import nn

from mmctr.errors import ConfigError

TrainPrecision = Literal["fp32", "bf16"]
InferencePrecision = Literal["fp32", "bf16", "int8"]
M = TypeVar("M", bound=nn.Module)
INFERENCE_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")


def fast_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` multiplies bfloat16 matrices natively, and what says so."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major >= 8, f"compute capability {major}.{minor}"
    if device.type == "cpu":
        cpu = torch.cpu
        if getattr(cpu, "_is_amx_tile_supported", lambda: False)():
            return True, "AMX"
        if getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
            return True, "AVX512-BF16"
        return False, "no AMX or AVX512-BF16"
    return False, f"{device.type} is not checked"


def resolve_precision(precision: str, device: torch.device) -> tuple[TrainPrecision, str]:
    """(``fp32`` or ``bf16``, a reason) for a training precision on ``device``."""
    if precision in ("fp32", "bf16"):
        return ("bf16" if precision == "bf16" else "fp32"), "as configured"
    if precision != "auto":
        raise ConfigError(f"precision {precision!r}: choose fp32, bf16 or auto")
    fast, why = fast_bf16(device)
    return ("bf16" if fast else "fp32"), f"auto: {why}"


def for_inference(model: M, precision: str) -> M:
    """``model`` converted for scoring in ``precision`` (fp32: unchanged; bf16: in place).

    int8 returns a new module whose ``nn.Linear`` layers are dynamically quantised (CPU only);
    it scores a history's candidates row by row, as quantised layers have no weight halves to
    share (its execution says so).
    """
    if precision not in INFERENCE_PRECISIONS:
        raise ConfigError(
            f"precision {precision!r}: choose one of {', '.join(INFERENCE_PRECISIONS)}"
        )
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        if any(p.device.type != "cpu" for p in model.parameters()):
            raise ConfigError("int8 inference runs on the CPU only; use --device cpu or bf16")
        with warnings.catch_warnings():  # torch.ao's API is deprecated in favour of torchao
            warnings.simplefilter("ignore")
            quantized = torch.ao.quantization.quantize_dynamic(
                model, {nn.Linear}, dtype=torch.qint8
            )  # a copy of the same class
        set_execution = getattr(quantized, "set_execution", None)
        if set_execution is not None:  # a CTRModel
            set_execution(quantized.execution.replace(share_histories=False))
        return cast(M, quantized)
    return model
