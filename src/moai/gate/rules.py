"""A rule-based chooser: the fallback when no trained gate is available.

It guesses difficulty from cheap signals (length, code, maths, reasoning words) and picks the smallest
model whose size suits that difficulty, honouring the mix's weights on cost, latency and carbon. The learned
gate replaces it whenever a trained gate can be loaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from moai.catalog import ModelCard
from moai.config import Weights
from moai.gate.decision import RouteDecision, softmax
from moai.gate.policy import expected_costs

_HARD = re.compile(
    r"\b(prove|derive|step by step|explain why|analy[sz]e|implement|algorithm|optimi[sz]e|debug|"
    r"calculate|how many|solve|equation|function|class|refactor)\b|```|\d+\s*[-+*/^]\s*\d+",
    re.IGNORECASE,
)


def message_text(messages: Sequence[dict[str, Any]]) -> str:
    parts = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, list):
            parts.extend(str(p.get("text", "")) for p in c if isinstance(p, dict))
        elif c:
            parts.append(str(c))
    return "\n".join(parts)


def difficulty(text: str) -> float:
    """0 (trivial) … 1 (hard), from length and task markers."""
    length = min(len(text) / 2000, 1.0)
    markers = min(len(_HARD.findall(text)) / 3, 1.0)
    return min(1.0, 0.15 + 0.45 * markers + 0.4 * length)


class RuleChooser:
    name = "rules"

    def decide(self, messages: Sequence[dict[str, Any]], cards: Sequence[ModelCard], weights: Weights,
               live: Mapping[str, Mapping[str, float]] | None = None) -> RouteDecision:
        text = message_text(messages)
        d = difficulty(text)
        sizes = [c.params_b or 10.0 for c in cards]
        top = max(sizes)
        utilities: dict[str, float] = {}
        qualities: dict[str, float] = {}
        for card, size in zip(cards, sizes, strict=True):
            quality = 1.0 - abs(d - (size / top) ** 0.5)  # big models for hard queries, small for easy
            cost = card.cost_usd(len(text) // 4, 256) * 1000
            latency = card.expected_latency_s(256)
            co2 = expected_costs(card, len(text) // 4, 256)["co2_g"]  # as the learned gate estimates it
            seen = (live or {}).get(card.name, {})
            quality = (quality + seen.get("quality_delta", 0.0)) * (1 - seen.get("error_rate", 0.0))
            latency = seen.get("latency_s", latency)
            qualities[card.name] = quality
            utilities[card.name] = (weights.quality * quality - weights.cost * cost - weights.latency * latency
                                    - weights.carbon * co2)
        probs = softmax(utilities, temperature=0.1)
        ranking = sorted(utilities, key=lambda n: -utilities[n])
        return RouteDecision(
            model=ranking[0],
            ranking=ranking,
            probabilities=probs,
            utilities=utilities,
            quality=qualities,
            difficulty=d,
            reasons=[f"rule-based: estimated difficulty {d:.2f}",
                     f"{ranking[0]}: highest utility {utilities[ranking[0]]:.3f}"],
            chooser=self.name,
        )
