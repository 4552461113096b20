"""Budgets bound the whole plan: estimate cost and latency up front, shrink the plan until it fits.

A mix's ``max_cost_usd`` / ``max_latency_s`` are hard limits on a request, whatever its strategy. MoA and
fan-out drop proposers first (`fit_budget`); any plan still over — a chain, a critique (after fewer rounds),
a MoA down to one proposer — is answered by one model instead (`within_budget`), which the gate picks under
the same limits. Estimates are worst cases: every step runs, each writes its ``max_tokens``, and a later step
reads those answers inside moai's own instructions (aggregator, critic, reviser, judge, chain prompts). Its
prompt is measured on the call the step itself builds from worst-case answers, so the instruction text is
counted as it will be sent and billed. Limits price each step on its first model (what the plan is expected to
call); a key's budget holds the dearest model each step may fall back to (`worst_case_usd`).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from moai.providers.base import ChatParams, estimate_prompt_tokens, message_tokens
from moai.strategies import prompts
from moai.strategies.context import RequestContext, most_written
from moai.strategies.plan import Plan, Step, StepResult

# a fan-out judge answers with one line, 'BEST: n' (as ``fanout`` asks it)
JUDGE_MAX_TOKENS = 8


def prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """A prompt's tokens as the executor counts a call its provider reports no usage for (``message_tokens``)."""
    return message_tokens(messages)


def worst_answer(step_id: str, tokens: int) -> StepResult:
    """A step's answer at its worst for the steps that read it: ``tokens`` tokens of text by the same count,
    cut at the limit (so no cascade accepts it), approving and picking nothing (so every later step runs)."""
    return StepResult(step_id, "estimate", None, "ok", text="0" * (4 * max(tokens, 1)), finish_reason="length")


def _built(ctx: RequestContext, step: Step, results: dict[str, StepResult]) -> ChatParams | None:
    """The call ``step`` makes on ``results``, or None when it cannot be looked at ahead: its build is a
    coroutine (the program check runs the critic's program first) or makes no call on these answers. Whatever
    a build notes is undone: this is a look, not the run."""
    if inspect.iscoroutinefunction(step.build):
        return None
    notes, unvetted = len(ctx.notes), ctx.unvetted
    try:
        built = step.build(results)
    except LookupError:  # it reads a result that worst-case answers do not stand in for
        return None
    finally:
        del ctx.notes[notes:]
        ctx.unvetted = unvetted
    if inspect.iscoroutine(built):
        built.close()
        return None
    return built if isinstance(built, ChatParams) else None


def any_instruction(ctx: RequestContext, answers: list[str]) -> int:
    """The longest prompt any of moai's role instructions makes of the request and ``answers``: the bound for
    a step whose call depends on more than its dependencies' answers (a program's run)."""
    msgs = ctx.params.messages
    answers = answers or [""]
    joined, longest = "\n\n".join(answers), max(answers, key=len)
    printed = f"{-sys.float_info.max:g}"  # the longest number a program's result is written as
    made = [
        msgs,
        prompts.aggregate_messages(msgs, answers),
        prompts.judge_messages(msgs, answers),
        prompts.review_messages(prompts.CRITIC, msgs, joined),
        prompts.review_messages(prompts.GRADE, msgs, joined),
        prompts.revise_messages(msgs, joined, ""),
        prompts.check_messages(msgs),
        # a program's values are its top-level numbers, each assigned in the code: taken as long as the code
        prompts.from_program_messages(msgs, longest, printed, longest),
    ]
    return max(prompt_tokens(prompts.merge_turns(list(m))) for m in made)


