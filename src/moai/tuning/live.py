"""Hold a tuning target online: nudge the mix's knob from measured telemetry, in small logged steps.

Offline tuning is only as good as the records resemble today's traffic. The live tuner watches what the
engine actually spends (every request is in the telemetry database with its cost and latency) and moves
the knob by a bounded multiplicative step when the measured value leaves a dead band around the target.
Bounded steps and a fresh window after each change keep it from oscillating on noise; every change is
logged and kept in ``changes`` so an operator can see why the mix behaves differently than yesterday.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from moai.tuning.targets import Target

log = logging.getLogger("moai.tuning.live")

# does raising the knob make requests cheaper/faster? (route weights, auto's threshold) or dearer (cascade)
CHEAPER_WHEN_UP = {"weights.cost": True, "weights.latency": True, "difficulty_threshold": True, "threshold": False}


@dataclass(frozen=True)
class Change:
    at: float
    knob: str
    old: float
    new: float
    measured: float
    n: int  # requests the measurement is based on
    reason: str


@dataclass
class LiveTuner:
    """Keeps ``target`` by moving ``knob`` (see CHEAPER_WHEN_UP) starting from ``value``.

    ``reference_cost_usd``: the mean cost of the most expensive model per request (from offline tuning),
    needed for ``cost_share`` because the counterfactual is not observed online. Quality targets need
    graded answers and are not held online.
    """

    target: Target
    knob: str
    value: float
    reference_cost_usd: float | None = None
    max_step: float = 1.5  # one change multiplies or divides the knob by at most this
    gain: float = 1.0  # step = (measured / target) ** gain, clipped to the bound above
    deadband: float = 0.05  # relative: no change while |measured / target - 1| <= deadband
    min_samples: int = 50  # requests observed since the last change before judging
    window: int = 500  # at most this many recent requests are measured
    min_value: float = 1e-4
    max_value: float = 1e4
    on_change: Callable[[Change], None] | None = None
    changes: list[Change] = field(default_factory=list)
    _costs: list[float] = field(default_factory=list, repr=False)
    _lat: list[float] = field(default_factory=list, repr=False)
    _seen: set[str] = field(default_factory=set, repr=False)
    _since: datetime | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.target.kind == "quality":
            raise ValueError("quality targets need graded answers; hold them offline (moai mix tune)")
        if self.knob not in CHEAPER_WHEN_UP:
            raise ValueError(f"unknown knob {self.knob!r}; one of {', '.join(CHEAPER_WHEN_UP)}")
        if self.target.kind == "cost_share" and not self.reference_cost_usd:
            raise ValueError("cost_share needs reference_cost_usd (mean cost of the most expensive model)")
        if self.knob.endswith("threshold"):
            self.max_value = min(self.max_value, 1.0)
        self.value = min(max(self.value, self.min_value), self.max_value)

    # ------------------------------------------------------------------ measuring
    def observe(self, cost_usd: float, latency_s: float) -> Change | None:
        """Record one finished request; returns the change if this observation triggered one."""
        self._costs.append(float(cost_usd))
        self._lat.append(float(latency_s))
        del self._costs[: -self.window], self._lat[: -self.window]
        return self.update()

    def measured(self) -> float:
        """The target's quantity over the requests seen since the last change."""
        costs, lat = np.asarray(self._costs), np.asarray(self._lat)
        if self.target.kind == "cost_share":
            return float(costs.mean() / self.reference_cost_usd)  # type: ignore[operator]
        if self.target.kind == "max_cost_usd_per_1k":
            return float(costs.mean() * 1000)
        return float(np.percentile(lat, 95))

    def update(self) -> Change | None:
        if len(self._costs) < self.min_samples:
            return None
        m = self.measured()
        ratio = m / self.target.value
        if abs(ratio - 1.0) <= self.deadband:
            return None
        step = min(max(ratio**self.gain, 1.0 / self.max_step), self.max_step)  # >1: over target (too dear/slow)
        factor = step if CHEAPER_WHEN_UP[self.knob] else 1.0 / step
        new = min(max(self.value * factor, self.min_value), self.max_value)
        if math.isclose(new, self.value):
            return None  # pinned at a bound: nothing more this knob can do
        over = "above" if ratio > 1 else "below"
        ch = Change(time.time(), self.knob, self.value, new, m, len(self._costs),
                    f"{self.target.kind} {m:.4g} {over} target {self.target.value:g} over {len(self._costs)} requests")
        log.info("mix tuner: %s %g -> %g (%s)", self.knob, ch.old, ch.new, ch.reason)
        self.value = new
        self.changes.append(ch)
        self._costs.clear()
        self._lat.clear()  # what follows is measured under the new value only
        if self.on_change:
            self.on_change(ch)
        return ch

    # ------------------------------------------------------------------ telemetry
    def poll(self, store: Any, mix: str) -> list[Change]:
        """Feed every new successful request of ``mix`` from the telemetry store; returns changes made."""
        rows = store.requests(since=self._since)
        out = []
        for r in rows:
            if r.id in self._seen or r.mix != mix or r.status != "ok":
                continue
            self._seen.add(r.id)
            ch = self.observe(r.cost_usd, r.latency_ms / 1000.0)
            if ch:
                out.append(ch)
        if rows:
            self._since = rows[-1].created_at
            # ids at the boundary timestamp may be returned again; older ones never will
            self._seen = {r.id for r in rows if r.created_at == self._since}
        return out

    def apply(self, mix: Any) -> Any:
        """A copy of ``mix`` (a moai.config.Mix) using the current value; the original is left as it was."""
        if self.knob.startswith("weights."):
            w = mix.weights.model_copy(update={self.knob.split(".", 1)[1]: self.value})
            return mix.model_copy(update={"weights": w})
        return mix.model_copy(update={self.knob: self.value})
