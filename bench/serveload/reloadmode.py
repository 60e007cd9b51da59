"""--mode reload: a constant open-loop load while POST /admin/reload switches the server to
another run: every answer must be 200, and a probe request scored after the load must get
that run's scores, computed here in-process."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx

from serveload.bodies import Requests
from serveload.capacity import rate_for
from serveload.openloop import Answer, Side, generator, latency_ms, run_load, statuses, valid_bodies

RELOAD_TIMEOUT_S = 600.0  # a reload loads and warms up a run: the paper configuration is slow
PROBE_ATOL = 1e-5  # the probe's scores against the new run's, scored here


def reloader(url: str, run: str, at: float, token: str | None) -> Side:
    """A side task: POST /admin/reload {"run": run} ``at`` s after t0; returns what it got."""
    headers = {"authorization": f"Bearer {token}"} if token else {}

    async def reload(t0: float, stop: asyncio.Event) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
        began = time.perf_counter()
        out: dict[str, Any] = {"at_s": round(began - t0, 3)}
        async with httpx.AsyncClient(base_url=url, timeout=RELOAD_TIMEOUT_S) as client:
            try:
                answer = await client.post("/admin/reload", json={"run": run}, headers=headers)
            except httpx.HTTPError as exc:
                return out | {"status": f"error:{type(exc).__name__}"}
        try:
            body: Any = answer.json()
        except ValueError:
            body = answer.text
        took = time.perf_counter() - began
        return out | {"status": answer.status_code, "answer": body, "seconds": round(took, 3)}

    return reload


def by_run(answers: Sequence[Answer], old: str) -> dict[str, Any]:
    """Answers by the run that gave them, second by second, and when the switch showed."""
    seconds: dict[int, Counter[str]] = {}
    for a in answers:
        if a.run is not None:
            seconds.setdefault(int(a.done), Counter())[a.run] += 1
    old_done = [a.done for a in answers if a.run == old]
    new_done = [a.done for a in answers if a.run is not None and a.run != old]
    return {
        "per_second": {str(s): dict(c) for s, c in sorted(seconds.items())},
        "last_old_answer_s": round(max(old_done), 3) if old_done else None,
        "first_new_answer_s": round(min(new_done), 3) if new_done else None,
    }


def expected_scores(run: str, data: str | None, model: dict[str, Any], body: Any) -> list[float]:
    """The probe scored by ``run`` in this process, as ``client.in_process`` builds groups."""
    import torch

    import mmctr

    torch.set_num_threads(1)
    scorer = mmctr.load_run(run, data, device="cpu")
    cols = list(model["vocab"]["context"])
    group = (body["history"], [body["context"][c] for c in cols], body["candidates"])
    return [float(v) for v in scorer.score_groups([group])[0]]


def max_diff(a: Sequence[float], b: Sequence[float]) -> float:
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def probe(url: str, body: bytes) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/v1/score", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    got: dict[str, Any] = answer.json() if answer.status_code == 200 else {}
    return {"status": answer.status_code, "run": got.get("run"), "scores": got.get("scores")}


def probe_report(
    before: dict[str, Any], after: dict[str, Any], want: list[float]
) -> dict[str, Any]:
    """The probe before and after: whether the second got ``want`` and the first did not."""
    diff = None if after["scores"] is None else max_diff(after["scores"], want)
    differ = before["scores"] is not None and after["scores"] is not None
    return {
        "before_run": before["run"],
        "after_run": after["run"],
        "max_abs_diff_to_reload_run": diff,
        "matches_reload_run": diff is not None and diff <= PROBE_ATOL,
        "differs_from_before": differ and max_diff(before["scores"], after["scores"]) > 1e-6,
    }


def run_reload(
    url: str, pid: int | None, model: dict[str, Any], maker: Requests, args: argparse.Namespace
) -> tuple[dict[str, Any], list[str]]:
    """The load with its reload, and the probe; the report and what failed."""
    token = args.token_file.read_text().strip() if args.token_file else None
    rate, measured = rate_for(url, maker, args)
    fixed = maker.valid()
    body = json.dumps(fixed).encode()
    before = probe(url, body)
    bodies = valid_bodies(maker, max(1, round(rate * args.seconds)))
    side = reloader(url, args.reload_run, args.reload_at, token)
    answers, (reload,), seconds = run_load(url, bodies, rate, [side])
    after = probe(url, body)
    checked = probe_report(before, after, expected_scores(args.reload_run, args.data, model, fixed))
    counts = statuses(answers)
    errors = counts["requests"] - counts["ok_200"]
    failures = [f"{errors} answers other than 200 (transport errors included)"] if errors else []
    failures += [] if reload.get("status") == 200 else [f"the reload answered {reload}"]
    if not checked["matches_reload_run"]:
        failures.append("the probe after the load does not match --reload-run")
    if not checked["differs_from_before"]:
        failures.append("the probe got the same scores before and after the reload")
    out = {
        "mode": "reload",
        "run": model["run"],
        "reload_run": args.reload_run,
        "candidates": args.candidates,
        "capacity": measured,
        "rate_per_s": round(rate, 1),
        "seconds": args.seconds,
        "load_seconds": round(seconds, 2),
        "reload": reload,
        **counts,
        "errors": errors,
        "latency_ms_200": latency_ms(answers),
        "by_run": by_run(answers, model["run"]),
        "probe": checked,
        "generator": generator(answers, rate),
        "failures": failures,
    }
    return out, failures
