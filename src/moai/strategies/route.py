"""``route``: one model answers, the one the gate ranks first; the rest of the ranking are fallbacks."""

from __future__ import annotations

from collections.abc import Sequence

from moai.strategies.context import RequestContext
from moai.strategies.plan import Plan, Step, StepResult

STAYS = "session: sticky — stays on "
ESCALATED = "session: escalated from "


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


def strength(ctx: RequestContext, names: Sequence[str]) -> tuple[dict[str, float], str] | None:
    """How strong each model is in general, whatever the query, and what that was read from.

    Escalation compares this, not the expected quality for the turn at hand: on an easy follow-up a small
    model may score as high as the large one, and moving there is the bounce the session must not make.
    Best evidence first: the chooser's measured prior (the gate's mean quality on the training records that
    scored both models), else the cards' sizes (which the rule-based chooser ranks by), else their prices
    (the dearer of two priced models taken as the stronger). None when nothing compares them.
    """
    prior = getattr(ctx.chooser, "prior_quality", None)
    if callable(prior):
        known = prior(names)
        if all(n in known for n in names):
            return {n: known[n] for n in names}, "mean quality on the gate's training records"
    cards = {c.name: c for c in ctx.candidates}
    sizes = {n: cards[n].params_b if n in cards else None for n in names}
    if all(v is not None for v in sizes.values()):
        return {n: float(v or 0.0) for n, v in sizes.items()}, "size (params_b)"
    prices = {n: cards[n].price.input_per_mtok + cards[n].price.output_per_mtok if n in cards else 0.0
              for n in names}
    if all(v > 0 for v in prices.values()):
        return prices, "price per token"
    return None


def apply_session(ctx: RequestContext, ranking: list[str]) -> list[str]:
    """Keep a conversation on its model: a follow-up must not bounce to a weaker one mid-conversation.

    ``sessions: escalate`` moves on only to a model that is stronger in general (``strength``) and that the
    gate expects to do better on this turn; anything else stays on the session's model."""
    sticky, policy = ctx.session_model, ctx.mix.sessions
    if sticky is None or policy == "off":
        return ranking
    if sticky not in ranking:
        why = ctx.excluded.get(sticky, "not eligible for this request")
        ctx.notes.append(f"session: previous model {sticky} cannot answer this turn ({why})")
        return ranking
    top = ranking[0]
    ctx.session_pick = sticky
    if top == sticky:
        ctx.notes.append(f"{STAYS}{sticky}")
        return ranking
    why = f"the gate alone would pick {top}"
    if policy == "escalate":
        q = ctx.decision.quality if ctx.decision else {}
        known = strength(ctx, [sticky, top])
        if known is None:
            why += f", which cannot be shown stronger than {sticky} (no gate prior, size or price for both)"
        else:
            s, basis = known
            if s[top] <= s[sticky]:
                why += f", which is not stronger than {sticky} by {basis}: {s[top]:.3g} vs {s[sticky]:.3g}"
            elif q.get(top, 0.0) <= q.get(sticky, 0.0) + 0.02:
                why += f", stronger by {basis} but not expected to do better on this turn"
            else:
                ctx.session_pick = top
                ctx.notes.append(f"{ESCALATED}{sticky} to {top} (stronger by {basis}: "
                                 f"{s[sticky]:.3g} → {s[top]:.3g}; expected quality {q.get(sticky, 0):.2f} → "
                                 f"{q.get(top, 0):.2f})")
                return ranking
    ctx.notes.append(f"{STAYS}{sticky} ({why})")
    return [sticky, *[m for m in ranking if m != sticky]]


def session_notes(ctx: RequestContext, answered: str | None, results: Sequence[StepResult]) -> list[str]:
    """``ctx.notes`` as the answer bears them out. The session's note is written when the plan is made; when
    another model than the one it put first answered (that one's circuit was open, it failed, or the answer
    came from the cache), the note says what happened instead of claiming a model the conversation left."""
    pick = ctx.session_pick
    if pick is None or answered is None or answered == pick:
        return list(ctx.notes)
    if any(r.status == "cached" for r in results):
        how = f"a cached answer by {answered} was served"
    elif any(pick == r.model or any(a.get("model") == pick for a in r.attempts) for r in results):
        how = f"{pick} failed this turn (see the trace) and {answered} answered"
    else:
        how = f"{pick} was passed over (circuit open or rate limited) and {answered} answered"

    def amend(note: str) -> str:
        if note.startswith(STAYS):
            return f"session: sticky — meant to stay on {note.removeprefix(STAYS)}, but {how}"
        if note.startswith(ESCALATED):
            return f"session: meant to escalate from {note.removeprefix(ESCALATED)}, but {how}"
        return note

    return [amend(n) for n in ctx.notes]


COLLABORATIONS = ("moa", "fanout", "chain", "critique")  # plans whose roles, not the gate's pick, answer


def gate_reasons(ctx: RequestContext, strategy: str, answered: str | None,
                 results: Sequence[StepResult]) -> list[str]:
    """The gate's reasons as the answer bears them out. Every chooser gives its pick a line of its own that
    opens with the model's name ("m: utility …" from the learned gate's policy, "m: highest utility …" from the
    rule-based one), after a line that names the chooser ("gate default", "rule-based: …"). That line reads as
    the model behind a route's answer; a collaboration's roles are filled by their own picks, so when the gate's
    pick took no part (no step called it), its line says so instead."""
    d, kind = ctx.decision, strategy.rsplit("/", 1)[-1]  # an auto mix's collaboration is "auto/moa"
    reasons = list(d.reasons) if d else []
    if d is None or not d.model or not reasons or kind not in COLLABORATIONS:
        return reasons
    called = {r.model for r in results if r.status != "skipped"} | {a.get("model") for r in results
                                                                   for a in r.attempts}
    if d.model in called:
        return reasons
    pick = f"{d.model}: "
    return [f"gate: ranked {d.model} first ({line.removeprefix(pick)}), but it took no part in this {kind}"
            + (f"; {answered} answered" if answered else "") if line.startswith(pick) else line
            for line in reasons]


def plan(ctx: RequestContext) -> Plan:
    decision = ctx.decide()
    models = fallback_order(ctx, apply_session(ctx, decision.ranking))
    return Plan(
        strategy="route",
        steps=[Step(id="answer", role="answer", models=models, build=lambda _r: ctx.params)],
        final="answer",
    )
