"""Plans: a small DAG of model calls, each with a role. Strategies build them; the executor runs them.

A step's ``build`` sees the results of its dependencies and returns the call to make — or a
``Passthrough`` (reuse an earlier answer, e.g. the critic approved or the cascade did not escalate), or
``None`` (skip). That keeps conditional plans (critique rounds, cascades) as plain DAGs, and lets the
final step always be streamed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from moai.providers.base import ChatParams, Usage

# a wait for a model shorter than this is no wait (taking a free model's gate): shown as no ``queue_ms``
QUEUE_SHOWN_S = 0.001

@dataclass
class Passthrough:
    """Answer with what an earlier step already produced (text or tool calls), at no cost."""

    text: str
    source: str  # the step whose answer this is
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str = "stop"

    @classmethod
    def of(cls, result: StepResult) -> Passthrough:
        """An earlier step's whole answer, tool calls and finish reason included (an answer cut off at the
        limit still says ``length``)."""
        finish = "tool_calls" if result.tool_calls else result.finish_reason or "stop"
        return cls(result.text, result.step, result.tool_calls, finish)


# steps that review what others wrote (``prompts.ReviewPrompt``): run with moai's own options, not the user's
REVIEW_ROLES = frozenset({"judge", "critic"})


@dataclass
class StepResult:
    """One step's outcome. ``model`` is the model that answered; on a failed step, the last one tried (its
    ``attempts`` list every try), so a trace says which model failed whether the step was streamed or not."""

    step: str
    role: str
    model: str | None
    status: str  # ok | failed | skipped | passthrough
    text: str = ""
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    start: float = 0.0  # unix seconds
    end: float = 0.0
    ttft_s: float | None = None
    cpu_s: float | None = None
    error: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None  # the model declined to answer (passed on as OpenAI's message.refusal)
    finish_reason: str = "stop"
    system_fingerprint: str | None = None  # the answering upstream's, as OpenAI's response field
    energy_kwh: float = 0.0
    co2_g: float = 0.0
    # seconds the answering call waited for its model before it was served (a local model busy with another
    # request, the model's concurrency limit): not the model's latency, so ``start`` is when it began serving
    queue_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "passthrough")

    @property
    def charged(self) -> bool:
        """Whether the step's own usage was paid for: it answered, or it broke off after its model had been sent
        the prompt (a stream that failed, a call its client left or its time cut)."""
        return self.status == "ok" or (self.status in ("failed", "cancelled") and self.usage.total_tokens > 0)

    @property
    def answered(self) -> bool:
        """Ok with something to say: text, tool calls or a refusal (an empty answer is no answer)."""
        return self.ok and bool(self.text.strip() or self.tool_calls or self.refusal)

    @property
    def latency_ms(self) -> float:
        return max(0.0, (self.end - self.start) * 1000)

    def trace(self) -> dict[str, Any]:
        """The entry that goes into the response's ``moai.trace`` list. Its tokens, cost, energy and emissions are
        everything the step was charged (``outcome.step_spend``): its answer's, and what the upstream billed its
        failed tries (a prompt read before a timeout), as its call rows and the response's usage count them, so
        that the entries add up to the request; ``attempts`` shows each try's own share."""
        from moai.strategies.outcome import step_spend  # outcome reads plans: imported when first asked

        spent = step_spend(self)
        entry: dict[str, Any] = {
            "step": self.step,
            "role": self.role,
            "model": self.model,
            "status": self.status,
            "start": round(self.start, 4),
            "end": round(self.end, 4),
            "latency_ms": round(self.latency_ms, 1),
            "tokens": {"input": spent.usage.prompt_tokens, "output": spent.usage.completion_tokens},
            "cost_usd": round(spent.cost_usd, 8),
            "energy_kwh": spent.energy_kwh,
            "co2_g": spent.co2_g,
        }
        if self.queue_s >= QUEUE_SHOWN_S:  # a real wait, not the instant of taking a free model
            entry["queue_ms"] = round(self.queue_s * 1000, 1)
        if self.error:
            entry["error"] = self.error
        if len(self.attempts) > 1 or (self.attempts and self.attempts[0].get("error")):
            entry["attempts"] = self.attempts
        return entry


@dataclass
class Skip:
    """No call for this step, and why (a trace then says so; a bare ``None`` skips without a reason)."""

    reason: str


Built = ChatParams | Passthrough | Skip | None
# may be a coroutine function: a step that must run something first (the critique's program check)
Build = Callable[[dict[str, StepResult]], Built | Awaitable[Built]]


@dataclass
class Step:
    """One model call. ``models`` is ordered: the first is the choice, the rest are fallbacks."""

    id: str
    role: str
    models: list[str]
    build: Build
    deps: list[str] = field(default_factory=list)
    optional: bool = False  # a failure leaves the plan running (e.g. one of several proposers)
    # runs even when every dependency failed: a cascade's next try, for which a failed try means "escalate"
    after_failure: bool = False
    # interchangeable optional steps (a layer of proposers): a model with an open circuit is left out of its
    # group while another model of the group is healthy
    group: str | None = None


@dataclass
class Plan:
    """Steps in any order (the executor sorts by dependencies) and the one whose answer is returned."""

    strategy: str
    steps: list[Step]
    final: str
    # when the final step fails: which earlier answer to return instead (e.g. the best proposer)
    rescue: Callable[[dict[str, StepResult]], StepResult | None] | None = None
    notes: list[str] = field(default_factory=list)
    redactor: Any = None  # strategies.redaction.Redactor: applied to every call to a cloud-tier model
    results: dict[str, StepResult] = field(default_factory=dict)  # filled while running (partial usage)
    rescued: StepResult | None = None  # the earlier answer returned when the final step failed
    # time.monotonic() at which the request's limit runs out (settings.request_timeout_s): layers of proposers
    # get a share of what is left (``stragglers``)
    deadline: float | None = None
    # models that failed in this request (not a refusal of the request itself, nor a strict schema they could not
    # meet), each with whether one more try is worth it (a timeout, a 5xx, a 429, a connection reset or dropped)
    # when a later step has no other model; an unreachable model (connection refused, not found, not loadable, a
    # rejected key) is not (``failed_models.worth_another_try``). Later steps leave them out (``Executor``).
    failed: dict[str, bool] = field(default_factory=dict)
    # sets right, once the plan has run, what its notes said before it did (a cascade's skipped model that was
    # called after all, when its last model failed): the executor calls it before it tells the outcome
    settle: Callable[[dict[str, StepResult]], None] | None = None

    def answering(self) -> StepResult | None:
        """The result whose answer is being returned: the final step's, or the earlier answer that rescued it."""
        return self.rescued or self.results.get(self.final)

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)
