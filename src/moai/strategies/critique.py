"""``critique``: draft → critic → revise, for N rounds, stopping as soon as the critic approves.

With ``check: python`` the critic writes a program that recomputes a numeric answer instead of reviewing
the draft; the program runs sandboxed, the same number approves the draft, a different one has the answer
rewritten from the program, and a draft no program applies to is reviewed in words.

Writer and critic fall back as the mix says (the gate's next model with ``fallbacks: gate``), the critic to the
writer's models last; a final revision that fails or comes back empty leaves the latest draft as the answer.
"""

from __future__ import annotations

from collections.abc import Callable

from moai.strategies import program_check
from moai.strategies.context import RequestContext
from moai.strategies.moa import with_fallbacks
from moai.strategies.plan import Built, Passthrough, Plan, Skip, Step, StepResult
from moai.strategies.prompts import (
    CRITIC,
    approved,
    check_messages,
    critic_note,
    from_program_messages,
    review_messages,
    revise_messages,
)
from moai.strategies.roles import fill, unfilled, with_messages


def latest_answer(results: dict[str, StepResult], ids: list[str]) -> StepResult:
    """The newest draft or revision that produced text."""
    for sid in reversed(ids):
        r = results.get(sid)
        if r is not None and r.ok and r.text.strip():
            return r
    raise LookupError("no draft")


def rescue_from(ids: list[str]) -> Callable[[dict[str, StepResult]], StepResult | None]:
    """The plan's rescue: the newest of ``ids`` that produced text, if any did."""
    def rescue(results: dict[str, StepResult]) -> StepResult | None:
        try:
            return latest_answer(results, ids)
        except LookupError:
            return None
    return rescue


def approved_before(results: dict[str, StepResult], n: int) -> int | None:
    """The round before round ``n`` whose critic approved the answer, if one did."""
    for k in range(1, n):
        verdict = results.get(f"critique{k}")
        if verdict is not None and verdict.status == "ok" and approved(verdict.text):
            return k
    return None


def plan(ctx: RequestContext) -> Plan:
    writer = fill(ctx, ctx.mix.writer, name="writer")
    if not writer:
        raise unfilled(ctx, "the writer", ctx.mix.writer)
    # a critic of its own draft is no second opinion: a picked critic is another model while one is eligible, and
    # a failed one falls back to the writer's models last
    critic = fill(ctx, ctx.mix.critic, name="critic", avoid=writer)
    if not critic:
        raise unfilled(ctx, "the critic", ctx.mix.critic)
    writer, critic = with_fallbacks(ctx, writer), with_fallbacks(ctx, critic, last=writer)
    if ctx.mix.check == "python":
        return checked_plan(ctx, writer, critic)
    steps = [Step("draft", "drafter", writer, lambda _r: ctx.params)]
    answers = ["draft"]
    rounds = ctx.mix.rounds
    for n in range(1, rounds + 1):
        cid, rid = f"critique{n}", f"revise{n}"
        seen = list(answers)

        def build_critic(results: dict[str, StepResult], seen: list[str] = seen, n: int = n):  # type: ignore[no-untyped-def]
            if approved_before(results, n) is not None:
                return None  # an earlier round approved: nothing left to review
            answer = latest_answer(results, seen)
            return with_messages(ctx, review_messages(CRITIC, ctx.params.messages, answer.text), temperature=0.0)

        def build_revise(results: dict[str, StepResult], seen: list[str] = seen, cid: str = cid, n: int = n):  # type: ignore[no-untyped-def]
            answer = latest_answer(results, seen)
            verdict = results.get(cid)
            if note := critic_note(verdict):  # a failed critic passes the draft on: say so
                ctx.notes.append(note)
                ctx.unvetted = True
            if verdict is None or verdict.status != "ok" or approved(verdict.text):
                if n == rounds:
                    return Passthrough.of(answer)
                k = approved_before(results, n + 1)
                return Skip(f"the critic approved the draft in round {k}: nothing left to review" if k else
                            f"round {n}'s critic gave no review")
            return with_messages(ctx, revise_messages(ctx.params.messages, answer.text, verdict.text))

        steps.append(Step(cid, "critic", critic, build_critic, deps=[answers[-1]], optional=True))
        steps.append(Step(rid, "reviser", writer, build_revise, deps=[cid, *seen], optional=n < rounds))
        answers.append(rid)
    return Plan("critique", steps, final=answers[-1], rescue=rescue_from(answers[:-1]))


def checked_plan(ctx: RequestContext, writer: list[str], critic: list[str]) -> Plan:
    """draft → the critic's program → approve, rewrite from the program, or (no program applies) review in
    words, then revise. See ``program_check``."""
    verdicts: list[program_check.Verdict] = []

    def build_check(results: dict[str, StepResult]) -> Built:
        if not program_check.has_number(results["draft"].text):
            return None  # nothing a program could confirm
        return with_messages(ctx, check_messages(ctx.params.messages), temperature=0.0, stop=None,
                             response_format=None)

    async def build_review(results: dict[str, StepResult]) -> Built:
        program = results.get("check")
        if program is not None and program.status == "ok":
            verdicts.append(program_check.verdict(results["draft"].text,
                                                  await program_check.run_program(program.text)))
        else:
            why = "the draft gives no number" if program is None or program.status == "skipped" else "it failed"
            verdicts.append(program_check.Verdict("review", f"program check skipped ({why}): reviewed in words"))
        plan.notes.append(verdicts[0].note)
        if verdicts[0].action != "review":
            return None
        return with_messages(ctx, review_messages(CRITIC, ctx.params.messages, results["draft"].text),
                             temperature=0.0)

    def build_revise(results: dict[str, StepResult]) -> Built:
        draft, review = results["draft"], results.get("critique1")
        if note := critic_note(review):
            ctx.notes.append(note)
            ctx.unvetted = True
        if verdicts and verdicts[0].action == "rewrite" and verdicts[0].program is not None:
            p = verdicts[0].program
            return with_messages(ctx, from_program_messages(ctx.params.messages, p.code, f"{p.printed:g}",
                                                            program_check.worked_values(p)))
        if review is not None and review.status == "ok" and not approved(review.text):
            return with_messages(ctx, revise_messages(ctx.params.messages, draft.text, review.text))
        return Passthrough.of(draft)

    steps = [
        Step("draft", "drafter", writer, lambda _r: ctx.params),
        Step("check", "critic", critic, build_check, deps=["draft"], optional=True),
        Step("critique1", "critic", critic, build_review, deps=["check", "draft"], optional=True),
        Step("revise1", "reviser", writer, build_revise, deps=["critique1", "check", "draft"]),
    ]
    plan = Plan("critique", steps, final="revise1", rescue=rescue_from(["draft"]))
    return plan
