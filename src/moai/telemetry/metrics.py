"""Prometheus metrics: what operators graph and alert on (traffic, tokens, spend, energy, latency, errors).

One registry per engine instance (not the global default) so that several apps in one process — tests,
embedded use — never collide.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from moai.providers.base import ProviderRateLimited, is_refusal
from moai.strategies.outcome import Spend, attempt_spend

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def _limited(attempt: dict[str, Any]) -> bool:
    """Whether a failed attempt was a 429: the provider throttling, not the model failing."""
    return attempt.get("status") == ProviderRateLimited.status


def _error_kind(failed: dict[str, Any]) -> str:
    """How a failed try is counted in ``moai_errors_total``: a refusal of the request, a 429, or a failure."""
    return "refused" if is_refusal(failed.get("status")) else "rate_limited" if _limited(failed) else "attempt"


def _failed_calls(r: Any) -> list[str]:
    """The models of a step's failed calls, one per call the database stores as ``failed``: each failed attempt that
    was not a refusal of the request itself nor a 429 (those are counted under kind "refused" or "rate_limited"),
    or the step itself when it failed without any attempt on record. A model that failed before another answered
    the step is a failed call too (it was counted only when the whole step failed)."""
    failed = [a["model"] for a in r.attempts if a.get("error") and a.get("model")
              and not is_refusal(a.get("status")) and not _limited(a)]
    return failed if r.attempts else ([r.model] if r.status == "failed" else [])


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("moai_requests", "Chat requests", ["mix", "model", "status"], registry=r)
        self.tokens = Counter("moai_tokens", "Tokens processed", ["mix", "model", "kind"], registry=r)
        self.cost = Counter("moai_cost_usd", "Spend in USD", ["mix", "model"], registry=r)
        self.energy = Counter("moai_energy_kwh", "Energy in kWh", ["mix", "model"], registry=r)
        self.co2 = Counter("moai_co2_grams", "Emissions in gCO2e", ["mix", "model"], registry=r)
        self.request_latency = Histogram("moai_request_latency_seconds", "End-to-end request latency", ["mix"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.call_latency = Histogram("moai_call_latency_seconds", "Model call latency", ["model"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("moai_time_to_first_token_seconds", "Time to first token", ["model"],
                              buckets=LATENCY_BUCKETS, registry=r)
        # kind: call (a step's model failed) / attempt (each failed try, a provider's retries in place included) /
        # refused (a model refused the request) /
        # rate_limited (a try answered 429: the provider throttling, not held against the model; neither those nor
        # refusals make a "call" error); with model "none", the error code of a request refused before any model
        # ran (no_trusted_model, no_eligible_model, internal_error, database_unavailable, ...)
        self.errors = Counter("moai_errors", "Failed model calls and requests", ["model", "kind"], registry=r)
        # chat requests turned away before any mix ran, by HTTP status and error code (missing_api_key,
        # invalid_api_key, model_not_allowed, insufficient_quota, rate_limit_exceeded, model_not_found,
        # request_too_large, invalid_json, invalid_request_error, ...): they leave no request record
        self.rejected = Counter("moai_rejected_requests", "Chat requests refused before any mix ran",
                                ["status", "code"], registry=r)
        self.decisions = Counter("moai_gate_decisions", "Gate choices", ["mix", "model"], registry=r)
        # plain event counters of the ratings received: increase(moai_feedback_score_total) /
        # increase(moai_feedback_total) is the mean rating given in a window, over any window and across restarts.
        # A request keeps one rating, its latest (the database and routing read that one): the mean of the ratings
        # standing is the database's (``moai report``), which no counter of one process can give
        self.feedback = Counter("moai_feedback", "Ratings received (first ones and replacements)", ["model"],
                                registry=r)
        self.feedback_score = Counter("moai_feedback_score", "Sum of the ratings' scores normalised to 0..1",
                                      ["model"], registry=r)
        self.feedback_replaced = Counter("moai_feedback_replaced", "Ratings that replaced a request's earlier one",
                                         ["model"], registry=r)
        self.cache = Counter("moai_cache", "Response cache lookups", ["mix", "result"], registry=r)
        self.knob = Gauge("moai_mix_knob", "Current value of a live-tuned mix knob", ["mix", "knob"], registry=r)
        self.knob_changes = Counter("moai_mix_knob_changes", "Live tuning changes", ["mix", "knob"], registry=r)
        # operation: keys (the key lookup), record (storing a request), feedback, ready (the /readyz check)
        self.database_errors = Counter("moai_database_errors", "Telemetry database operations that failed",
                                       ["operation"], registry=r)

    def observe_tuning(self, mix: str, knob: str, value: float) -> None:
        self.knob.labels(mix, knob).set(value)
        self.knob_changes.labels(mix, knob).inc()

    def observe_request(self, mix: str, status: str, latency_s: float, results: list[Any],
                        decided: str | None, answer_model: str | None) -> None:
        self.requests.labels(mix, answer_model or "none", status).inc()
        self.request_latency.labels(mix).observe(latency_s)
        if decided:
            self.decisions.labels(mix, decided).inc()
        for r in results:
            for attempt in r.attempts:  # failed tries the upstream billed all the same (a prompt that timed out)
                if attempt.get("tokens") and attempt.get("model"):
                    self._spent(mix, attempt["model"], attempt_spend(attempt))
            if r.model is None:
                continue
            for model in _failed_calls(r):
                self.errors.labels(model, "call").inc()
            if not r.charged:  # paid for also when its stream broke or its client left
                continue
            self._spent(mix, r.model, Spend(r.usage, r.cost_usd, r.energy_kwh, r.co2_g))
            if r.status != "ok":
                continue
            self.call_latency.labels(r.model).observe(r.latency_ms / 1000)
            if r.ttft_s is not None:
                self.ttft.labels(r.model).observe(r.ttft_s)
        for r in results:
            for attempt in r.attempts:
                if not attempt.get("model"):
                    continue
                for retried in attempt.get("retried") or ():  # failed tries its provider retried in place
                    self.errors.labels(attempt["model"], _error_kind(retried)).inc()
                if attempt.get("error"):
                    self.errors.labels(attempt["model"], _error_kind(attempt)).inc()

    def _spent(self, mix: str, model: str, spent: Spend) -> None:
        """Count what a call was charged, so that the counters add up to the calls in the database."""
        self.tokens.labels(mix, model, "prompt").inc(spent.usage.prompt_tokens)
        self.tokens.labels(mix, model, "completion").inc(spent.usage.completion_tokens)
        self.cost.labels(mix, model).inc(spent.cost_usd)
        self.energy.labels(mix, model).inc(spent.energy_kwh)
        self.co2.labels(mix, model).inc(spent.co2_g)

    def observe_refusal(self, mix: str, status: str, code: str, latency_s: float) -> None:
        """A request that never reached a model: counted with its status ("refused" for a 4xx, "error" for a
        fault of moai's own) and its error code, so a mix refusing traffic is visible and alertable."""
        self.requests.labels(mix, "none", status).inc()
        self.request_latency.labels(mix).observe(latency_s)
        self.errors.labels("none", code).inc()

    def observe_rejection(self, status: int, code: str) -> None:
        self.rejected.labels(str(status), code).inc()

    def observe_database_error(self, operation: str, n: int = 1) -> None:
        self.database_errors.labels(operation).inc(n)

    def observe_feedback(self, model: str | None, score: float, replaced: bool = False) -> None:
        """A stored rating, counted as the event it is; ``replaced``: it replaced the request's earlier rating."""
        from moai.telemetry.feedback import normalise_score

        label = model or "none"
        self.feedback.labels(label).inc()
        self.feedback_score.labels(label).inc(normalise_score(score))
        if replaced:
            self.feedback_replaced.labels(label).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
