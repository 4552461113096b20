"""``moa``: layered Mixture-of-Agents (Wang et al. 2024).

Layer 1's proposers answer the query concurrently; each later layer's proposers see the previous layer's
answers (Aggregate-and-Synthesize prompt) and answer again; one aggregator synthesizes the last layer.
A failed proposer only shrinks its layer, and one whose circuit is open is not called while others of its layer
are healthy; a layer whose every proposer failed is passed over (the next layer, or the aggregator, reads the
newest layer that answered), and a failed or empty aggregation falls back to the best proposer answer of that
layer. A proposer that answers with no text (a tool call, a refusal, nothing) gave nothing to build on: it is
left out as a failed one is, saying so, and with no text from any proposer nothing is aggregated (the request
fails as when every proposer failed). A plan left with one proposer (of several asked for) and one layer has it
answer directly: an aggregator would only rewrite the one answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from moai.config import Role
from moai.strategies.budget import fit_budget
from moai.strategies.context import RequestContext
from moai.strategies.plan import Plan, Skip, Step, StepResult
from moai.strategies.prompts import aggregate_messages
from moai.strategies.roles import fill, repeat_temperature, role_size, unfilled, with_messages


def ok_answers(results: dict[str, StepResult], ids: list[str]) -> list[StepResult]:
    """The proposals of ``ids`` that later steps read: those with text (``read_answers`` says who had none)."""
    return [results[i] for i in ids if i in results and results[i].status == "ok" and results[i].text.strip()]


def _held(r: StepResult) -> str:
    """What an answer without text held instead."""
    return "a tool call" if r.tool_calls else "a refusal" if r.refusal else "an empty answer"


def read_answers(ctx: RequestContext, results: dict[str, StepResult], ids: list[str]) -> list[StepResult]:
    """``ok_answers``, saying which proposers answered with no text (a tool call, a refusal, nothing): such an
    answer is none to aggregate or judge, and its trace entry (``error``, the call stays ``ok``: the model did
    answer) and a ``moai.reason`` line say why it was left out, rather than leaving it out unsaid."""
    for i in ids:
        r = results.get(i)
        if r is None or r.status != "ok" or r.text.strip():
            continue
        why = f"answered with no text ({_held(r)}): not an answer to build on, left out"
        r.error = r.error or why
        note = f"{ctx.mix.strategy}: {r.step} ({r.model}) {why}"
        if note not in ctx.notes:  # once, however many steps read it
            ctx.notes.append(note)
    return ok_answers(results, ids)


def no_answer(results: dict[str, StepResult], ids: Sequence[str]) -> str:
    """Why no proposer of ``ids`` gave an answer to build on: each one's outcome (as ``Skip``'s reason, which a
    failed request's message repeats)."""
    told = [f"{i}{f' ({r.model})' if r.model else ''}: {_held(r) if r.status == 'ok' else r.status}" for i in ids
            if (r := results.get(i)) is not None]  # a step skipped before any model was picked names none
    return "no proposer answered with text" + (f" ({'; '.join(told)})" if told else "")


def best_of(ctx: RequestContext, answers: list[StepResult]) -> StepResult | None:
    """The answer of the model the gate ranks highest (the rescue when aggregation fails)."""
    if not answers:
        return None
    order = ctx.decision.ranking if ctx.decision else []
    return min(answers, key=lambda r: order.index(r.model) if r.model in order else len(order))


def newest_answers(results: dict[str, StepResult], layers: Sequence[list[str]]) -> list[StepResult]:
    """The answers of the newest layer that has any: a layer whose every proposer failed leaves the one before."""
    for ids in reversed(layers):
        if answers := ok_answers(results, ids):
            return answers
    return []


def _read(ctx: RequestContext, results: dict[str, StepResult], layers: Sequence[list[str]], reader: str) -> list[str]:
    """The texts ``reader`` builds on (``newest_answers``), saying so when the layer before it gave none, and
    which proposers answered with no text (``read_answers``). Empty when no proposer wrote any: the reader then
    makes no call (its builder's ``Skip``), as when every proposer failed."""
    for ids in layers:
        read_answers(ctx, results, ids)
    answers = newest_answers(results, layers)
    if answers and answers[0].step not in layers[-1]:
        read = next(i for i, ids in enumerate(layers, 1) if answers[0].step in ids)
        textless = any(results[i].status == "ok" for i in layers[-1] if i in results)
        how = "failed or answered with no text" if textless else "failed"
        note = f"moa: every proposer of layer {len(layers)} {how}; {reader} read layer {read}'s answers"
        if note not in ctx.notes:  # once, not once a proposer of the layer
            ctx.notes.append(note)
    return [r.text for r in answers]


