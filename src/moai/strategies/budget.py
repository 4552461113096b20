"""Budgets bound the whole plan: estimate cost and latency up front, drop proposers until they fit."""

from __future__ import annotations

from moai.gate.rules import message_text
from moai.strategies.context import RequestContext


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
