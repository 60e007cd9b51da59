"""Cold-start evaluation: metrics by how often the target item is a train target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mmctr
from mmctr.cli.main import main
from mmctr.config import DataConfig
from mmctr.data import target_counts
from mmctr.errors import DataError
from mmctr.training.metrics import auc, metrics_by_item_frequency


def test_buckets_by_hand() -> None:
    counts = np.array([0, 0, 0, 3, 3, 7, 70, 70, 70, 70])
    labels = np.array([0, 1, 1, 0, 1, 1, 0, 1, 0, 1], dtype=np.float32)
    probs = np.array([0.1, 0.9, 0.05, 0.3, 0.8, 0.5, 0.4, 0.6, 0.7, 0.2])
    users = np.arange(10)
    got = {b["bucket"]: b for b in metrics_by_item_frequency(users, labels, probs, counts)}
    assert list(got) == ["unseen", "1-5", "6-50", ">50"]
    assert [got[b]["rows"] for b in got] == [3, 2, 1, 4]
    assert [got[b]["positives"] for b in got] == [2, 1, 1, 2]
    assert got["unseen"]["auc"] == pytest.approx(0.5)  # 0.9 beats 0.1, 0.05 does not
    assert got["1-5"]["auc"] == 1.0
    assert np.isnan(got["6-50"]["auc"])  # one row, one class
    assert got[">50"]["auc"] == auc(labels[6:], probs[6:])


def test_target_counts_read_the_target_column(tiny_data_master: Path) -> None:
    cfg = DataConfig()
    items = pq.read_metadata(tiny_data_master / "item_info.parquet").num_rows
    counts = target_counts(tiny_data_master, "train", cfg, items)
    targets = pq.read_table(tiny_data_master / "train.parquet", columns=["item_id"])
    assert counts.shape == (items,) and counts.sum() == targets.num_rows
    assert np.array_equal(counts, np.bincount(targets.column(0).to_numpy(), minlength=items))


def test_target_counts_name_a_bad_id(tiny_data: Path) -> None:
    path = tiny_data / "train.parquet"
    table = pq.read_table(path)
    ids = table.column("item_id").to_numpy().copy()
    ids[17] = 10**6
    pq.write_table(table.set_column(2, "item_id", pa.array(ids)), path)
    with pytest.raises(DataError, match=r"train.parquet.*'item_id'.*row 17"):
        target_counts(tiny_data, "train", DataConfig(), 500)


def test_evaluate_by_item_frequency(
    tiny_run_master: Path, tiny_data_master: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["evaluate", "--run", str(tiny_run_master), "--data", str(tiny_data_master),
                 "--split", "test", "--by-item-frequency", "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    buckets = report["by_item_frequency"]
    assert [b["bucket"] for b in buckets] == ["unseen", "1-5", "6-50", ">50"]
    assert sum(b["rows"] for b in buckets) == report["rows"]
    scorer = mmctr.load_run(tiny_run_master, tiny_data_master)
    direct = scorer.evaluate_by_item_frequency("test")
    overall = scorer.report("test")  # one prediction pass: the same overall metrics, no buckets
    assert "by_item_frequency" not in overall
    assert report["auc"] == pytest.approx(overall["auc"])
    assert overall["auc"] == pytest.approx(direct_auc(scorer))
    for got, want in zip(buckets, direct, strict=True):
        assert got["rows"] == want["rows"]
        assert got["auc"] == (None if np.isnan(want["auc"]) else pytest.approx(want["auc"]))
    code = main(["evaluate", "--run", str(tiny_run_master), "--data", str(tiny_data_master),
                 "--by-item-frequency"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "by how often the target item is a train target" in out and "unseen" in out


def direct_auc(scorer: mmctr.Scorer) -> float:
    """The test AUC computed from scratch: the predictions and scikit-learn's AUC."""
    from sklearn.metrics import roc_auc_score

    test = scorer.split("test", require_labels=True)
    return float(roc_auc_score(test.labels, scorer.predict(test)))
