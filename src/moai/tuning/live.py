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

from moai.catalog import PRIVACY_RANK
from moai.strategies.context import privacy_limited
from moai.tuning.targets import Target

log = logging.getLogger("moai.tuning.live")

# does raising the knob make requests cheaper/faster? (route weights, auto's threshold) or dearer (cascade)
CONVERGED = math.log(1.02)  # knob positions closer than 2% are one and the same
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

    ``cost_share`` needs the counterfactual spend of the most expensive model, which is not observed
    online: either each observation carries it (the engine prices the request's tokens at the dearest
    eligible model's card) or ``reference_cost_usd`` gives a fixed mean (from offline tuning). Quality
    targets need graded answers and are not held online.
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
    _refs: list[float] = field(default_factory=list, repr=False)
    _good: float | None = field(default=None, repr=False)  # nearest knob position (log, cheaper-up) meeting it
    _bad: float | None = field(default=None, repr=False)  # nearest one that missed it
    _held: int = field(default=0, repr=False)
    _seen: set[str] = field(default_factory=set, repr=False)
    _since: datetime | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.target.kind == "quality":
            raise ValueError("quality targets need graded answers; hold them offline (moai mix tune)")
        if self.knob not in CHEAPER_WHEN_UP:
            raise ValueError(f"unknown knob {self.knob!r}; one of {', '.join(CHEAPER_WHEN_UP)}")
        if self.knob.endswith("threshold"):
            self.max_value = min(self.max_value, 1.0)
        self.value = min(max(self.value, self.min_value), self.max_value)

    # ------------------------------------------------------------------ measuring
    @property
    def pending(self) -> int:
        """Requests observed since the last change (what the next judgement is based on)."""
        return len(self._costs)

    def observe(self, cost_usd: float, latency_s: float, reference_cost_usd: float | None = None) -> Change | None:
        """Record one finished request (with, for ``cost_share``, what the dearest model would have cost);
        returns the change if this observation triggered one."""
        ref = reference_cost_usd if reference_cost_usd is not None else self.reference_cost_usd
        if self.target.kind == "cost_share":
            if ref is None:
                raise ValueError("cost_share needs a reference cost: per observation or reference_cost_usd")
            if not ref:
                return None  # nothing costs anything here: no share to hold
        self._costs.append(float(cost_usd))
        self._lat.append(float(latency_s))
        self._refs.append(float(ref or 0.0))
        del self._costs[: -self.window], self._lat[: -self.window], self._refs[: -self.window]
        return self.update()

    def measured(self) -> float:
        """The target's quantity over the requests seen since the last change."""
        costs, lat = np.asarray(self._costs), np.asarray(self._lat)
        if self.target.kind == "cost_share":
            return float(costs.sum() / max(sum(self._refs), 1e-12))
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
        new = self._next(ratio)
        if new is None:
            return None
        if math.isclose(new, self.value):
            return None  # pinned at a bound: nothing more this knob can do
        over = "above" if ratio > 1 else "below"
        ch = Change(time.time(), self.knob, self.value, new, m, len(self._costs),
                    f"{self.target.kind} {m:.4g} {over} target {self.target.value:g} over {len(self._costs)} requests")
        log.info("mix tuner: %s %g -> %g (%s)", self.knob, ch.old, ch.new, ch.reason)
        self.value = new
        self.changes.append(ch)
        self._costs.clear()
        self._refs.clear()
        self._lat.clear()  # what follows is measured under the new value only
        if self.on_change:
            self.on_change(ch)
        return ch

    def _next(self, ratio: float) -> float | None:
        """The next knob value, in log space along the "cheaper" direction.

        A bounded multiplicative step, narrowed by bisection against the nearest values already seen on
        the other side of the target: with few models the outcome jumps at a switch point, and plain steps
        would swing across it forever. A remembered side that the traffic contradicts is forgotten.
        """
        sign = 1.0 if CHEAPER_WHEN_UP[self.knob] else -1.0
        u = sign * math.log(self.value)
        step = math.log(min(max(ratio**self.gain, 1.0 / self.max_step), self.max_step))  # >0: too dear/slow
        if ratio > 1:  # must get cheaper: every value this side of u misses the target
            if self._good is not None and self._good <= u:
                self._good = None  # traffic changed: that value no longer meets the target
            self._bad = u
            new_u = u + abs(step)
            if self._good is not None:
                half = (u + self._good) / 2
                new_u = self._good if self._good - u < 2 * CONVERGED else min(new_u, half)
        else:  # within budget: give quality back, but not past a value known to miss
            if self._bad is not None and self._bad >= u:
                self._bad = None
            self._good = u
            new_u = u - abs(step)
            if self._bad is not None:
                if u - self._bad < 2 * CONVERGED:
                    # the switch point is pinned down: stay on the side that meets the target, and after a
                    # full window of doing so forget it, so cheaper traffic can be given quality back
                    self._held += 1
                    if self._held >= self.window:
                        self._bad, self._held = None, 0
                    return None
                new_u = max(new_u, (u + self._bad) / 2)
        lo, hi = math.log(self.min_value), math.log(self.max_value)
        return math.exp(min(max(sign * new_u, lo), hi))

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
            w = mix.weights.model_copy(update={self.knob.removeprefix("weights."): self.value})
            return mix.model_copy(update={"weights": w})
        return mix.model_copy(update={self.knob: self.value})


def not_decided_by_knob(ctx: Any) -> str | None:
    """Why a request's model was not the mix's knob's choice (None: it was, and its tuner counts the request).

    ``ctx`` is the request's ``RequestContext``. A request that chose its own models or weights, a conversation's
    turn kept on its earlier model where the gate would have picked another, and a request held on trusted models
    by a privacy limit of its own (its sensitive data under the mix's policy, a part no scan can read, or the
    client's ``moai.privacy``) were decided by something else: counted, they read as the knob's doing (a run of
    sticky turns on the dearest model, or of private requests on free local ones, moved the knob with no change in
    the mix's own choices). A sticky turn whose model is the gate's own pick (or one escalated to it) is the
    knob's choice all the same, and counts: with sessions on by default, a client that always sends its ``user``
    would otherwise never be counted."""
    if ctx.steered:
        return "the request chose its own models or weights"
    pick = ctx.session_pick
    decision = getattr(ctx, "decision", None)
    if pick is not None and (decision is None or pick != decision.model):
        return f"its conversation was kept on {pick}" + (f", not the gate's {decision.model}" if decision else "")
    own = ctx.mix.constraints.max_privacy  # the mix's own limit leaves the same models out of every request
    for name, why in ctx.excluded.items():
        card = ctx.config.models.get(name)
        if card is None or not privacy_limited(why):
            continue
        if own is None or PRIVACY_RANK[card.privacy] <= PRIVACY_RANK[own]:
            return f"its privacy limit kept {name} out"
    return None


def knob_value(mix: Any, knob: str) -> float:
    """The value ``knob`` has in ``mix`` (a moai.config.Mix): what ``LiveTuner.apply`` writes back."""
    if knob.startswith("weights."):
        return float(getattr(mix.weights, knob.removeprefix("weights.")))
    return float(getattr(mix, knob))
