"""Choose a model: utility = quality - weights . (expected cost, latency, CO2), under hard constraints.

Written against a small ``CardLike`` Protocol (the attributes of moai.catalog.ModelCard), so the policy
does not depend on how cards are loaded. Every decision carries its trace: scores, utilities,
softmax probabilities, reasons, and each excluded model with why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

PRIVACY_RANK: dict[str, int] = {"local": 0, "private": 1, "cloud": 2}
DEFAULT_GRID_G_PER_KWH = 400.0
CLOUD_WH_PER_KTOK = 0.3  # rough energy per 1k generated tokens for a hosted model (no power_w given)


@runtime_checkable
class PriceLike(Protocol):
    input_per_mtok: float
    output_per_mtok: float


@runtime_checkable
class CardLike(Protocol):
    """What the policy reads from a model card."""

    name: str
    provider: str
    privacy: Literal["local", "private", "cloud"]
    price: PriceLike
    params_b: float | None
    family: str | None
    context: int
    supports_tools: bool
    tokens_per_s: float | None
    ttft_s: float | None
    power_w: float | None


@dataclass
class RecordCard:
    """A minimal model card (CardLike) for models known only from routing records, not from a catalog."""

    name: str
    provider: str = "replay"
    privacy: str = "cloud"
    price: Any = field(default_factory=lambda: type("P", (), {"input_per_mtok": 0.0, "output_per_mtok": 0.0})())
    params_b: float | None = None
    family: str | None = None
    context: int = 1_000_000
    supports_tools: bool = False
    tokens_per_s: float | None = None
    ttft_s: float | None = None
    power_w: float | None = None


@dataclass
class Weights:
    """How much one unit of each term costs in quality points (quality is 0-1)."""

    quality: float = 1.0
    cost: float = 0.0  # per (USD / cost_scale)
    latency: float = 0.0  # per second
    carbon: float = 0.0  # per gram CO2
    cost_scale: float = 0.01  # USD that counts as "1 unit" of cost: weights stay O(1)

    @classmethod
    def parse(cls, spec: str | Mapping[str, float] | None) -> Weights:
        """'quality=1,cost=0.3' or a mapping; unknown keys are an error (typos must not pass)."""
        if spec is None:
            return cls()
        items: dict[str, float] = {}
        if isinstance(spec, str):
            for part in filter(None, (p.strip() for p in spec.split(","))):
                k, sep, v = part.partition("=")
                if not sep:
                    raise ValueError(f"weight {part!r} is not key=value")
                try:
                    items[k.strip()] = float(v)
                except ValueError as e:
                    raise ValueError(f"weight {k.strip()!r} is not a number: {v!r}") from e
        else:
            items = {k: float(v) for k, v in spec.items()}
        allowed = set(cls.__dataclass_fields__)
        bad = sorted(set(items) - allowed)
        if bad:
            raise ValueError(f"unknown weight(s) {', '.join(bad)}; use {', '.join(sorted(allowed))}")
        return cls(**items)


@dataclass
class Constraints:
    allowed_models: Sequence[str] | None = None
    max_cost_usd: float | None = None
    min_context: int | None = None
    max_privacy_tier: Literal["local", "private", "cloud"] | None = None
    require_tools: bool = False


@dataclass
class Decision:
    """The chosen model and everything that led there."""

    model: str | None
    scores: dict[str, float] = field(default_factory=dict)  # expected quality
    utilities: dict[str, float] = field(default_factory=dict)
    probabilities: dict[str, float] = field(default_factory=dict)  # softmax over utilities
    expected: dict[str, dict[str, float]] = field(default_factory=dict)  # cost_usd, latency_s, co2_g
    reasons: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "scores": self.scores, "utilities": self.utilities,
            "probabilities": self.probabilities, "expected": self.expected,
            "reasons": self.reasons, "excluded": self.excluded,
        }


def expected_costs(
    card: CardLike,
    prompt_tokens: int,
    output_tokens: float,
    grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH,
    observed_cost: float | None = None,
    observed_latency: float | None = None,
) -> dict[str, float]:
    """USD, seconds and grams CO2 for one answer, from the card (or measured cost/latency if given)."""
    usd = observed_cost
    if usd is None:
        usd = (prompt_tokens * card.price.input_per_mtok + output_tokens * card.price.output_per_mtok) / 1e6
    if observed_latency is not None:
        latency = observed_latency
    else:
        tps = card.tokens_per_s or 60.0
        ttft = card.ttft_s if card.ttft_s is not None else 0.5
        latency = ttft + output_tokens / max(tps, 1e-6)
    if card.power_w:
        wh = card.power_w * latency / 3600.0
    else:
        wh = CLOUD_WH_PER_KTOK * output_tokens / 1000.0 * max(1.0, (card.params_b or 70.0) / 70.0)
    return {"cost_usd": float(usd), "latency_s": float(latency), "co2_g": float(wh / 1000 * grid_g_per_kwh)}


def softmax(values: Mapping[str, float], temperature: float) -> dict[str, float]:
    if not values:
        return {}
    t = max(temperature, 1e-6)
    mx = max(values.values())
    ex = {k: math.exp((v - mx) / t) for k, v in values.items()}
    z = sum(ex.values())
    return {k: v / z for k, v in ex.items()}


def choose(
    quality: Mapping[str, float],
    cards: Mapping[str, CardLike],
    weights: Weights,
    constraints: Constraints | None = None,
    prompt_tokens: int = 0,
    output_tokens: Mapping[str, float] | None = None,
    observed_costs: Mapping[str, float] | None = None,
    live_stats: Mapping[str, Mapping[str, float]] | None = None,
    grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH,
    temperature: float = 0.05,
    observed_latency: Mapping[str, float] | None = None,
) -> Decision:
    """Apply constraints, score each remaining model, pick the argmax, and explain it.

    ``live_stats`` (model -> {latency_s, error_rate, quality_delta}) is the hook for telemetry:
    measured latency replaces the card's, quality_delta shifts the estimate, and an answer that fails
    with probability error_rate is worth that much less.
    """
    c = constraints or Constraints()
    d = Decision(model=None)
    allowed = set(c.allowed_models) if c.allowed_models else None
    for name, card in cards.items():
        if allowed is not None and name not in allowed:
            d.excluded[name] = "not in allowed_models"
            continue
        if c.max_privacy_tier and PRIVACY_RANK[card.privacy] > PRIVACY_RANK[c.max_privacy_tier]:
            d.excluded[name] = f"privacy tier {card.privacy} exceeds {c.max_privacy_tier}"
            continue
        if c.min_context and card.context < c.min_context:
            d.excluded[name] = f"context {card.context} < required {c.min_context}"
            continue
        if prompt_tokens and card.context < prompt_tokens:
            d.excluded[name] = f"context {card.context} < prompt tokens {prompt_tokens}"
            continue
        if c.require_tools and not card.supports_tools:
            d.excluded[name] = "no tool support"
            continue
        if name not in quality:
            d.excluded[name] = "no quality estimate"
            continue
        out_tok = (output_tokens or {}).get(name, 256.0)
        exp = expected_costs(card, prompt_tokens, out_tok, grid_g_per_kwh, (observed_costs or {}).get(name),
                             (observed_latency or {}).get(name))
        q = float(quality[name])
        live = (live_stats or {}).get(name)
        if live:
            exp["latency_s"] = float(live.get("latency_s", exp["latency_s"]))
            q = (q + float(live.get("quality_delta", 0.0))) * (1.0 - float(live.get("error_rate", 0.0)))
        if c.max_cost_usd is not None and exp["cost_usd"] > c.max_cost_usd:
            d.excluded[name] = f"expected cost ${exp['cost_usd']:.5f} > max ${c.max_cost_usd:.5f}"
            continue
        u = (
            weights.quality * q
            - weights.cost * exp["cost_usd"] / weights.cost_scale
            - weights.latency * exp["latency_s"]
            - weights.carbon * exp["co2_g"]
        )
        d.scores[name], d.utilities[name], d.expected[name] = q, u, exp
    if not d.utilities:
        d.reasons.append("no model satisfies the constraints")
        return d
    d.probabilities = softmax(d.utilities, temperature)
    best = max(d.utilities, key=lambda k: (d.utilities[k], d.scores[k]))
    d.model = best
    top_q = max(d.scores, key=lambda k: d.scores[k])
    e = d.expected[best]
    d.reasons.append(
        f"{best}: utility {d.utilities[best]:.3f} = quality {d.scores[best]:.3f}"
        f" - cost ${e['cost_usd']:.5f} - latency {e['latency_s']:.2f}s - CO2 {e['co2_g']:.3f}g (weighted)"
    )
    if top_q != best:
        d.reasons.append(
            f"{top_q} has higher expected quality ({d.scores[top_q]:.3f}) but lower utility "
            f"({d.utilities[top_q]:.3f}) under the weights"
        )
    if d.excluded:
        d.reasons.append(f"{len(d.excluded)} model(s) excluded by constraints")
    return d
