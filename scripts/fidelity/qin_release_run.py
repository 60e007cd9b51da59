"""Train the 2nd place's release (QIN_variety_v9) at qin-cpu's sizes on a data dir, as its
run_expid.py does; score valid and test (labels kept). For the end-to-end comparison with
``mmctr train --config qin-cpu`` on the same rows."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
import pyarrow.parquet as pq
import qin_oracle as oracle
import torch
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.torch_utils import seed_everything
from sklearn.metrics import log_loss, roc_auc_score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seed", type=int, default=20242025)
    ap.add_argument("--mm-dim", type=int, default=128, help="item_emb_d128's projected width")
    ap.add_argument("--set", action="append", default=[], help="release param, key=json value")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/qin-oracle", help="feature maps, checkpoints")
    ap.add_argument("--out", required=True, help="result JSON")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    changes = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    params = oracle.params_for(a.data, a.work, a.seed, a.mm_dim, **changes)
    seed_everything(params["seed"])  # as run_expid.py: before the model is built
    fmap, model = oracle.build(params)
    n_params = sum(p.numel() for p in model.parameters())
    params["data_loader"] = oracle.loader.MMCTRDataLoader
    train, valid = RankDataLoader(fmap, stage="train", **params).make_iterator()
    t0 = time.time()
    model.fit(train, validation_data=valid, **params)  # restores the best epoch's weights
    fit_s = time.time() - t0
    valid_metrics = model.evaluate(valid)
    test = RankDataLoader(fmap, stage="test", **params).make_iterator()
    pred = model.predict(test)
    y = pq.read_table(params["test_data"], columns=["label"])["label"].to_numpy()
    result = dict(
        seed=a.seed,
        data=a.data,
        changes=changes,
        parameters=n_params,
        train_rows=train.num_samples,
        valid={k: float(v) for k, v in valid_metrics.items()},
        test_auc=float(roc_auc_score(y, pred)),
        test_logloss=float(log_loss(y, np.clip(pred, 1e-7, 1 - 1e-7))),
        fit_seconds=round(fit_s, 1),
    )
    print(json.dumps(result))
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
