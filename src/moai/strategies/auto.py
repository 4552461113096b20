"""``auto``: one model for easy queries, the collaboration mix for hard ones — decided per query.

The gate's predicted difficulty (1 − best expected quality, or the rule-based estimate) is compared with
the mix's threshold; collaboration is also skipped when its expected cost or latency breaks the budget,
so simple queries never pay for MoA.
"""

from __future__ import annotations

from dataclasses import replace

from moai.strategies import builder
from moai.strategies.budget import within_budget
from moai.strategies.context import RequestContext
from moai.strategies.plan import Plan


def difficulty(ctx: RequestContext) -> float:
    d = ctx.decide()
    if d.difficulty is not None:
        return d.difficulty
    return 1.0 - max(d.quality.values()) if d.quality else 0.5


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
    if use_collab:  # the collaboration plan under this mix's limits (smaller, or None when it cannot fit)
        sub = replace(ctx, mix=target.model_copy(update={"constraints": ctx.mix.constraints}))
        build = builder(target.strategy)
        collab = within_budget(sub, build(sub), build)
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
