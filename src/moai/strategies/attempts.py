"""The record of a call's tries, timed from when the model began on each.

A wait for the model (its concurrency limit, a local model busy with another request) is the queue's, not the
model's latency, and a call cut short while it waited is no verdict on the model. These rules shape every try the
executor records, failed, answered or cut short, so they live together here.
"""

from __future__ import annotations

import time
from typing import Any

from moai.providers import ProviderError, ProviderRateLimited, Usage
from moai.providers.base import Queued
from moai.strategies.plan import QUEUE_SHOWN_S, StepResult


def served_from(t0: float, queued: Queued | None) -> float:
    """When the model began on a call sent at ``t0``: the time it waited for the model (its concurrency limit, a
    local model busy with another request) is the queue's, not the model's latency."""
    return t0 + (queued.so_far() if queued is not None else 0.0)


def failed_attempt(model: str, e: ProviderError, t0: float, queued: Queued | None = None) -> dict[str, Any]:
    """A failed try, for the trace and telemetry: its status tells a refused request from a failing model. Its
    start and latency are the model's own; a wait for the model before it is ``queue_ms``."""
    start = served_from(t0, queued)
    attempt: dict[str, Any] = {"model": model, "error": str(e), "status": e.status, "start": start,
                               "latency_ms": max(0.0, time.time() - start) * 1000}
    if start - t0 >= QUEUE_SHOWN_S:  # a real wait; not the instant between sending and the model's gate
        attempt["queue_ms"] = round((start - t0) * 1000, 1)
    code = getattr(e, "code", None)
    if code:
        attempt.update(code=code, param=getattr(e, "param", None))
    if isinstance(e, ProviderRateLimited) and e.retry_after is not None:
        attempt["retry_after_s"] = e.retry_after
    return attempt


def unserved(res: StepResult, model: str, t0: float, queued: Queued) -> None:
    """A call cut short (its time ran out, its client left) while it still waited for its model: the model
    never began on it, so it is no verdict on the model (a busy local model is not a failing one), and no
    prompt was read."""
    res.status, res.end = "cancelled", time.time()
    res.start, res.queue_s, res.usage = res.end, queued.so_far(), Usage()
    res.error = f"cut short after {res.queue_s:.1f}s waiting for {model} (busy): never served"


def cut_when_served(res: StepResult, model: str, t0: float, queued: Queued) -> None:
    """A call cut short (the request's time limit, its client leaving) after its model had begun on it,
    following a wait for the model: its start and latency are the model's own, the wait its ``queue_s``.

    The rule: when the call waited for its model longer than the model then had on it, the cut is the
    queue's doing (most of the request's time went to waiting behind other requests), so it is recorded
    ``cancelled``, no verdict on the model (no error rate, no breaker). A call that waited less was the model
    too slow for the time it had: it stays a failure, timed from when the model began."""
    waited = queued.so_far()
    if res.end or res.status != "failed" or waited < QUEUE_SHOWN_S:
        return  # ended already (cut while waiting to retry), or no wait to speak of
    now = time.time()
    res.start, res.queue_s = t0 + waited, waited
    served = now - res.start
    if waited > served:
        res.status, res.end = "cancelled", now
        res.error = (f"cut short {served:.1f}s into {model}'s answer, after {waited:.1f}s waiting for it "
                     "(busy): no verdict on the model")
