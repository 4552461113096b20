"""Live statistics that flow back into routing: latency, time-to-first-token, errors, feedback.

Each process updates its statistics at once from its own calls, and every few seconds rebuilds them from
the shared database (the calls and feedback tables), so that replicas on one PostgreSQL converge on the
same view and a restart resumes where it left off. The policy reads ``snapshot()``; the executor asks
``healthy()`` (a circuit breaker per model: open after repeated failures, half-open probe after a
cool-down, closed again on success). A model that answered 429 is no less healthy, so that is not counted as
a failure; it is only left alone until its ``Retry-After`` has passed (``observe_rate_limit``).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moai.providers.base import RATE_LIMIT_COOLDOWN_S
from moai.telemetry.store import CallRecord, FeedbackRecord, RequestRecord, TelemetryStore

PRIOR_STRENGTH = 10.0  # feedback pseudo-counts behind the gate's own estimate


def normalise_score(score: float) -> float:
    """Feedback on a 0..1 scale: -1..1 (thumbs) maps linearly, above 1 is read as a 0–10 rating."""
    if score > 1:
        return max(0.0, min(1.0, score / 10))
    return (max(-1.0, score) + 1) / 2 if score < 0 else score


@dataclass
class ModelStats:
    alpha: float = 0.3
    latency_s: float | None = None  # EWMA of whole-call latency
    s_per_token: float | None = None  # EWMA of generation time per output token
    ttft_s: float | None = None
    error_rate: float = 0.0
    calls: int = 0
    consecutive_failures: int = 0
    opened_at: float | None = None  # circuit breaker opened (None: closed)
    probing: bool = False
    feedback_n: float = 0.0
    feedback_residual: float = 0.0  # Σ (observed − predicted quality)
    warm: bool = False  # the first successful call (connection set-up, model load) is not representative
    last_ok: float | None = None
    limited_until: float | None = None  # rate limited (429) until then: tried after the other models

    def _ewma(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.alpha) * old + self.alpha * new

    def observe(self, ok: bool, latency_s: float, ttft_s: float | None, output_tokens: int, now: float,
                failure_threshold: int) -> None:
        self.calls += 1
        self.error_rate = self._ewma(self.error_rate if self.calls > 1 else None, 0.0 if ok else 1.0)
        if ok and not self.warm:
            self.warm = True
            self.last_ok = now
            self.consecutive_failures, self.opened_at, self.probing = 0, None, False
            return
        if ok:
            self.last_ok = now
            self.latency_s = self._ewma(self.latency_s, latency_s)
            if ttft_s is not None:
                self.ttft_s = self._ewma(self.ttft_s, ttft_s)
            # per-token speed only from streamed calls long enough to separate it from the first token
            if ttft_s is not None and ttft_s < 0.9 * latency_s and output_tokens >= 8:
                gen = (latency_s - ttft_s) / output_tokens
                self.s_per_token = self._ewma(self.s_per_token, gen)
            self.consecutive_failures = 0
            self.opened_at = None
            self.probing = False
        else:
            self.consecutive_failures += 1
            if self.consecutive_failures >= failure_threshold or self.probing:
                self.opened_at = now
                self.probing = False

    @property
    def quality_delta(self) -> float:
        """Posterior shift of expected quality from feedback (normal–normal shrinkage towards the gate)."""
        return self.feedback_residual / (PRIOR_STRENGTH + self.feedback_n)

    def expected_latency_s(self, output_tokens: int) -> float | None:
        if self.s_per_token is None and self.latency_s is None:
            return None
        if self.s_per_token is not None:
            return (self.ttft_s or 0.0) + self.s_per_token * output_tokens
        return self.latency_s


@dataclass
class LiveStats:
    """Per-model statistics with a circuit breaker; thread-safe."""

    failure_threshold: int = 3
    cooldown_s: float = 30.0
    stale_s: float = 120.0  # latency not refreshed for this long is forgotten, so the model gets re-tried
    window: int = 50  # calls per model read back from the database
    models: dict[str, ModelStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _get(self, model: str) -> ModelStats:
        if model not in self.models:
            self.models[model] = ModelStats()
        return self.models[model]

    def observe(self, model: str, ok: bool, latency_s: float, ttft_s: float | None = None,
                output_tokens: int = 0, now: float | None = None) -> None:
        with self._lock:
            self._get(model).observe(ok, latency_s, ttft_s, output_tokens, now or time.time(),
                                     self.failure_threshold)

    def observe_refusal(self, model: str) -> None:
        """A call the model refused for the request's own sake (an unreadable part, too long a prompt) says
        nothing about its health: it is not counted, and a half-open probe it used is handed back, so that the
        next request probes rather than the circuit staying shut."""
        with self._lock:
            st = self.models.get(model)
            if st is not None and st.probing:
                st.probing = False

    def observe_rate_limit(self, model: str, retry_after: float | None, now: float | None = None) -> None:
        """The model answered 429: leave it alone for ``retry_after`` seconds (a few when it did not say).

        Not a failure: the error rate and the breaker are untouched, and a half-open probe it used is handed back.
        """
        wait = RATE_LIMIT_COOLDOWN_S if retry_after is None else retry_after
        with self._lock:
            st = self._get(model)
            st.probing = False
            until = (now or time.time()) + wait
            st.limited_until = max(st.limited_until or until, until)

    def observe_feedback(self, model: str, score: float, predicted: float | None) -> None:
        with self._lock:
            st = self._get(model)
            st.feedback_n += 1
            st.feedback_residual += normalise_score(score) - (predicted if predicted is not None else 0.5)

    def healthy(self, model: str, now: float | None = None) -> bool:
        """Closed: yes. Open: no, until the cool-down passes; then one probe call is let through. Rate limited:
        no, until its ``Retry-After`` has passed (asked first, so that no probe is reserved for a call not sent)."""
        now = now or time.time()
        with self._lock:
            st = self.models.get(model)
            if st is not None and st.limited_until is not None and now < st.limited_until:
                return False
            if st is None or st.opened_at is None:
                return True
            if now - st.opened_at >= self.cooldown_s and not st.probing:
                st.probing = True
                return True
            return False

    def state(self, model: str) -> str:
        st = self.models.get(model)
        if st is None or st.opened_at is None:
            return "closed"
        return "half-open" if st.probing else "open"

    def snapshot(self, output_tokens: int = 256, now: float | None = None) -> dict[str, dict[str, float]]:
        """What the policy reads: model → expected latency, error rate, quality shift."""
        now = now or time.time()
        with self._lock:
            out: dict[str, dict[str, float]] = {}
            for name, st in self.models.items():
                entry: dict[str, float] = {"error_rate": st.error_rate, "quality_delta": st.quality_delta}
                lat = st.expected_latency_s(output_tokens)
                if lat is not None and st.last_ok is not None and now - st.last_ok < self.stale_s:
                    entry["latency_s"] = lat
                if st.ttft_s is not None:
                    entry["ttft_s"] = st.ttft_s
                entry["open"] = 0.0 if st.opened_at is None else 1.0
                if st.limited_until is not None and now < st.limited_until:
                    entry["rate_limited_s"] = st.limited_until - now
                out[name] = entry
            return out

    # ---------------------------------------------------------------- shared state through the database

    def refresh(self, store: TelemetryStore) -> None:
        """Rebuild every model's statistics from the newest calls and all feedback in the shared database.

        Only answered ("ok") and failed calls count: "refused" ones (the request's own fault) and "rate_limited"
        ones (a 429) say nothing about the model's health, and skipped or cancelled ones were never a verdict on
        it. A rate-limit cool-down seen by this process is kept."""
        fresh: dict[str, ModelStats] = {}
        with Session(store.engine) as s:
            models = [m for (m,) in s.execute(select(CallRecord.model).distinct()) if m]
            for model in models:
                rows = s.execute(
                    select(CallRecord.status, CallRecord.latency_ms, CallRecord.ttft_ms, CallRecord.completion_tokens,
                           CallRecord.ended_at)
                    .where(CallRecord.model == model, CallRecord.status.in_(("ok", "failed")))
                    .order_by(CallRecord.ended_at.desc()).limit(self.window)
                ).all()
                st = ModelStats()
                for status, lat_ms, ttft_ms, out_tok, ended in reversed(rows):
                    st.observe(status == "ok", lat_ms / 1000, ttft_ms / 1000 if ttft_ms else None, out_tok, ended,
                               self.failure_threshold)
                fresh[model] = st
            fb = s.execute(
                select(RequestRecord.model, RequestRecord.decision, FeedbackRecord.score)
                .join(FeedbackRecord, FeedbackRecord.request_id == RequestRecord.id)
            ).all()
        for model, decision, score in fb:
            if not model:
                continue
            st = fresh.setdefault(model, ModelStats())
            predicted = _predicted_quality(decision, model)
            st.feedback_n += 1
            st.feedback_residual += normalise_score(score) - (predicted if predicted is not None else 0.5)
        with self._lock:
            for model, st in fresh.items():
                old = self.models.get(model)
                if old is not None and old.probing:
                    st.probing = True
                if old is not None:
                    st.limited_until = old.limited_until
                self.models[model] = st


def _predicted_quality(decision: Any, model: str) -> float | None:
    if isinstance(decision, dict):
        q = (decision.get("quality") or {}).get(model)
        if isinstance(q, int | float) and math.isfinite(q):
            return float(q)
    return None
