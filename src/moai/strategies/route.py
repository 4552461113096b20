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


def apply_session(ctx: RequestContext, ranking: list[str]) -> list[str]:
    """Keep a conversation on its model: a follow-up must not bounce to a weaker one mid-conversation."""
    sticky, policy = ctx.session_model, ctx.mix.sessions
    if sticky is None or policy == "off":
        return ranking
    if sticky not in ranking:
        why = ctx.excluded.get(sticky, "not eligible for this request")
        ctx.notes.append(f"session: previous model {sticky} cannot answer this turn ({why})")
        return ranking
    top = ranking[0]
    q = ctx.decision.quality if ctx.decision else {}
    if policy == "escalate" and top != sticky and q.get(top, 0.0) > q.get(sticky, 0.0) + 0.02:
        ctx.notes.append(f"session: escalated from {sticky} to {top} (expected quality "
                         f"{q.get(sticky, 0):.2f} → {q.get(top, 0):.2f})")
        return ranking
    ctx.notes.append(f"session: sticky — stays on {sticky}" + (f" (the gate alone would pick {top})"
                                                                if top != sticky else ""))
    return [sticky, *[m for m in ranking if m != sticky]]


def plan(ctx: RequestContext) -> Plan:
    decision = ctx.decide()
    models = fallback_order(ctx, apply_session(ctx, decision.ranking))
    return Plan(
        strategy="route",
        steps=[Step(id="answer", role="answer", models=models, build=lambda _r: ctx.params)],
        final="answer",
    )
