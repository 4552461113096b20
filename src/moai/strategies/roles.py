"""Filling roles: a pinned model name, a list, or ``pick:`` — the gate chooses under the mix's constraints.

``pick: N`` takes the gate's N best distinct models; ``best``/``cheapest`` pick one; ``diverse`` picks as many as
the role plays by default (a MoA's or fan-out's three proposers, one model for any other role), one per model
family first. Repeating a model only makes sense with sampling, so repeats are refused unless the role says
``allow_repeats``. A picked role may be asked to prefer models other than some (a critic other than the writer,
a judge other than the proposers); a pinned one is played as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moai.catalog import PRIVACY_RANK, ModelCard
from moai.config import Pick, Role
from moai.providers.base import ChatParams
from moai.strategies.context import NoEligibleModel, RequestContext, no_trusted_model
from moai.strategies.prompts import ReviewPrompt, merge_turns


def expected_cost(card: ModelCard, prompt_tokens: int, output_tokens: int) -> float:
    """USD for priced models; for free (local) ones a tiny size-proportional stand-in keeps an order."""
    usd = card.cost_usd(prompt_tokens, output_tokens)
    return usd if usd > 0 else (card.params_b or 1.0) * 1e-9 * output_tokens


def fill(ctx: RequestContext, role: Role | None, default_n: int = 1, name: str | None = None,
         avoid: Sequence[str] = ()) -> list[str]:
    """The models that play a role, best first. The gate picks the role ``name`` among the models whose card lists
    it, or lists no roles (when none may, among all): models named in the role play it as named. A picked role
    takes models other than ``avoid`` while any is eligible: a model that reviews or judges its own answer is no
    second opinion."""
    eligible = {c.name: c for c in ctx.candidates}
    explicit = role is not None  # a role left out says nothing of how many models it wants
    if role is None:
        role = Pick(pick=default_n if default_n > 1 else "best")
    if isinstance(role, str | list):
        pinned = [role] if isinstance(role, str) else role
        kept = [m for m in pinned if m in eligible]
        dropped = [m for m in pinned if m not in eligible]
        if dropped:
            why = "; ".join(f"{m}: {ctx.excluded.get(m, 'not eligible')}" for m in dropped)
            ctx.notes.append(f"role: pinned {', '.join(dropped)} not eligible ({why})")
        if kept or not dropped:
            return kept
        role = Pick(pick=len(pinned) if len(pinned) > 1 else "best")  # let the gate stand in
        chosen = fill(ctx, role, name=name, avoid=avoid)
        ctx.notes.append(f"role: the gate chose {', '.join(chosen)} instead")
        return chosen
    pool = [eligible[m] for m in (role.among or eligible) if m in eligible]
    if not pool:
        return []
    if name is not None and role.among is None:
        fit = [c for c in pool if _plays(c, name)]
        if fit and len(fit) < len(pool):
            ctx.notes.append(f"role: {name} picked among {', '.join(c.name for c in fit)} (their cards list it)")
        pool = fit or pool
    ranking = ctx.decide(pool).ranking
    n = role_size(role, default_n)
    if role.pick == "cheapest":  # ties keep the gate's order
        order = sorted(ranking, key=lambda m: expected_cost(eligible[m], 500, 300))
    elif role.pick == "diverse":
        order = _diverse(ranking, eligible)
    else:
        order = list(ranking)
    preferred = [m for m in order if m not in avoid]
    order = preferred + [m for m in order if m in avoid]
    chosen = order[:n]
    if len(chosen) < n and role.allow_repeats:
        again = preferred or order
        chosen += [again[i % len(again)] for i in range(n - len(chosen))]
    label = name or "a role"
    if len(chosen) < n and explicit:
        ctx.notes.append(f"role: {label} asked for {n} models and got {len(chosen)} ({', '.join(chosen)}): no "
                         "other model is eligible")
    if same := [m for m in dict.fromkeys(chosen) if m in avoid]:
        ctx.notes.append(f"role: {label} is played by {', '.join(same)}, which plays another role of the plan too: "
                         "no other eligible model can")
    return chosen


def role_size(role: Role | None, default_n: int = 1) -> int:
    """How many models a role asks for: a list's length, ``pick: N``'s N, the strategy's default for ``pick:
    diverse`` or a role left out (``default_n``), one for a name, ``best`` or ``cheapest``."""
    if role is None:
        return default_n
    if isinstance(role, str):
        return 1
    if isinstance(role, list):
        return len(role)
    if isinstance(role.pick, int):
        return role.pick
    return default_n if role.pick == "diverse" else 1


def unfilled(ctx: RequestContext, what: str, role: Role | None) -> NoEligibleModel:
    """The refusal for a role that no eligible model can play (every model it names, pinned or ``among``, was
    excluded): a 422 naming why each was left out, as a route with no eligible model gets, not a bad request."""
    if isinstance(role, str):
        named = [role]
    elif isinstance(role, list):
        named = role
    else:
        named = (role.among if role is not None else None) or []
    excluded = {m: ctx.excluded.get(m, "not among the mix's models") for m in named} or dict(ctx.excluded)
    tier = ctx.trusted_tier
    cards = ctx.config.models
    if tier is not None and any(m in cards and PRIVACY_RANK[cards[m].privacy] > PRIVACY_RANK[tier] for m in excluded):
        # the request's sensitive data is what keeps the role's models out: say so, as a route does
        kinds = ctx.privacy.kinds if ctx.privacy is not None else ["sensitive data"]
        return no_trusted_model(kinds, ctx.mix_name, tier, excluded, to=f"play {what}")
    return NoEligibleModel(f"mix {ctx.mix_name!r}: no eligible model for {what}", excluded)


def _plays(card: ModelCard, name: str) -> bool:
    roles = set(card.roles)
    if "drafter" in roles:
        roles.add("writer")
    return not roles or name in roles


def _diverse(ranking: list[str], cards: dict[str, ModelCard]) -> list[str]:
    """One model per family first (in gate order), then the rest."""
    seen: set[str] = set()
    first, rest = [], []
    for name in ranking:
        fam = cards[name].family or name
        (rest if fam in seen else first).append(name)
        seen.add(fam)
    return first + rest


def with_messages(ctx: RequestContext, messages: list[dict[str, Any]], **changes: Any) -> ChatParams:
    """The request's parameters with other messages (and optional overrides).

    An answer-writing step gets the user's options (sampling, ``logit_bias``, ``reasoning_effort``), as a route's
    one call would, but no tools (its text is what a later step reads). The messages get one leading system
    message and alternating user turns (``merge_turns``). A ``ReviewPrompt`` (critic, judge, grader, program
    check) gets moai's options instead: its output has its own format, which the user's stop, response_format
    and max_tokens (meant for the final answer) would break, and the user's sampling options would only add
    noise; it keeps the seed (reproducibility) and runs at temperature 0 with the mix's completion budget."""
    p = ctx.params
    if isinstance(messages, ReviewPrompt):
        fields: dict[str, Any] = dict(messages=merge_turns(list(messages)), max_tokens=ctx.mix.max_tokens,
                                      temperature=0.0, seed=p.seed)
    else:
        fields = dict(messages=merge_turns(messages), max_tokens=p.max_tokens, limit_field=p.limit_field,
                      temperature=p.temperature,
                      top_p=p.top_p, frequency_penalty=p.frequency_penalty, presence_penalty=p.presence_penalty,
                      stop=p.stop, seed=p.seed, tools=None, tool_choice=None, response_format=p.response_format,
                      logit_bias=p.logit_bias, parallel_tool_calls=p.parallel_tool_calls,
                      reasoning_effort=p.reasoning_effort, **p.sampling_extras())
    fields.update(user=p.user, safety_identifier=p.safety_identifier)  # every call is made for the same end user
    fields.update(changes)
    return ChatParams(**fields)


def repeat_temperature(models: list[str], index: int, base: float | None) -> float | None:
    """A repeated model answers the same at temperature 0: sample the repeats."""
    return 0.7 if models[:index].count(models[index]) else base
