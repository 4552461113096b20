"""One model, several deployments (endpoints or keys): spread the load, survive one going down.

Each call goes to the deployment with the fewest calls in flight relative to its capacity
(``least_busy``), or to the lowest expected wait — EWMA latency × (in flight + 1) — (``latency``).
Per-deployment concurrency limits hold; a deployment that fails before answering hands the call to the
next one, so the executor's model-level fallback is only needed when every deployment fails. A deployment
that answered 429 goes to the back of the order until its ``Retry-After`` has passed, since it would most
likely refuse again; when every deployment is rate limited the model is, until the first of them frees up.
One that failed otherwise (down, erroring) goes behind the others for ``FAILED_BACK_S``: it is still tried when
they fail, but no request waits on its timeouts first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from moai.catalog import ModelCard
from moai.providers.base import (
    RATE_LIMIT_COOLDOWN_S,
    ChatParams,
    Completion,
    Delta,
    Provider,
    ProviderError,
    ProviderRateLimited,
    note_retried,
    queue_entered,
    queue_left,
)

FAILED_BACK_S = 30.0  # how long a deployment that failed is tried after the others


@dataclass
class _Deployment:
    name: str
    provider: Provider
    limit: asyncio.Semaphore
    capacity: int
    in_flight: int = 0
    latency_s: float | None = None
    calls: int = 0
    failures: int = 0
    limited_until: float = 0.0  # monotonic time its last 429 asked to be left alone until
    failed_at: float = -FAILED_BACK_S  # monotonic time of its last failure other than a 429
    history: list[float] = field(default_factory=list)

    def wait_score(self, mode: str) -> float:
        if mode == "latency":
            return (self.latency_s or 0.05) * (self.in_flight + 1)
        return self.in_flight / self.capacity


class BalancedProvider(Provider):
    def __init__(self, card: ModelCard, make: type[Provider] | None = None) -> None:
        super().__init__(card)
        from moai.providers.openai_compat import OpenAICompatProvider

        factory = make or OpenAICompatProvider
        self.mode = card.balance
        self.deployments = []
        for i, dep in enumerate(card.deployments):
            sub = card.model_copy(update={  # named apart for the trace; upstream, it is the card's model
                "endpoint": dep.endpoint, "api_key_env": dep.api_key_env or card.api_key_env,
                "model": dep.model or card.upstream_model, "deployments": [], "name": f"{card.name}#{i + 1}",
            })
            limit = asyncio.Semaphore(dep.concurrency)
            self.deployments.append(_Deployment(f"{card.name}#{i + 1}", factory(sub), limit, dep.concurrency))

    def _order(self) -> list[_Deployment]:
        now = time.monotonic()
        return sorted(self.deployments, key=lambda d: (
            d.limited_until > now, now - d.failed_at < FAILED_BACK_S, d.wait_score(self.mode), d.calls))

    @staticmethod
    def _answered(dep: _Deployment, t0: float) -> None:
        elapsed = time.perf_counter() - t0
        dep.latency_s = elapsed if dep.latency_s is None else 0.7 * dep.latency_s + 0.3 * elapsed
        dep.calls += 1
        dep.failed_at = -FAILED_BACK_S

    @staticmethod
    def _failed(dep: _Deployment, e: ProviderError, waits: list[float]) -> None:
        dep.failures += 1
        if isinstance(e, ProviderRateLimited):
            wait = RATE_LIMIT_COOLDOWN_S if e.retry_after is None else e.retry_after
            dep.limited_until = max(dep.limited_until, time.monotonic() + wait)
            waits.append(wait)
        elif e.retryable:  # down or failing: the next requests try the others first
            dep.failed_at = time.monotonic()

    def _exhausted(self, last: ProviderError | None, waits: list[float]) -> ProviderError:
        """The error once every deployment failed: rate limited while all of them are (usable again as soon as
        one frees up), else the last one's."""
        assert last is not None
        if len(waits) == len(self.deployments):
            error = ProviderRateLimited(self.name, f"every deployment rate limited ({last})", min(waits))
            error.__cause__ = last
            return error
        return last

    async def complete(self, params: ChatParams) -> Completion:
        """One non-streamed call, handed on from deployment to deployment as ``stream`` does."""
        last: ProviderError | None = None
        waits: list[float] = []
        for dep in self._order():
            if last is not None:  # handed on to this deployment: the failure is not raised, but still counts
                note_retried(last)
            dep.in_flight += 1
            t0 = time.perf_counter()
            try:
                queue_entered()  # a deployment with every slot taken: the wait is not its latency
                async with dep.limit:
                    queue_left()
                    t0 = time.perf_counter()
                    out = await dep.provider.complete(params)
                self._answered(dep, t0)
                out.model = self.name
                return out
            except ProviderError as e:
                self._failed(dep, e, waits)
                last = e
                if not e.retryable:
                    raise
            finally:
                dep.in_flight -= 1
        raise self._exhausted(last, waits)

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        last: ProviderError | None = None
        waits: list[float] = []  # seconds until each rate-limited deployment may be called again
        for dep in self._order():
            if last is not None:  # handed on to this deployment: the failure is not raised, but still counts
                note_retried(last)
            started = False
            dep.in_flight += 1
            t0 = time.perf_counter()
            try:
                queue_entered()
                async with dep.limit:
                    queue_left()
                    t0 = time.perf_counter()
                    async for d in dep.provider.stream(params):
                        started = started or bool(d.text or d.tool_calls or d.refusal)
                        yield d
                self._answered(dep, t0)
                return
            except ProviderError as e:
                self._failed(dep, e, waits)
                last = e
                if started or not e.retryable:
                    raise
            finally:
                dep.in_flight -= 1
        raise self._exhausted(last, waits)

    def load(self) -> dict[str, int]:
        """Calls answered per deployment (for tests, metrics and the trace)."""
        return {d.name: d.calls for d in self.deployments}

    async def aclose(self) -> None:
        for d in self.deployments:
            await d.provider.aclose()
