"""What a tuning target means, in one place, so the CLI help, the offline sweep and the live tuner agree.

Every target is a number measured over a set of requests (an operating point) compared with a bound:

* ``cost_share=X``: mean spend per request divided by the mean spend of always sending every request to
  the most expensive model (the one with the highest mean recorded cost on the same requests); met when
  ≤ X. A share of *spend*, not of calls, so it also means something with more than two models.
* ``max_cost_usd_per_1k=X``: mean spend per request × 1000, in USD; met when ≤ X.
* ``quality=X_of_best`` (or ``quality=X`` for an absolute 0-1 mean score): mean quality ≥ X × the mean
  quality of the best single model on the same requests; met when ≥.
* ``p95_latency_s=X``: the 95th percentile of end-to-end request latency, in seconds; met when ≤ X.

For the spending and latency targets the best point is the one with the highest quality; for a quality
target it is the cheapest one (the fastest among equally cheap ones: free local models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Kind = Literal["cost_share", "max_cost_usd_per_1k", "quality", "p95_latency_s"]
KINDS: tuple[Kind, ...] = ("cost_share", "max_cost_usd_per_1k", "quality", "p95_latency_s")

HELP = (
    "cost_share=X: spend ÷ spend of always using the most expensive model, ≤ X; "
    "max_cost_usd_per_1k=X: USD per 1000 requests, ≤ X; "
    "quality=X_of_best: mean quality ≥ X × the best single model's (quality=X: absolute 0-1 mean); "
    "p95_latency_s=X: 95th-percentile request latency in seconds, ≤ X."
)


class TargetError(ValueError):
    """A target string that cannot be understood; the message says what is accepted."""


@dataclass(frozen=True)
class Reference:
    """What relative targets are relative to, measured on the same records."""

    max_model_cost: float  # mean USD per request of the most expensive model
    best_quality: float  # mean quality of the best single model


@dataclass(frozen=True)
class Target:
    kind: Kind
    value: float
    relative: bool = False  # quality=X_of_best

    @property
    def upper(self) -> bool:
        """True when the measured value must stay at or below ``value``."""
        return self.kind != "quality"

    @property
    def knob(self) -> Literal["cost", "latency"]:
        """The weight a route mix trades against quality for this target."""
        return "latency" if self.kind == "p95_latency_s" else "cost"

    def measure(self, quality: float, cost_usd: float, p95_latency_s: float, ref: Reference) -> float:
        """The target's own quantity at an operating point (mean quality, mean USD/request, p95 s)."""
        if self.kind == "cost_share":
            return cost_usd / ref.max_model_cost if ref.max_model_cost > 0 else 0.0
        if self.kind == "max_cost_usd_per_1k":
            return cost_usd * 1000.0
        if self.kind == "p95_latency_s":
            return p95_latency_s
        return quality / ref.best_quality if self.relative and ref.best_quality > 0 else quality

    def met(self, measured: float, tolerance: float = 0.0) -> bool:
        """``tolerance`` is absolute, in the target's own unit."""
        return measured <= self.value + tolerance if self.upper else measured >= self.value - tolerance

    def violation(self, measured: float) -> float:
        """How far a point misses the target (0 when met), relative to the bound."""
        gap = measured - self.value if self.upper else self.value - measured
        return max(gap, 0.0) / max(abs(self.value), 1e-12)

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}{'_of_best' if self.relative else ''}"

    def fmt(self, measured: float) -> str:
        return f"{self.kind}={measured:.4g}{'_of_best' if self.relative else ''}"


def parse_target(spec: str) -> Target:
    """``cost_share=0.3``, ``max_cost_usd_per_1k=2``, ``quality=0.95_of_best``, ``p95_latency_s=3``."""
    key, sep, raw = spec.strip().partition("=")
    key = key.strip()
    if not sep or key not in KINDS:
        raise TargetError(f"target {spec!r}: expected one of {', '.join(k + '=X' for k in KINDS)}")
    raw = raw.strip()
    relative = raw.endswith("_of_best")
    if relative and key != "quality":
        raise TargetError(f"target {spec!r}: only quality takes _of_best")
    try:
        value = float(raw.removesuffix("_of_best"))
    except ValueError:
        raise TargetError(f"target {spec!r}: {raw!r} is not a number") from None
    if not math.isfinite(value) or value <= 0 or (key in ("cost_share", "quality") and value > 1.0):
        bound = "in (0, 1]" if key in ("cost_share", "quality") else "> 0"
        raise TargetError(f"target {spec!r}: {key} must be {bound}")
    return Target(key, value, relative)  # type: ignore[arg-type]
