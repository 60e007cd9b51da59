"""QIN: the release (QIN_variety_v9) and mmctr from the same initial weights, fed the same rows
each step through each side's own data path, dropout off, batch norm on (batch statistics on
both): the loss of both after every step, the data loss and the total with the embedding
regulariser apart. Before the first step, one batch's forward is compared layer by layer."""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
import qin_oracle as oracle
import torch
import torch.nn.functional as F
from torch import nn

from mmctr.data import make_batch
from mmctr.training.epoch import train_step
from mmctr.training.loop import make_optimizer

NORMS: list[float] = []  # the gradient norm each clip_grad_norm_ saw, both sides in turn
_clip = torch.nn.utils.clip_grad_norm_


def _recording_clip(*args: Any, **kwargs: Any) -> torch.Tensor:
    NORMS.append(float(_clip(*args, **kwargs)))
    return torch.tensor(NORMS[-1])


torch.nn.utils.clip_grad_norm_ = _recording_clip  # both sides look it up at each call


class InWeightDtype(nn.Module):
    """The release casts the frozen embedding to float32; feed its Linear in its own dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.to(self.linear.weight.dtype))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    ap.add_argument(
        "--loss",
        choices=["released", "logits"],
        default="released",
        help="the release's data loss: FuxiCTR's BCE on probabilities, or mmctr's "
        "BCE with logits on the same logit",
    )
    ap.add_argument("--reg", type=float, default=2e-4, help="embedding regulariser, both sides")
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam's lr, both sides")
    ap.add_argument("--clip", type=float, default=10.0, help="max gradient norm, both (0: off)")
    ap.add_argument("--mm-dim", type=int, default=128, help="item_emb_d128's projected width")
    ap.add_argument("--fused", type=int, default=1, help="mmctr's fused Adam (1) or not (0)")
    ap.add_argument("--seed", type=int, default=20242025)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/qin-oracle")
    ap.add_argument("--out", required=True)
    return ap.parse_args()


@dataclass
class Pair:
    """The release and mmctr, same initial weights, in one dtype, each with its optimiser."""

    params: dict[str, Any]
    fmap: Any
    rel: Any
    mm: nn.Module
    opt: torch.optim.Optimizer
    cfg: Any
    data: Any
    pairs: list[tuple[torch.Tensor, torch.Tensor]]
    seen: dict[str, Any]


def record_loss_parts(rel: Any, mm: nn.Module, seen: dict[str, Any], loss: str) -> None:
    """The release's compute_loss (data loss + regularization_loss), its parts recorded; with
    ``loss = "logits"`` its data loss is BCE with logits on its QNN's logit (mmctr's formula)
    instead of FuxiCTR's BCE on the sigmoid's output. Both sides' logits are kept."""
    rel.qnn.register_forward_hook(lambda m, i, out: seen.update(rel_logit=out))
    mm.register_forward_hook(lambda m, i, out: seen.update(mm_logit=out.detach()))

    def compute_loss(return_dict: dict, y_true: torch.Tensor) -> torch.Tensor:
        if loss == "logits":
            data = F.binary_cross_entropy_with_logits(seen["rel_logit"], y_true)
        else:
            data = rel.add_loss(return_dict, y_true)
        reg = rel.regularization_loss()
        seen.update(rel_data=float(data.detach()), rel_reg=float(reg))
        return data + reg

    rel.compute_loss = compute_loss


