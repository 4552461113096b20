"""What running a plan comes to: an ``Execution`` (the answer and every step's result) or a ``PlanFailed``, and
what it was charged (``Spend``).

Its own module because many readers need the outcome without the machinery that ran it: the server and the CLI
answer from it, the cache stores it, telemetry and metrics record its spend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from moai.providers import Usage
from moai.providers.base import is_refusal
from moai.strategies.plan import Plan, StepResult


@dataclass
class Spend:
    """Tokens and what they cost (money, energy, emissions): of a failed try, a step, or a whole request."""

    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    energy_kwh: float = 0.0
    co2_g: float = 0.0

    def add(self, other: Spend) -> None:
        self.usage.add(other.usage)
        self.cost_usd += other.cost_usd
        self.energy_kwh += other.energy_kwh
        self.co2_g += other.co2_g


def attempt_spend(attempt: dict[str, Any]) -> Spend:
    """What the upstream billed for an attempt's failed tries (a prompt that timed out, an answer without choices,
    retried in place or not); the answer itself is the step's own usage."""
    tokens = attempt.get("tokens") or {}
    return Spend(Usage(tokens.get("input", 0), tokens.get("output", 0), estimated=bool(attempt.get("estimated"))),
                 attempt.get("cost_usd", 0.0), attempt.get("energy_kwh", 0.0), attempt.get("co2_g", 0.0))


def step_spend(r: StepResult) -> Spend:
    """A step's own usage and cost, and its billed failed tries: everything the step was charged."""
    total = Spend(Usage(), r.cost_usd, r.energy_kwh, r.co2_g)
    total.usage.add(r.usage)
    for a in r.attempts:
        total.add(attempt_spend(a))
    return total


def total_spend(results: Sequence[StepResult]) -> Spend:
    """What a request was charged, over every step and every billed failed try."""
    total = Spend()
    for r in results:
        total.add(step_spend(r))
    return total


SHOWN_FAILURES = 4  # models whose own reason a failed step's message gives; the rest are counted


def why_failed(r: StepResult) -> str:
    """Why a step failed, from each model it tried: the last model's reason alone hid the others' (a cloud model's
    400 about the request behind a local model's 422 about its answer), so a client could not tell what to fix."""
    reasons = list(dict.fromkeys(a["error"] for a in r.attempts if a.get("error")))
    if len(reasons) < 2:
        return r.error or (reasons[0] if reasons else "failed")
    shown = "; ".join(reasons[:SHOWN_FAILURES])
    more = len(reasons) - SHOWN_FAILURES
    return f"{shown}; and {more} more" if more > 0 else shown


class PlanFailed(RuntimeError):
    """No model could produce the final answer; carries the trace of what was tried.

    ``status`` is 400 when every model tried for the failing step refused the request itself (e.g. an image
    sent to text-only models): the caller must change the request, retrying it elsewhere will not help; 422
    when every one was untrusted with what an earlier step wrote (``no_trusted_model``, as a sensitive query
    gets before any call).
    ``code`` and ``param`` are then the refusals' own when they all agree (``context_length_exceeded`` on
    ``messages``; a refusal with a ``param`` and no code, such as an invalid ``response_format``, keeps its
    ``param`` under the default code).
    ``status`` is 429 when every model tried was rate limited: the client may retry after ``retry_after``
    seconds (the soonest any of them said), as it would with the provider itself.
    """

    def __init__(self, message: str, results: list[StepResult], failed: Sequence[StepResult] = ()) -> None:
        super().__init__(message)
        self.results = results
        tried = [a for r in failed for a in r.attempts if a.get("error")]
        statuses = {a.get("status") for a in tried}
        refused = bool(tried) and all(is_refusal(s) for s in statuses)
        self.status = ((next(iter(statuses)) if len(statuses) == 1 else 400) if refused
                       else 429 if tried and statuses == {429} else 502)
        waits = [a["retry_after_s"] for a in tried if a.get("retry_after_s") is not None]
        self.retry_after: float | None = min(waits) if self.status == 429 and waits else None
        causes = {(a.get("code"), a.get("param")) for a in tried}
        code, param = causes.pop() if refused and len(causes) == 1 else (None, None)
        default = {400: "unsupported_request", 429: "rate_limit_exceeded"}.get(self.status, "upstream_failed")
        self.code: str = code or default
        self.param: str | None = param


@dataclass
class Execution:
    """What happened: the answer, and one result per step in the order they were run."""

    plan: Plan
    answer: StepResult
    results: list[StepResult] = field(default_factory=list)

    @property
    def usage(self) -> Usage:
        """Every call's tokens (billed failed tries included), and each usage detail summed over the calls that
        reported it."""
        return total_spend(self.results).usage

    @property
    def system_fingerprint(self) -> str | None:
        """The fingerprint of the upstream that wrote the answer (None when it sent none, or from the cache)."""
        return self.answer.system_fingerprint

    @property
    def cost_usd(self) -> float:
        return total_spend(self.results).cost_usd

    @property
    def energy_kwh(self) -> float:
        return total_spend(self.results).energy_kwh

    @property
    def co2_g(self) -> float:
        return total_spend(self.results).co2_g

    @property
    def models_used(self) -> list[str]:
        seen: list[str] = []
        for r in self.results:
            if r.status == "ok" and r.model and r.model not in seen:
                seen.append(r.model)
        return seen
