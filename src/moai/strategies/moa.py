"""``moa``: layered Mixture-of-Agents (Wang et al. 2024).

Layer 1's proposers answer the query concurrently; each later layer's proposers see the previous layer's
answers (Aggregate-and-Synthesize prompt) and answer again; one aggregator synthesizes the last layer.
A failed proposer only shrinks its layer, and one whose circuit is open is not called while others of its layer
are healthy; a failed or empty aggregation falls back to the best proposer answer.
"""

from __future__ import annotations

from moai.strategies.budget import fit_budget
from moai.strategies.context import RequestContext
from moai.strategies.plan import Plan, Step, StepResult
from moai.strategies.prompts import aggregate_messages
from moai.strategies.roles import fill, repeat_temperature, unfilled, with_messages


def ok_answers(results: dict[str, StepResult], ids: list[str]) -> list[StepResult]:
    return [results[i] for i in ids if i in results and results[i].status == "ok" and results[i].text.strip()]


def best_of(ctx: RequestContext, answers: list[StepResult]) -> StepResult | None:
    """The answer of the model the gate ranks highest (the rescue when aggregation fails)."""
    if not answers:
        return None
    order = ctx.decision.ranking if ctx.decision else []
    return min(answers, key=lambda r: order.index(r.model) if r.model in order else len(order))


def proposer_layers(ctx: RequestContext, layers: int, proposers: list[str], prefix: str = "p") -> tuple[
        list[Step], list[str]]:
    """Steps for ``layers`` layers of proposers; returns the steps and the last layer's ids."""
    steps: list[Step] = []
    previous: list[str] = []
    for layer in range(1, layers + 1):
        ids = []
        for i, model in enumerate(proposers):
            sid = f"{prefix}{layer}.{i + 1}"
            temp = repeat_temperature(proposers, i, ctx.params.temperature)

            def build(results: dict[str, StepResult], prev: list[str] = previous, t: float | None = temp):  # type: ignore[no-untyped-def]
                if not prev:
                    return with_messages(ctx, ctx.params.messages, temperature=t)
                answers = [r.text for r in ok_answers(results, prev)]
                return with_messages(ctx, aggregate_messages(ctx.params.messages, answers), temperature=t)

            # one layer's proposers stand in for each other: one with an open circuit is left out (executor)
            steps.append(Step(sid, "proposer", [model], build, deps=list(previous), optional=True,
                              group=f"{prefix}{layer}"))
            ids.append(sid)
        previous = ids
    return steps, previous


def aggregator_step(ctx: RequestContext, models: list[str], last: list[str]) -> Step:
    def build(results: dict[str, StepResult]):  # type: ignore[no-untyped-def]
        answers = [r.text for r in ok_answers(results, last)]
        return with_messages(ctx, aggregate_messages(ctx.params.messages, answers))

    return Step("aggregate", "aggregator", models, build, deps=list(last))


def with_fallbacks(ctx: RequestContext, models: list[str]) -> list[str]:
    """The models a one-model step tries, in order: the role's own (a list's rest stands behind its first, as the
    role was written), then every one of the mix's fallbacks (the gate's ranking with ``fallbacks: gate``), as a
    route walks them. Both come from the eligible models only, so a fallback never breaks the step's privacy tier
    or constraints (an auto mix's collaboration plan has its caller's decision, ranked over a wider pool)."""
    from moai.strategies.route import fallback_order

    allowed = {c.name for c in ctx.candidates}
    ranking = [m for m in (ctx.decision or ctx.decide()).ranking if m in allowed]
    fallbacks = fallback_order(ctx, [models[0], *[m for m in ranking if m != models[0]]])
    return list(dict.fromkeys([*models, *fallbacks]))


def plan(ctx: RequestContext) -> Plan:
    mix = ctx.mix
    proposers = fill(ctx, mix.proposers, default_n=3, name="proposer")
    if not proposers:
        raise unfilled(ctx, "the proposers", mix.proposers)
    aggregator = fill(ctx, mix.aggregator, name="aggregator")
    if not aggregator:
        raise unfilled(ctx, "the aggregator", mix.aggregator)
    proposers = fit_budget(ctx, proposers, aggregator[0], mix.layers)
    steps, last = proposer_layers(ctx, mix.layers, proposers)
    steps.append(aggregator_step(ctx, with_fallbacks(ctx, aggregator), last))
    return Plan("moa", steps, final="aggregate", rescue=lambda r: best_of(ctx, ok_answers(r, last)))