def build_pair(a: argparse.Namespace, dtype: torch.dtype) -> Pair:
    params = oracle.params_for(
        a.data,
        a.work,
        a.seed,
        a.mm_dim,
        net_dropout=0.0,
        batch_size=a.batch,
        embedding_regularizer=a.reg,
        learning_rate=a.lr,
    )
    torch.manual_seed(a.seed)
    fmap, rel = oracle.build(params)
    rel._max_gradient_norm, rel._batch_index = a.clip or float("inf"), 0
    overrides = [
        "model.qin.dropout=0",
        f"model.mm_dim={a.mm_dim}",
        f"train.batch_size={a.batch}",
        f"train.lr={params['learning_rate']}",
        f"train.grad_clip={a.clip}",
        f"train.embedding_reg={a.reg}",
        f"train.fused_adam={'true' if a.fused else 'false'}",
    ]
    cfg, data, mm = oracle.mmctr_model(a.data, overrides)  # its weights are the release's, below
    pairs = oracle.weight_pairs(rel, mm)
    with torch.no_grad():
        for src, dst in pairs + oracle.buffer_pairs(rel, mm):
            dst.copy_(src)
    encoders = rel.embedding_layer.embedding_layer.feature_encoders
    encoders["item_emb_d128"] = InWeightDtype(encoders["item_emb_d128"])
    rel.to(dtype)
    mm.to(dtype)
    rel.get_labels = lambda inputs: inputs[0]["label"].to(dtype).view(-1, 1)
    seen: dict[str, Any] = {}
    record_loss_parts(rel, mm, seen, a.loss)
    # each side's optimiser, built on its parameters after the dtype change
    rel.optimizer = torch.optim.Adam(rel.parameters(), lr=params["learning_rate"])
    opt = make_optimizer(mm, cfg.train)
    rel.train()
    mm.train()
    return Pair(params, fmap, rel, mm, opt, cfg, data, pairs, seen)


def check_same_rows(step: int, rb: Any, mb: Any, n: int, max_len: int) -> None:
    """Both data paths gave the same histories, targets, context and labels."""
    items = rb[1]["item_id"].view(n, -1)
    assert torch.equal(items[:, :-1], mb.history[:, -max_len:]), f"step {step}: histories"
    assert torch.equal(items[:, -1], mb.target), f"step {step}: targets differ"
    assert torch.equal(rb[0]["likes_level"].long(), mb.context[:, 0])
    assert torch.equal(rb[0]["views_level"].long(), mb.context[:, 1])
    assert mb.labels is not None and torch.equal(rb[0]["label"].float(), mb.labels)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().reshape(b.shape), b.detach()
    return float((a - b).abs().max() / a.abs().max().clamp(min=1e-30))


def compare_forward(p: Pair, rb: Any, mb: Any) -> dict[str, float]:
    """One batch through copies of both (train mode, no step): the relative max difference
    of the QNN's input by part (context, target, attention output), of each quadratic layer's
    output and of the logits."""
    rel, mm = copy.deepcopy(p.rel), copy.deepcopy(p.mm)
    got: dict[str, dict[str, torch.Tensor]] = {"rel": {}, "mm": {}}

    def keep(side: str, key: str) -> Any:
        return lambda m, i, out: got[side].update({key: out})

    rel.qnn.register_forward_pre_hook(lambda m, i: got["rel"].update(x0=i[0]))
    mm.qnn.register_forward_pre_hook(lambda m, i: got["mm"].update(x0=i[0]))
    for i, block in enumerate(mm.qnn.blocks):
        rel.qnn.layer[i].register_forward_hook(keep("rel", f"quadratic_{i}"))
        block[0].register_forward_hook(keep("mm", f"quadratic_{i}"))
    rel.qnn.register_forward_hook(keep("rel", "logit"))  # the QNN ends in the output Linear
    with torch.no_grad():
        rel.forward(rb)
        got["mm"]["logit"] = mm(mb.history, mb.target, mb.context)
    c = mm.context.out_dim
    d = mm.items.out_dim
    parts = {"context": slice(0, c), "target": slice(c, c + d), "attention": slice(c + d, None)}
    out = {k: rel_diff(got["rel"]["x0"][:, s], got["mm"]["x0"][:, s]) for k, s in parts.items()}
    for key in got["mm"]:
        if key != "x0":
            out[key] = rel_diff(got["rel"][key], got["mm"][key])
    return out


