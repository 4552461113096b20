"""``fanout``: the proposers answer concurrently; an aggregator merges them, or a judge picks the best."""

from __future__ import annotations

from moai.strategies.budget import fit_budget
from moai.strategies.context import RequestContext
from moai.strategies.moa import (
    aggregator_step,
    best_of,
    no_answer,
    ok_answers,
    one_proposer,
    proposer_layers,
    read_answers,
    rescue,
    with_fallbacks,
)
from moai.strategies.plan import Passthrough, Plan, Skip, Step, StepResult
from moai.strategies.prompts import judge_messages, judge_verdict
from moai.strategies.roles import fill, unfilled, with_messages


def plan(ctx: RequestContext) -> Plan:
    mix = ctx.mix
    ctx.decision or ctx.decide()  # the gate's ranking orders rescues and ties
    proposers = fill(ctx, mix.proposers, default_n=3, name="proposer")
    if not proposers:
        raise unfilled(ctx, "the proposers", mix.proposers)
    if mix.judge is None:
        aggregator = fill(ctx, mix.aggregator, name="aggregator")
        if not aggregator:
            raise unfilled(ctx, "the aggregator", mix.aggregator)
        proposers = fit_budget(ctx, proposers, aggregator[0] if aggregator else None, 1)
        if (alone := one_proposer(ctx, mix.proposers, proposers)) is not None:
            return alone
        steps, layers = proposer_layers(ctx, 1, proposers)
        steps.append(aggregator_step(ctx, with_fallbacks(ctx, aggregator), layers))
        return Plan("fanout", steps, "aggregate", rescue=rescue(ctx, layers))

    # a judge that wrote one of the answers would judge its own: another model judges while one is eligible
    judge = fill(ctx, mix.judge, name="judge", avoid=proposers)
    # a failed judge falls back as any one-model step does, to the proposers' models last
    judge = with_fallbacks(ctx, judge, last=proposers) if judge else judge
    proposers = fit_budget(ctx, proposers, judge[0] if judge else None, 1)
    if (alone := one_proposer(ctx, mix.proposers, proposers)) is not None:  # nothing to judge between
        return alone
    steps, (last,) = proposer_layers(ctx, 1, proposers)

    def build_judge(results: dict[str, StepResult]):  # type: ignore[no-untyped-def]
        answers = read_answers(ctx, results, last)  # says who answered with no text
        if len(answers) < 2:  # the pick passes the one answer on: no call, no call row
            return Skip(f"{len(answers)} answer(s) came back: nothing to judge between")
        return with_messages(ctx, judge_messages(ctx.params.messages, [a.text for a in answers]), max_tokens=8,
                             temperature=0.0)

    steps.append(Step("judge", "judge", judge, build_judge, deps=list(last), optional=True))

    def build_final(results: dict[str, StepResult]):  # type: ignore[no-untyped-def]
        answers = ok_answers(results, last)
        if not answers:  # none with text: no pick (not an empty answer), as when every proposer failed
            return Skip(no_answer(results, last))
        pick, note = judge_verdict(results.get("judge"), len(answers))
        if note:  # the judge failed or its verdict names no answer: the gate's favourite answers instead
            ctx.notes.append(note)
            ctx.unvetted = True
        chosen = answers[pick - 1] if pick is not None else best_of(ctx, answers)
        assert chosen is not None
        return Passthrough.of(chosen)

    steps.append(Step("pick", "judge", [], build_final, deps=[*last, "judge"]))
    return Plan("fanout", steps, "pick", rescue=lambda r: best_of(ctx, ok_answers(r, last)))
