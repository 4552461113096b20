"""Budgets bound the whole plan: estimate cost and latency up front, shrink the plan until it fits.

A mix's ``max_cost_usd`` / ``max_latency_s`` are hard limits on a request, whatever its strategy. MoA and
fan-out drop proposers first (`fit_budget`); any plan still over — a chain, a critique (after fewer rounds),
a MoA down to one proposer — is answered by one model instead (`within_budget`), which the gate picks under
the same limits. Estimates are worst cases: every step runs, each writes ``max_tokens``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from moai.gate.rules import message_text
from moai.strategies.context import RequestContext
from moai.strategies.plan import Plan


def plan_estimate(ctx: RequestContext, proposers: list[str], aggregator: str | None, layers: int) -> tuple[
        float, float]:
    """(USD, seconds) for ``layers`` × proposers then one aggregator; concurrent local models share the CPU."""
    cards = ctx.config.models
    prompt = len(message_text(ctx.params.messages)) // 4 + 1
    out = ctx.params.max_tokens
    cost = latency = 0.0
    for layer in range(layers):
        extra = 0 if layer == 0 else out * len(proposers)
        cost += sum(cards[m].cost_usd(prompt + extra, out) for m in proposers)
        local = [m for m in proposers if cards[m].provider == "local"]
        slowest = max(cards[m].expected_latency_s(out) for m in proposers)
        latency += slowest * max(1.0, len(local) / 2)
    if aggregator is not None:
        cost += cards[aggregator].cost_usd(prompt + out * len(proposers), out)
        latency += cards[aggregator].expected_latency_s(out)
    return cost, latency


def fit_budget(ctx: RequestContext, proposers: list[str], aggregator: str | None, layers: int) -> list[str]:
    """Drop the gate's lowest-ranked proposers until the plan's expected cost and latency fit the mix."""
    c = ctx.mix.constraints
    kept = list(proposers)
    while len(kept) > 1:
        cost, latency = plan_estimate(ctx, kept, aggregator, layers)
        over_cost = c.max_cost_usd is not None and cost > c.max_cost_usd
        over_time = c.max_latency_s is not None and latency > c.max_latency_s
        if not (over_cost or over_time):
            break
        dropped = kept.pop()
        ctx.notes.append(f"budget: dropped proposer {dropped} (expected ${cost:.5f} / {latency:.1f}s over the limit)")
    return kept


def estimate(ctx: RequestContext, plan: Plan) -> tuple[float, float]:
    """(USD, seconds) of any plan if every step runs on its first model: a step reads the request plus each
    answer it depends on; steps whose dependencies are done run together (local ones share the CPU)."""
    cards = ctx.config.models
    prompt = len(message_text(ctx.params.messages)) // 4 + 1
    out = ctx.params.max_tokens
    level: dict[str, int] = {}
    ids = {s.id for s in plan.steps}
    pending = [s for s in plan.steps if s.models]
    while pending:
        ready = [s for s in pending if all(d in level for d in s.deps if d in ids)]
        if not ready:  # a cycle cannot be estimated; treat the rest as one more level
            ready = pending
        for s in ready:
            level[s.id] = 1 + max((level.get(d, 0) for d in s.deps), default=0)
        pending = [s for s in pending if s not in ready]
    cost = 0.0
    slowest: dict[int, float] = {}
    for s in plan.steps:
        if not s.models:
            continue
        card = cards[s.models[0]]
        cost += card.cost_usd(prompt + out * len(s.deps), out)
        local = sum(1 for t in plan.steps if t.models and level.get(t.id) == level[s.id]
                    and cards[t.models[0]].provider == "local")
        seconds = card.expected_latency_s(out) * (max(1.0, local / 2) if card.provider == "local" else 1.0)
        slowest[level[s.id]] = max(slowest.get(level[s.id], 0.0), seconds)
    return cost, sum(slowest.values())


def over_budget(ctx: RequestContext, plan: Plan) -> str | None:
    """Why the plan breaks the mix's limits (its worst case), or None when it fits."""
    c = ctx.mix.constraints
    if c.max_cost_usd is None and c.max_latency_s is None:
        return None
    cost, latency = estimate(ctx, plan)
    broken = []
    if c.max_cost_usd is not None and cost > c.max_cost_usd:
        broken.append(f"${cost:.5f} > ${c.max_cost_usd:g}")
    if c.max_latency_s is not None and latency > c.max_latency_s:
        broken.append(f"{latency:.1f}s > {c.max_latency_s:g}s")
    return ", ".join(broken) or None


def within_budget(ctx: RequestContext, plan: Plan, rebuild: Callable[[RequestContext], Plan]) -> Plan | None:
    """The plan, or a smaller one of the same strategy (fewer critique rounds), that fits the mix's limits;
    None when only one model can answer within them (the caller routes)."""
    if len(plan.steps) <= 1 or plan.strategy.endswith("cascade"):
        return plan  # one model: the gate applied the limits already; a cascade stops early by design
    why = over_budget(ctx, plan)
    if why is None:
        return plan
    rounds = ctx.mix.rounds if plan.strategy.endswith("critique") and ctx.mix.check != "python" else 0
    for r in range(rounds - 1, 0, -1):
        smaller_ctx = replace(ctx, mix=ctx.mix.model_copy(update={"rounds": r}))
        smaller = rebuild(smaller_ctx)
        if over_budget(smaller_ctx, smaller) is None:
            ctx.notes.append(f"budget: critique cut to {r} round(s) ({rounds} would cost {why})")
            return smaller
    ctx.notes.append(f"budget: {plan.strategy} would break the mix's limits ({why}); answered by one model")
    return None


def one_model(ctx: RequestContext, strategy: str) -> Plan:
    """The request answered by the gate's pick alone, when the ``strategy`` plan cannot fit the limits."""
    from moai.strategies import route

    plan = route.plan(ctx)
    plan.strategy = f"{strategy}/route"
    return plan