def one_step(p: Pair, rb: Any, mb: Any, reg: float) -> dict[str, float]:
    """A training step on each side: the data loss, the penalty and the total of both; the
    release's loss formula on mmctr's logits, and the release's rows whose probability
    rounded to exactly 0 or 1 (FuxiCTR's BCE clamps their log at -100; no gradient)."""
    mm_reg = float(oracle.mmctr_penalty(p.mm, reg))  # on the weights the step starts from
    loss_r = float(p.rel.train_step(rb).detach())
    loss_m = float(train_step(p.mm, p.opt, mb, p.cfg.train))
    r_data, r_reg = p.seen["rel_data"], p.seen["rel_reg"]
    norms = NORMS[-2:] if len(NORMS) >= 2 else [float("nan")] * 2
    NORMS.clear()
    y = mb.labels.to(p.seen["mm_logit"].dtype)
    as_release = float(F.binary_cross_entropy(torch.sigmoid(p.seen["mm_logit"]), y))
    prob = torch.sigmoid(p.seen["rel_logit"].detach().view(-1))
    return dict(
        release=r_data,
        mmctr=loss_m,
        rel_diff=abs(r_data - loss_m) / abs(r_data),
        release_total=loss_r,
        mmctr_total=loss_m + mm_reg,
        total_rel_diff=abs(loss_r - loss_m - mm_reg) / abs(loss_r),
        release_penalty=r_reg,
        mmctr_penalty=mm_reg,
        mmctr_as_release=as_release,
        saturated=int(((prob == 0) | (prob == 1)).sum()),
        max_abs_logit=float(p.seen["mm_logit"].abs().max()),
        release_grad_norm=norms[0],
        mmctr_grad_norm=norms[1],
    )


def run_steps(a: argparse.Namespace, p: Pair) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Train both sides ``a.steps`` steps on the same rows: (losses, step 0's forward)."""
    rows_of = oracle.loader.ParquetDataset(p.params["train_data"])
    collate = oracle.loader.BatchCollator(
        p.fmap, p.params["max_len"], rows_of.column_index, p.params["item_info"]
    )
    split = p.data["train"]
    order = np.random.default_rng(a.seed).permutation(len(split))
    losses: list[dict[str, Any]] = []
    forward: dict[str, float] = {}
    for step in range(a.steps):
        start = (step * a.batch) % (len(split) - a.batch)  # wraps round after one epoch
        rows = order[start : start + a.batch]
        rb = collate([rows_of[i] for i in rows])  # the release's own data path
        mb = make_batch(split, rows)  # mmctr's
        check_same_rows(step, rb, mb, len(rows), p.params["max_len"])
        if step == 0:
            forward = compare_forward(p, rb, mb)
            print("step 0 forward, max relative difference:", json.dumps(forward))
        losses.append(dict(step=step, **one_step(p, rb, mb, a.reg)))
        x = losses[-1]
        if step % 20 == 0 or step == a.steps - 1:
            print(
                f"step {step:4d}  data: release {x['release']:.10f} mmctr {x['mmctr']:.10f} "
                f"{x['rel_diff']:.2e}  total: {x['release_total']:.10f} "
                f"{x['mmctr_total']:.10f} {x['total_rel_diff']:.2e}"
            )
    return losses, forward


def first_parting(losses: list[dict[str, Any]], tol: float) -> int | None:
    return next((x["step"] for x in losses if x["rel_diff"] > tol), None)


def main() -> None:
    a = parse_args()
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    p = build_pair(a, dtype)
    t0 = time.time()
    losses, forward = run_steps(a, p)
    weights_after = max(rel_diff(s, d) for s, d in p.pairs)
    result = {k: getattr(a, k) for k in ("dtype", "loss", "reg", "clip", "lr", "mm_dim", "batch")}
    result.update(
        fused_adam=bool(a.fused),
        steps=a.steps,
        tensors=len(p.pairs),
        parameters=sum(d.numel() for _, d in p.pairs),
        forward_step0=forward,
        max_rel_loss_diff=max(x["rel_diff"] for x in losses),
        max_rel_total_diff=max(x["total_rel_diff"] for x in losses),
        max_rel_penalty_diff=max(
            abs(x["release_penalty"] - x["mmctr_penalty"]) / max(x["release_penalty"], 1e-300)
            for x in losses
        ),
        first_step_over_1e6=first_parting(losses, 1e-6),
        first_step_over_1e3=first_parting(losses, 1e-3),
        first_saturated_step=next((x["step"] for x in losses if x["saturated"]), None),
        saturated_rows=sum(x["saturated"] for x in losses),
        clipped_steps=sum(x["release_grad_norm"] > a.clip > 0 for x in losses),
        max_rel_weight_diff_after=weights_after,
        seconds=round(time.time() - t0, 1),
        losses=losses,
    )
    print(json.dumps({k: v for k, v in result.items() if k != "losses"}))
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
