"""A request's memory of the models that failed in it, and which models a later step may still call.

A model that failed one step of a request (a timeout, a refused connection, a rejected key) is left out of the
request's later steps rather than paid for once a step; only where a step has no other model, and the failure
was worth another try, is it called again. Kept apart from the executor, which asks it before every step.
"""

from __future__ import annotations

from moai.providers import ProviderError, ProviderUnavailable
from moai.providers.base import ProviderAuthError
from moai.strategies.plan import Plan, Step, StepResult


def worth_another_try(e: ProviderError) -> bool:
    """Whether a model that failed with ``e`` may answer a later step of the same request when that step has no
    other model: a timeout, a 5xx, a 429, a connection reset or a stream dropped mid-answer may pass; a refused
    connection, a model not found upstream or not loadable (``ProviderUnavailable.final``) or a rejected key will
    not within one request."""
    if isinstance(e, ProviderAuthError):
        return False
    return not (isinstance(e, ProviderUnavailable) and e.final)


def _answer_to_build_on(step: Step, results: dict[str, StepResult]) -> bool:
    """Whether the step asks something new: it has no inputs, or one of them answered. A chain's link after a
    failed one (or a cascade's try after a failed try) asks what the models before it just failed at."""
    return not step.deps or any(results[d].ok for d in step.deps if d in results)


def usable(plan: Plan | None, step: Step, results: dict[str, StepResult]) -> list[str]:
    """The models a step may call: those that did not fail earlier in this request (``Plan.failed``; a refusal of
    the request itself is not such a failure). Models that did are called again only when the step has no other,
    their failure was worth another try, and the step has an answer to build on: otherwise the request would pay
    for the same failure once a step."""
    if plan is None or not plan.failed:
        return list(step.models)
    fresh = [m for m in step.models if m not in plan.failed]
    if fresh or not _answer_to_build_on(step, results):
        return fresh
    return [m for m in step.models if plan.failed[m]]


def note_left_out(plan: Plan | None, step: Step, models: list[str]) -> None:
    """Say once per model that later steps left it out for failing earlier in the request."""
    if plan is None:
        return
    for m in step.models:
        note = f"{m} failed earlier in this request: later steps did not call it again"
        if m not in models and m in plan.failed and note not in plan.notes:
            plan.notes.append(note)


def why_spared(plan: Plan, step: Step) -> str:
    """Why a step of a group (a layer's proposer) was left out: its models failed earlier in this request, or
    their circuit is open or they are rate limited."""
    models = list(dict.fromkeys(step.models))
    failed = [m for m in models if m in plan.failed]
    broken = [m for m in models if m not in plan.failed]
    why = [f"{', '.join(failed)} failed earlier in this request"] if failed else []
    why += [f"{', '.join(broken)}: circuit open or rate limited"] if broken else []
    return "left out: " + "; ".join(why)


def not_called(step: Step, now: float) -> StepResult:
    """A step left with no model to call: every one of them failed earlier in this request."""
    return StepResult(step.id, step.role, None, "skipped", start=now, end=now,
                      error=f"not called: {', '.join(dict.fromkeys(step.models))} failed earlier in this request")
