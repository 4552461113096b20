"""Stragglers: a proposer still running when its layer's share of the request's time is spent.

With ``settings.request_timeout_s``, one slow proposer would hold its whole layer until the limit runs out, and
the client would get a 504 although the others had answered long before. So each layer of interchangeable
optional steps (``Step.group``) gets a share of the time left when it starts: that time divided by the stages
still to run, its own included (one layer and an aggregator, or a judge: half each; two layers and an aggregator:
a third each; a step that calls no model, such as the judge's pick, takes none). A proposer still running when its
share is spent is left behind (cut short, billed what it was sent, no verdict on the model's health) as soon as
another of its layer has answered; while none has, the layer keeps waiting, since an answer late is better than
none, and the request's own limit rules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping

from moai.strategies.plan import Plan, Step, StepResult


def stages_after(plan: Plan, step: Step) -> int:
    """How many model calls at most still follow ``step`` in a chain of dependents (passthroughs cost none)."""
    dependents: dict[str, list[Step]] = {}
    for s in plan.steps:
        for d in s.deps:
            dependents.setdefault(d, []).append(s)

    memo: dict[str, int] = {}

    def after(sid: str) -> int:  # memoised: a MoA layer depends on every earlier one, so paths multiply
        if sid not in memo:
            memo[sid] = 0  # a cycle (none in a plan) would end here
            memo[sid] = max((after(d.id) + (1 if d.models else 0) for d in dependents.get(sid, [])), default=0)
        return memo[sid]

    return after(step.id)


def share_end(plan: Plan, step: Step) -> float | None:
    """When (``time.monotonic()``) an optional step of a group has had its share of the request's time; None when
    it is not such a step or the request has no limit."""
    if plan.deadline is None or not step.optional or step.group is None:
        return None
    left = max(0.0, plan.deadline - time.monotonic())
    return time.monotonic() + left / (1 + stages_after(plan, step))


async def finished_in_share(call: Awaitable[StepResult], step: Step, plan: Plan,
                            peers: Mapping[str, asyncio.Future[StepResult]], results: Mapping[str, StepResult],
                            until: float) -> StepResult | None:
    """The call's result, or None when it was left behind (cut short: it was still running at ``until`` and
    another step of its group had answered). ``peers``: the tasks of the plan's steps, by id."""
    task = asyncio.ensure_future(call)
    group = [s.id for s in plan.steps if s.group == step.group and s.id != step.id and s.id in peers]

    def answered() -> bool:  # with text: a peer that said nothing (an empty answer, a refusal) leaves nothing to use
        return any(sid in results and results[sid].ok and results[sid].text.strip() for sid in group)

    try:
        await asyncio.wait({task}, timeout=max(0.0, until - time.monotonic()))
        while not task.done() and not answered():
            running = {task, *(peers[sid] for sid in group if not peers[sid].done())}
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the request was cut short: so is the call (which bills what it sent)
        task.cancel()
        await asyncio.wait({task})
        raise
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait({task})  # the call's own handler bills the tries it made
    return None if task.cancelled() else task.result()  # it finished as it was cut: its answer stands
