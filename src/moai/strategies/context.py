"""What a strategy gets to build its plan: the request, the mix, the eligible models and a chooser."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from moai.catalog import PRIVACY_RANK, ModelCard
from moai.config import Config, Mix, Weights
from moai.gate.decision import RouteDecision
from moai.providers.base import ChatParams


class Chooser(Protocol):
    """Anything that ranks models for a query: the learned gate, or the rule-based fallback."""

    name: str

    def decide(
        self, messages: Sequence[dict[str, Any]], cards: Sequence[ModelCard], weights: Weights,
        live: Mapping[str, Mapping[str, float]] | None = None,
    ) -> RouteDecision: ...


class NoEligibleModel(Exception):
    """Every model (of the mix, or of one of its roles) was excluded by a hard constraint; the request must be
    refused (422), not degraded.

    Not a ``ValueError``: a strategy raises it while planning, where a ``ValueError`` is a bad option of the
    request (400); this one must reach the client as the refusal it is, whichever strategy found it."""

    def __init__(self, message: str, excluded: dict[str, str], code: str = "no_eligible_model") -> None:
        super().__init__(message)
        self.excluded = excluded
        self.code = code


def no_trusted_model(kinds: Sequence[str], mix_name: str, tier: str, excluded: dict[str, str],
                     to: str = "send it to") -> NoEligibleModel:
    """The refusal of a request whose sensitive data may go to none of the models it needs (those of its mix, or of
    one of its roles: ``to`` says which)."""
    return NoEligibleModel(f"this request carries sensitive data ({', '.join(kinds)}) and mix {mix_name!r} has no "
                           f"model of privacy tier {tier} or more trusted to {to}", excluded, code="no_trusted_model")


@dataclass
class RequestContext:
    config: Config
    mix_name: str
    mix: Mix
    params: ChatParams
    chooser: Chooser
    weights: Weights
    candidates: list[ModelCard]
    excluded: dict[str, str] = field(default_factory=dict)
    decision: RouteDecision | None = None
    notes: list[str] = field(default_factory=list)
    unvetted: bool = False  # answered without the verdict the mix asked for (judge/critic failed or unusable)
    privacy: Any = None  # gate.privacy.PrivacyReport of this request
    trusted_tier: str | None = None  # the least trusted privacy tier the request's sensitive data may go to
    session: str | None = None  # the conversation this request continues
    session_model: str | None = None  # the model that answered its previous turn
    session_pick: str | None = None  # the model the session put first this turn (stayed on, or escalated to)
    live: Mapping[str, Mapping[str, float]] | None = None  # live statistics per model (adaptation)
    steered: bool = False  # the request chose its own models or weights: a mix's live tuner does not count it
    # an auto mix's collaboration mixes by name: (the mix under the limits of those before it, its eligible
    # models, why the others are out), found with the request's own filters (``Mixture.prepare``)
    collaborators: dict[str, tuple[Mix, list[ModelCard], dict[str, str]]] = field(default_factory=dict)

    def decide(self, cards: Sequence[ModelCard] | None = None) -> RouteDecision:
        """Rank ``cards`` (default: all eligible) for this request; the first call is kept as the trace."""
        pool = list(cards) if cards is not None else self.candidates
        decision = self.chooser.decide(self.params.messages, pool, self.weights, live=self.live)
        decision.excluded = {**self.excluded, **decision.excluded}
        if self.decision is None:
            self.decision = decision
        return decision


PRIVACY_LIMITED = "privacy tier"  # opens the reason of a model a privacy limit left out (``privacy_limited``)


def privacy_limited(why: str) -> bool:
    """Whether ``why`` (a reason in ``RequestContext.excluded``) is a privacy limit's, set by ``eligible``."""
    return why.startswith(PRIVACY_LIMITED)


def most_written(card: ModelCard, prompt_tokens: int, ceiling: int) -> int:
    """The most a call can write under a ``ceiling`` (its ``max_tokens``): a local model stops at the room its
    context leaves (llama.cpp runs it with that context), so a large ceiling costs and takes no more than that; a
    remote card's ``context`` may be a default that says little of the model's own, so its ceiling stands (a cost
    cap, a budget's hold, must not count on an answer shorter than the one that may be billed), as does a prompt
    the context cannot hold."""
    room = card.context - prompt_tokens
    if card.provider != "local" or room <= 0:  # a prompt past the context: no room to reason about, the worst kept
        return ceiling
    return min(ceiling, room)


def eligible(config: Config, mix: Mix, prompt_tokens: int, needs_tools: bool = False,
             max_privacy: str | None = None, output_tokens: int = 0,
             answer_tokens: int = 0) -> tuple[list[ModelCard], dict[str, str]]:
    """Apply the hard constraints that do not depend on the gate: pool, privacy, context, tools, and the cost and
    latency limits at the completion budget (the worst case, as a plan's budget is checked). ``answer_tokens``:
    the answer the client asked room for (its ``max_tokens``), which a card's context holds with the prompt: a
    model whose context the two overflow would refuse the call, or cut the answer short."""
    excluded: dict[str, str] = {}
    kept: list[ModelCard] = []
    limits = [t for t in (max_privacy, mix.constraints.max_privacy) if t is not None]
    limit = min(limits, key=lambda t: PRIVACY_RANK[t]) if limits else None  # the stricter one wins
    ceiling = output_tokens
    for card in config.pool(mix):
        output_tokens = most_written(card, prompt_tokens, ceiling)
        if limit is not None and PRIVACY_RANK[card.privacy] > PRIVACY_RANK[limit]:
            excluded[card.name] = f"{PRIVACY_LIMITED} {card.privacy} not allowed (max {limit})"
        elif prompt_tokens + max(answer_tokens, 1) > card.context:  # a prompt filling it leaves no room to answer
            asked = f" + max_tokens {answer_tokens}" if answer_tokens else ""
            excluded[card.name] = f"prompt ~{prompt_tokens} tokens{asked} exceeds context {card.context}"
        elif needs_tools and not card.supports_tools:
            excluded[card.name] = "does not support tools"
        elif (mix.constraints.max_cost_usd is not None
              and card.cost_usd(prompt_tokens, output_tokens) > mix.constraints.max_cost_usd):
            excluded[card.name] = (f"expected cost ${card.cost_usd(prompt_tokens, output_tokens):.5f} "
                                   f"> max ${mix.constraints.max_cost_usd:g}")
        elif (mix.constraints.max_latency_s is not None
              and card.expected_latency_s(output_tokens) > mix.constraints.max_latency_s):
            excluded[card.name] = (f"expected latency {card.expected_latency_s(output_tokens):.1f}s for "
                                   f"{output_tokens} tokens > max {mix.constraints.max_latency_s:g}s")
        else:
            kept.append(card)
    return kept, excluded
