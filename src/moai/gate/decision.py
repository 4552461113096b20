"""The decision trace every chooser returns: who was picked, the softmax, and why."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def softmax(scores: dict[str, float], temperature: float = 1.0) -> dict[str, float]:
    if not scores:
        return {}
    t = max(temperature, 1e-6)
    top = max(scores.values())
    exp = {k: math.exp((v - top) / t) for k, v in scores.items()}
    z = sum(exp.values())
    return {k: v / z for k, v in exp.items()}


@dataclass
class RouteDecision:
    model: str
    ranking: list[str]  # best first: the fallback order
    probabilities: dict[str, float]
    utilities: dict[str, float] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    difficulty: float | None = None
    reasons: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)  # model -> why it was not eligible
    chooser: str = "gate"

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "ranking": self.ranking,
            "scores": {k: round(v, 4) for k, v in self.probabilities.items()},
            "utilities": {k: round(v, 4) for k, v in self.utilities.items()},
            "quality": {k: round(v, 4) for k, v in self.quality.items()},
            "difficulty": None if self.difficulty is None else round(self.difficulty, 3),
            "reasons": self.reasons,
            "excluded": self.excluded,
            "chooser": self.chooser,
        }
