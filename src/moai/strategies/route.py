"""``route``: one model answers, the one the gate ranks first; the rest of the ranking are fallbacks."""

from __future__ import annotations

from moai.strategies.context import RequestContext
from moai.strategies.plan import Plan, Step


def fallback_order(ctx: RequestContext, ranking: list[str]) -> list[str]:
    """The mix's explicit fallbacks after the choice, or the gate's ranking ("gate")."""
    allowed = {c.name for c in ctx.candidates}
    first, rest = ranking[0], ranking[1:]
    fb = ctx.mix.fallbacks
    if fb is None:
        return [first]
    if fb == "gate":
        return [first, *rest]
    return [first, *[m for m in fb if m in allowed and m != first]]


def plan(ctx: RequestContext) -> Plan:
    decision = ctx.decide()
    models = fallback_order(ctx, decision.ranking)
    return Plan(
        strategy="route",
        steps=[Step(id="answer", role="answer", models=models, build=lambda _r: ctx.params)],
        final="answer",
    )