def proposer_layers(ctx: RequestContext, layers: int, proposers: list[str], prefix: str = "p") -> tuple[
        list[Step], list[list[str]]]:
    """Steps for ``layers`` layers of proposers; returns the steps and each layer's ids. A layer depends on every
    layer before it: it runs while any of them answered, on the newest answers there are."""
    steps: list[Step] = []
    previous: list[list[str]] = []
    for layer in range(1, layers + 1):
        ids = []
        for i, model in enumerate(proposers):
            sid = f"{prefix}{layer}.{i + 1}"
            temp = repeat_temperature(proposers, i, ctx.params.temperature)

            def build(results: dict[str, StepResult], prev: tuple[list[str], ...] = tuple(previous),
                      t: float | None = temp, reader: str = f"layer {layer}"):  # type: ignore[no-untyped-def]
                if not prev:
                    return with_messages(ctx, ctx.params.messages, temperature=t)
                answers = _read(ctx, results, prev, reader)
                if not answers:
                    return Skip(no_answer(results, [i for ids in prev for i in ids]))
                return with_messages(ctx, aggregate_messages(ctx.params.messages, answers), temperature=t)

            # one layer's proposers stand in for each other: one with an open circuit is left out (executor)
            steps.append(Step(sid, "proposer", [model], build, deps=[d for ids in previous for d in ids],
                              optional=True, group=f"{prefix}{layer}"))
            ids.append(sid)
        previous.append(ids)
    return steps, previous


def aggregator_step(ctx: RequestContext, models: list[str], layers: list[list[str]]) -> Step:
    """The aggregator, on the newest layer that answered: it runs while any proposer of any layer answered with
    text."""
    def build(results: dict[str, StepResult]):  # type: ignore[no-untyped-def]
        answers = _read(ctx, results, layers, "the aggregator")
        if not answers:  # an aggregation of nothing would be made up: no call, and (no answer to rescue with)
            # the request fails as when every proposer failed
            return Skip(no_answer(results, [i for ids in layers for i in ids]))
        return with_messages(ctx, aggregate_messages(ctx.params.messages, answers))

    return Step("aggregate", "aggregator", models, build, deps=[d for ids in layers for d in ids])


def rescue(ctx: RequestContext, layers: list[list[str]]) -> Callable[[dict[str, StepResult]], StepResult | None]:
    """The plan's rescue when aggregation fails: the gate's favourite answer of the newest layer that answered."""
    return lambda results: best_of(ctx, newest_answers(results, layers))


def with_fallbacks(ctx: RequestContext, models: list[str], last: Sequence[str] = ()) -> list[str]:
    """The models a one-model step tries, in order: the role's own (a list's rest stands behind its first, as the
    role was written), then every one of the mix's fallbacks (the gate's ranking with ``fallbacks: gate``), as a
    route walks them, those in ``last`` after the others (a critic falls back to the writer's model only when no
    other answers). Both come from the eligible models only, so a fallback never breaks the step's privacy tier
    or constraints (an auto mix's collaboration plan has its caller's decision, ranked over a wider pool)."""
    from moai.strategies.route import fallback_order

    allowed = {c.name for c in ctx.candidates}
    ranking = [m for m in (ctx.decision or ctx.decide()).ranking if m in allowed]
    fallbacks = [m for m in dict.fromkeys(fallback_order(ctx, [models[0], *[m for m in ranking if m != models[0]]]))
                 if m not in models]
    return [*dict.fromkeys(models), *[m for m in fallbacks if m not in last], *[m for m in fallbacks if m in last]]


def one_proposer(ctx: RequestContext, role: Role | None, proposers: list[str]) -> Plan | None:
    """A plan left with one proposer of the several its role asks for (the request's ``moai.models``, the eligible
    models or the budget left the others out): that proposer answers the request itself, with the step's
    fallbacks, as a route would; None when more proposers remain or the role asked for one. With more layers too:
    a model rewriting its own answer, then aggregating that one answer, cost three calls for about the first one."""
    if len(proposers) != 1 or role_size(role, 3) < 2:
        return None
    ctx.notes.append(f"{ctx.mix.strategy}: only {proposers[0]} is left to propose; it answers directly, with no "
                     "aggregation of one answer")
    step = Step("answer", "answer", with_fallbacks(ctx, proposers), lambda _r: ctx.params)
    return Plan(f"{ctx.mix.strategy}/route", [step], final="answer")


def plan(ctx: RequestContext) -> Plan:
    mix = ctx.mix
    proposers = fill(ctx, mix.proposers, default_n=3, name="proposer")
    if not proposers:
        raise unfilled(ctx, "the proposers", mix.proposers)
    aggregator = fill(ctx, mix.aggregator, name="aggregator")
    if not aggregator:
        raise unfilled(ctx, "the aggregator", mix.aggregator)
    proposers = fit_budget(ctx, proposers, aggregator[0], mix.layers)
    if (alone := one_proposer(ctx, mix.proposers, proposers)) is not None:
        return alone
    steps, layers = proposer_layers(ctx, mix.layers, proposers)
    steps.append(aggregator_step(ctx, with_fallbacks(ctx, aggregator), layers))
    return Plan("moa", steps, final="aggregate", rescue=rescue(ctx, layers))
