"""Precision: fast-bf16 detection and ``auto``, bf16 / int8 scoring, and bench's bf16 figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mmctr
from mmctr.cli.main import main
from mmctr.errors import ConfigError
from mmctr.training import precision as prec

CPU = torch.device("cpu")


def test_auto_is_bf16_only_where_the_hardware_has_fast_bf16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert prec.resolve_precision("fp32", CPU) == ("fp32", "as configured")
    assert prec.resolve_precision("bf16", CPU) == ("bf16", "as configured")
    monkeypatch.setattr(prec, "fast_bf16", lambda device: (False, "forced off"))
    assert prec.resolve_precision("auto", CPU) == ("fp32", "auto: forced off")
    monkeypatch.setattr(prec, "fast_bf16", lambda device: (True, "AMX"))
    assert prec.resolve_precision("auto", CPU) == ("bf16", "auto: AMX")
    with pytest.raises(ConfigError, match="fp16"):
        prec.resolve_precision("fp16", CPU)


def test_cpu_and_gpu_capabilities_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert prec.fast_bf16(CPU) == (False, "no AMX or AVX512-BF16")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert prec.fast_bf16(CPU) == (True, "AVX512-BF16")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (7, 5))
    assert prec.fast_bf16(torch.device("cuda")) == (False, "compute capability 7.5")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))
    assert prec.fast_bf16(torch.device("cuda")) == (True, "compute capability 9.0")


def test_auto_training_says_what_it_picked_and_keeps_auto_in_the_run(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(prec, "fast_bf16", lambda device: (False, "forced off"))
    out = tmp_path / "run"
    code = main(["train", "--data", str(tiny_data_master), "--config", str(tiny_config_file),
                 "--out", str(out), "--set", "train.epochs=1", "--set", "train.precision=auto",
                 "--no-progress"])  # fmt: skip
    assert code == 0
    assert "precision: fp32 (auto: forced off)" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["train"]["precision"] == "auto"


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_low_precision_scores_stay_close_to_fp32(
    tiny_run_master: Path, tiny_data_master: Path, precision: str
) -> None:
    full = mmctr.load_run(tiny_run_master, tiny_data_master, device="cpu")
    low = mmctr.load_run(tiny_run_master, tiny_data_master, device="cpu", precision=precision)
    if precision == "bf16":
        assert next(low.model.parameters()).dtype == torch.bfloat16
    else:
        kinds = {type(m).__module__ for m in low.model.modules()}
        assert "torch.ao.nn.quantized.dynamic.modules.linear" in kinds
    assert low.precision == precision and low.parameter_count == full.parameter_count > 0
    split = full.split("valid")
    a, b = full.predict(split), low.predict(split)
    assert a.dtype == b.dtype == np.float32
    # int8 is coarser: weights and activations in 256 levels per tensor (measured on the demo
    # data's CPU-preset run: mean 0.008, AUC -0.0006; docs/performance.md)
    max_diff, mean_diff = (0.02, 0.005) if precision == "bf16" else (0.2, 0.03)
    assert np.abs(a - b).max() < max_diff and np.abs(a - b).mean() < mean_diff
    assert np.corrcoef(a, b)[0, 1] > 0.98
    groups = [([3, 1, 4, 1, 5], [3, 1], [9, 2, 6]), ([], [0, 0], [7])]
    for got, want in zip(low.score_groups(groups), full.score_groups(groups), strict=True):
        assert np.abs(got - want).max() < max_diff
    alone = low.score_groups(groups[:1])[0]
    assert np.abs(alone - low.score_groups(groups)[0]).max() < 1e-6, "batching changes nothing"


def test_evaluate_and_predict_take_a_precision(
    tiny_run_master: Path, tiny_data_master: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    base = ["evaluate", "--run", str(tiny_run_master), "--data", str(tiny_data_master), "--json"]
    assert main(base) == 0
    fp32 = json.loads(capsys.readouterr().out)
    assert main([*base, "--precision", "int8"]) == 0
    int8 = json.loads(capsys.readouterr().out)
    assert int8["precision"] == "int8" and abs(int8["auc"] - fp32["auc"]) < 0.02
    out = tmp_path / "sub.zip"
    assert main(["predict", "--run", str(tiny_run_master), "--data", str(tiny_data_master),
                 "--out", str(out), "--precision", "bf16"]) == 0  # fmt: skip
    assert out.is_file()
    with pytest.raises(SystemExit):
        main([*base, "--precision", "fp16"])
    with pytest.raises(ConfigError, match="choose one of fp32, bf16, int8"):
        prec.for_inference(torch.nn.Linear(2, 2), "fp8")


def test_bench_reports_bf16_rates_and_speedups(
    tiny_data_master: Path, tiny_config_file: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    args = ["bench", "--config", str(tiny_config_file), "--data", str(tiny_data_master),
            "--batches", "1", "--json"]  # fmt: skip
    assert main([*args, "--compare-bf16"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["precision"] == "fp32" and figures["matmul_gflops_bf16"] > 0
    assert figures["bf16"]["train_samples_per_s"] > 0 and figures["bf16"]["mfu"] > 0
    assert figures["bf16_train_speedup"] > 0 and figures["bf16_inference_speedup"] > 0
    monkeypatch.setattr(prec, "fast_bf16", lambda device: (False, "forced off"))
    assert main([*args, "--set", "train.precision=auto"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["precision"] == "fp32" and figures["precision_reason"] == "auto: forced off"
    # the MFU of an fp32 run is against the fp32 matmul rate (both printed rounded)
    expected = figures["train_gflops"] / figures["matmul_gflops"]
    assert figures["mfu"] == pytest.approx(expected, rel=0.05, abs=2e-3)


def test_bench_times_bf16_scoring_on_bf16_weights_as_predict_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mmctr.training import bench

    seen: list[set[torch.dtype]] = []

    class Probe(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)

        def forward(self, history: object, target: object, context: object) -> torch.Tensor:
            seen.append({p.dtype for p in self.parameters()})
            assert not torch.is_autocast_enabled("cpu")  # no per-batch casts
            return self.lin(torch.ones(2, 3, dtype=self.lin.weight.dtype))

    class B:
        history = target = context = None

    assert bench._timed_inference(Probe(), [B(), B()], "bf16") >= 0  # type: ignore[arg-type]
    assert seen == [{torch.bfloat16}, {torch.bfloat16}]
