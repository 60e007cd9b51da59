"""Run folders written by release 0.1.0 still load, score, evaluate and resume.

tests/fixtures/runs-0.1.0 holds four runs trained by the code of the commit in its expected.json
(scripts/fixtures/make_old_runs.sh made them, on the tiny synthetic set of tests/conftest.py):
seed-model, the seed model with fitted semantic-id codebooks and two items added by `mmctr items
add`; seed-plain; din; and seed-model-cut, seed-model stopped after epoch 2 of 3 (unfinished).
Only the public faces are used, the command line (`mmctr.cli.main.main`) and `mmctr.load_run`,
so the test outlives internal renames. Runs are copied before use: nothing is written into
tests/fixtures.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmctr
from mmctr.cli.main import main

FIXTURE = Path(__file__).parent / "fixtures" / "runs-0.1.0"
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text())
RUNS = sorted(EXPECTED["runs"])
FINISHED = [name for name in RUNS if "resumed" not in EXPECTED["runs"][name]]
METRICS = ("auc", "logloss", "gauc")


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `mmctr ARGS`."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def copy_run(name: str, tmp_path: Path) -> Path:
    run = tmp_path / name
    shutil.copytree(FIXTURE / name, run)
    return run


def test_fixture_is_what_the_runs_need() -> None:
    assert EXPECTED["version"] == "0.1.0" and len(EXPECTED["commit"]) == 40
    assert RUNS == ["din", "seed-model", "seed-model-cut", "seed-plain"]
    assert FINISHED == ["din", "seed-model", "seed-plain"]
    saved = json.loads((FIXTURE / "seed-model" / "config.json").read_text())
    assert saved["model"]["kind"] == "seed" and saved["model"]["semantic_ids"] is True
    assert (FIXTURE / "seed-model" / "new_items.parquet").is_file()
    assert not (FIXTURE / "seed-model-cut" / "summary.json").exists()
    total = sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file())
    assert total < 1_000_000


@pytest.mark.parametrize("name", RUNS)
def test_evaluate_gives_the_recorded_metrics(
    name: str, tmp_path: Path, tiny_data_master: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(name, tmp_path)
    for split in ("valid", "test"):
        code, out, err = cli(
            capsys, "evaluate", "--run", run, "--data", tiny_data_master, "--split", split, "--json"
        )
        assert code == 0, err
        got, want = json.loads(out), EXPECTED["runs"][name][split]
        assert got["rows"] == want["rows"]
        for key in METRICS:
            assert got[key] == pytest.approx(want[key], abs=1e-6), (split, key)


@pytest.mark.parametrize("name", RUNS)
def test_load_run_scores_as_before(name: str, tmp_path: Path, tiny_data_master: Path) -> None:
    want = EXPECTED["runs"][name]
    scorer = mmctr.load_run(copy_run(name, tmp_path), tiny_data_master, device="cpu")
    probs = scorer.predict("valid")
    assert np.allclose(probs[:8], want["predict_valid_first8"], rtol=0, atol=1e-6)
    assert scorer.num_items == want["num_items"]  # the items added by `mmctr items add` too
    if "score" in want:  # two trained items, then the two new ones
        case = want["score"]
        got = scorer.score(case["history"], case["target"], case["context"])
        assert np.allclose(got, case["probs"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", RUNS)
def test_predict_writes_a_submission(
    name: str, tmp_path: Path, tiny_data_master: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, out = copy_run(name, tmp_path), tmp_path / "submission.zip"
    code, _, err = cli(
        capsys, "predict", "--run", run, "--data", tiny_data_master, "--split", "valid",
        "--out", out,
    )  # fmt: skip
    assert code == 0, err
    with zipfile.ZipFile(out) as zf:
        (member,) = zf.namelist()
        table = np.loadtxt(io.StringIO(zf.read(member).decode()), delimiter=",", skiprows=1)
    assert table.shape == (EXPECTED["runs"][name]["valid"]["rows"], 2)
    assert np.array_equal(table[:, 0], np.arange(len(table)))
    want = EXPECTED["runs"][name]["predict_valid_first8"]
    assert np.allclose(table[:8, 1], want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", FINISHED)
def test_resume_of_a_finished_run_keeps_its_model(
    name: str, tmp_path: Path, tiny_data_master: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(name, tmp_path)
    code, _, err = cli(capsys, "train", "--data", tiny_data_master, "--out", run, "--resume")
    assert code == 0, err
    summary, old = (json.loads((d / "summary.json").read_text()) for d in (run, FIXTURE / name))
    assert summary["best_valid"] == old["best_valid"]
    valid = mmctr.load_run(run, tiny_data_master, device="cpu").predict("valid")
    assert np.allclose(valid[:8], EXPECTED["runs"][name]["predict_valid_first8"], atol=1e-6)


def test_an_unfinished_run_resumes_from_its_checkpoint(
    tmp_path: Path, tiny_data_master: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """seed-model-cut stopped after epoch 2 of 3: epoch 3 continues from state.pt (weights,
    Adam moments, fitted codebooks, early-stopping state) as the old code continued it."""
    run = copy_run("seed-model-cut", tmp_path)
    before = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    code, _, err = cli(capsys, "train", "--data", tiny_data_master, "--out", run, "--resume")
    assert code == 0, err
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for old, new in zip(before, history[:2], strict=True):
        assert new["valid_auc"] == old["valid_auc"]  # kept, not retrained
    want = EXPECTED["runs"]["seed-model-cut"]["resumed"]
    assert want["epoch"] == 3
    for key in METRICS:
        assert history[2][f"valid_{key}"] == pytest.approx(want[f"valid_{key}"], abs=1e-5), key
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 3
    assert summary["best_valid"]["auc"] == max(h["valid_auc"] for h in history)
