"""``critique``: draft → critic → revise, for N rounds, stopping as soon as the critic approves."""

from __future__ import annotations

from moai.strategies.context import RequestContext
from moai.strategies.plan import Passthrough, Plan, Step, StepResult
from moai.strategies.prompts import CRITIC, approved, review_messages, revise_messages
from moai.strategies.roles import fill, with_messages


def latest_answer(results: dict[str, StepResult], ids: list[str]) -> StepResult:
    """The newest draft or revision that produced text."""
    for sid in reversed(ids):
        r = results.get(sid)
        if r is not None and r.ok and r.text.strip():
            return r
    raise LookupError("no draft")


def plan(ctx: RequestContext) -> Plan:
    writer = fill(ctx, ctx.mix.writer)
    critic = fill(ctx, ctx.mix.critic)
    if not writer or not critic:
        raise ValueError(f"mix {ctx.mix_name!r}: no eligible writer/critic")
    steps = [Step("draft", "drafter", writer, lambda _r: ctx.params)]
    answers = ["draft"]
    rounds = ctx.mix.rounds
    for n in range(1, rounds + 1):
        cid, rid = f"critique{n}", f"revise{n}"
        seen = list(answers)

        def build_critic(results: dict[str, StepResult], seen: list[str] = seen, n: int = n):  # type: ignore[no-untyped-def]
            if any(results.get(f"critique{k}") and approved(results[f"critique{k}"].text) for k in range(1, n)):
                return None  # an earlier round approved: nothing left to review
            answer = latest_answer(results, seen)
            return with_messages(ctx, review_messages(CRITIC, ctx.params.messages, answer.text), temperature=0.0)

        def build_revise(results: dict[str, StepResult], seen: list[str] = seen, cid: str = cid, n: int = n):  # type: ignore[no-untyped-def]
            answer = latest_answer(results, seen)
            verdict = results.get(cid)
            if verdict is None or verdict.status != "ok" or approved(verdict.text):
                final = n == rounds
                return Passthrough(answer.text, answer.step) if final else None
            return with_messages(ctx, revise_messages(ctx.params.messages, answer.text, verdict.text))

        steps.append(Step(cid, "critic", critic, build_critic, deps=[answers[-1]], optional=True))
        steps.append(Step(rid, "reviser", writer, build_revise, deps=[cid, *seen], optional=n < rounds))
        answers.append(rid)
    return Plan("critique", steps, final=answers[-1],
                rescue=lambda r: latest_answer(r, answers[:-1]) if any(
                    r.get(a) and r[a].ok for a in answers[:-1]) else None)