def step_calls(ctx: RequestContext, plan: Plan) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """Each model step's worst case, (prompt tokens, completion tokens), and its level (steps of one level run
    together). A step is built on worst-case answers from every step before it, so its prompt holds moai's
    instructions as sent; one that cannot be built is given the longest prompt moai's instructions make."""
    level: dict[str, int] = {}
    ids = {s.id for s in plan.steps}
    pending = [s for s in plan.steps if s.models]
    order: list[Step] = []
    while pending:
        ready = [s for s in pending if all(d in level for d in s.deps if d in ids)]
        if not ready:  # a cycle cannot be estimated; treat the rest as one more level
            ready = pending
        for s in ready:
            level[s.id] = 1 + max((level.get(d, 0) for d in s.deps), default=0)
        order += ready
        pending = [s for s in pending if s not in ready]
    checked = plan.strategy.endswith("critique") and ctx.mix.check == "python"
    results: dict[str, StepResult] = {}
    calls: dict[str, tuple[int, int]] = {}
    for s in order:
        built = _built(ctx, s, dict(results))
        answers = [results[d].text for d in s.deps if d in results]
        if built is None:
            tokens = (any_instruction(ctx, answers), max(ctx.params.max_tokens, ctx.mix.max_tokens))
        else:
            tokens = (estimate_prompt_tokens(built), built.max_tokens)  # its tools too, as a call is billed
            if checked and s.role == "reviser":  # or written from the program, whose run decides
                tokens = (max(tokens[0], any_instruction(ctx, answers)), tokens[1])
        # the longest answer any of its models can write (a local one stops at its context's room)
        tokens = (tokens[0], max(most_written(ctx.config.models[m], tokens[0], tokens[1]) for m in s.models))
        calls[s.id] = tokens
        results[s.id] = worst_answer(s.id, tokens[1])
    return calls, level


def estimate(ctx: RequestContext, plan: Plan) -> tuple[float, float]:
    """(USD, seconds) of any plan if every step runs on its first model and writes its ``max_tokens``, each
    prompt counted as the step builds it (``step_calls``); steps whose dependencies are done run together (local
    ones share the CPU)."""
    cards = ctx.config.models
    calls, level = step_calls(ctx, plan)
    cost = 0.0
    slowest: dict[int, float] = {}
    for s in plan.steps:
        if s.id not in calls:
            continue
        card = cards[s.models[0]]
        prompt, out = calls[s.id]
        out = most_written(card, prompt, out)
        cost += card.cost_usd(prompt, out)
        local = sum(1 for t in plan.steps if t.id in calls and level[t.id] == level[s.id]
                    and cards[t.models[0]].provider == "local")
        seconds = card.expected_latency_s(out) * (max(1.0, local / 2) if card.provider == "local" else 1.0)
        slowest[level[s.id]] = max(slowest.get(level[s.id], 0.0), seconds)
    return cost, sum(slowest.values())


def worst_case_usd(ctx: RequestContext, plan: Plan) -> float:
    """The most the plan can be billed, for a budget's hold: ``estimate``'s calls, each step priced on the dearest
    model it may call. A step tries its ``models`` in order and is answered by one of them (the executor stops at
    the first answer), so a fallback, or a cascade's skipped model behind its last try, may answer in place of a
    cheaper first model: a step costs the max over its models, and the plan the sum over its steps (a cascade's
    tries being steps of their own). A failed try's billed prompt (one timed out once sent) is not held: holding
    every fallback's prompt, for a rare failure, would hold several times what a request nearly always costs."""
    cards = ctx.config.models
    calls, _ = step_calls(ctx, plan)
    def dearest(s: Step) -> float:
        prompt, out = calls[s.id]
        return max(cards[m].cost_usd(prompt, most_written(cards[m], prompt, out)) for m in s.models)

    return sum(dearest(s) for s in plan.steps if s.id in calls)


def plan_estimate(ctx: RequestContext, proposers: list[str], aggregator: str | None, layers: int) -> tuple[
        float, float]:
    """(USD, seconds) for ``layers`` × proposers then one aggregator (a fan-out's judge, when the mix has one),
    estimated on the very steps the plan will have, so that dropping proposers agrees with ``within_budget``."""
    from moai.strategies.moa import aggregator_step, ok_answers, proposer_layers
    from moai.strategies.roles import with_messages

    steps, ids = proposer_layers(ctx, layers, proposers)
    if aggregator is not None and ctx.mix.strategy == "fanout" and ctx.mix.judge is not None:
        def judge(results: dict[str, StepResult]) -> ChatParams:
            answers = [r.text for r in ok_answers(results, ids[-1])]
            return with_messages(ctx, prompts.judge_messages(ctx.params.messages, answers),
                                 max_tokens=JUDGE_MAX_TOKENS, temperature=0.0)

        steps.append(Step("judge", "judge", [aggregator], judge, deps=list(ids[-1])))
    elif aggregator is not None:
        steps.append(aggregator_step(ctx, [aggregator], ids))
    return estimate(ctx, Plan(ctx.mix.strategy, steps, final=steps[-1].id if steps else ""))


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
