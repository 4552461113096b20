"""``auto``: one model for easy queries, the collaboration mix for hard ones — decided per query.

The gate's predicted difficulty (1 − best expected quality, or the rule-based estimate) is compared with
the mix's threshold; collaboration is also skipped when its expected cost or latency breaks the budget,
so simple queries never pay for MoA.

The collaboration mix plans from its own pool under the stricter of each limit of the two mixes
(``collaboration``): a hard query is answered as that mix would answer it, never with a model or privacy
tier it does not allow. The sensitive-data policy of the whole request is the strictest along the chain, so
an easy query never sends out in the clear what a hard one would have kept local (``Mixture.prepare``).
"""

from __future__ import annotations

from dataclasses import replace

from moai.catalog import PRIVACY_RANK, ModelCard
from moai.config import Config, Constraints, Mix
from moai.strategies import builder
from moai.strategies.budget import within_budget
from moai.strategies.context import NoEligibleModel, RequestContext
from moai.strategies.plan import Plan
from moai.strategies.privacy_guard import stricter


def difficulty(ctx: RequestContext) -> float:
    d = ctx.decide()
    if d.difficulty is not None:
        return d.difficulty
    return 1.0 - max(d.quality.values()) if d.quality else 0.5


def _tighter(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def merged_constraints(outer: Constraints, inner: Constraints) -> Constraints:
    """Each limit of two mixes at its stricter: policy, privacy tier, cost, latency, and the models both allow."""
    tiers = [t for t in (outer.max_privacy, inner.max_privacy) if t is not None]
    allowed = [a for a in (outer.allowed_models, inner.allowed_models) if a is not None]
    return inner.model_copy(update={
        "sensitive_data": stricter(outer.sensitive_data, inner.sensitive_data),
        "max_privacy": min(tiers, key=lambda t: PRIVACY_RANK[t]) if tiers else None,
        "max_cost_usd": _tighter(outer.max_cost_usd, inner.max_cost_usd),
        "max_latency_s": _tighter(outer.max_latency_s, inner.max_latency_s),
        "allowed_models": [m for m in allowed[0] if all(m in a for a in allowed)] if allowed else None,
    })


def collaboration(config: Config, mix: Mix) -> list[tuple[str, Mix]]:
    """The mixes an ``auto`` mix may hand a hard query to, in order (an ``auto`` target hands on again), each with
    the limits of every mix before it merged in (config check refuses loops)."""
    chain: list[tuple[str, Mix]] = []
    current = mix
    while current.strategy == "auto" and current.collaborate is not None:
        name = current.collaborate
        target = config.mixes[name]
        current = target.model_copy(update={"constraints": merged_constraints(current.constraints,
                                                                               target.constraints)})
        chain.append((name, current))
    return chain


def plan(ctx: RequestContext) -> Plan:
    from moai.strategies import route

    level = difficulty(ctx)
    target_name = ctx.mix.collaborate
    assert target_name is not None
    target = ctx.config.mixes[target_name]
    use_collab = level >= ctx.mix.difficulty_threshold
    reason = f"auto: difficulty {level:.2f} {'≥' if use_collab else '<'} threshold {ctx.mix.difficulty_threshold}"
    if use_collab and ctx.params.tools and target.strategy in ("moa", "fanout", "chain", "critique"):
        use_collab = False
        reason += f"; the request carries tools, which {target.strategy} cannot return"
    collab: Plan | None = None
    if use_collab:
        merged, cards, excluded = _collaborators(ctx, target_name, target)
        if not cards:
            use_collab = False
            reason += f"; no model of {target_name} may take this request"
        else:  # the collaboration plan under both mixes' limits (smaller, or None when it cannot fit)
            sub = replace(ctx, mix=merged, candidates=cards, excluded=excluded)
            build = builder(target.strategy)
            try:
                collab = within_budget(sub, build(sub), build)
            except NoEligibleModel as e:  # one of its roles has no model this request may use
                use_collab = False
                reason += f"; {target_name} cannot run: {e}"
            else:
                if collab is None:
                    use_collab = False
                    reason += f"; {target_name} would exceed the budget"
    ctx.notes.append(reason + (f" → {target_name} ({target.strategy})" if use_collab else " → single model"))
    if collab is None:
        p = route.plan(ctx)
        p.strategy = "auto/route"
        return p
    collab.strategy = f"auto/{collab.strategy}"
    return collab


def _collaborators(ctx: RequestContext, name: str, target: Mix) -> tuple[Mix, list[ModelCard], dict[str, str]]:
    """(the target with both mixes' limits, its eligible models, why the others are out): as ``Mixture.prepare``
    found them, or else this request's eligible models that the target's pool holds."""
    if name in ctx.collaborators:
        return ctx.collaborators[name]
    merged = target.model_copy(update={"constraints": merged_constraints(ctx.mix.constraints, target.constraints)})
    pool = {c.name for c in ctx.config.pool(merged)}
    excluded = {**ctx.excluded, **{c.name: f"not in mix {name!r}" for c in ctx.candidates if c.name not in pool}}
    return merged, [c for c in ctx.candidates if c.name in pool], excluded
