"""Shared by the provider tests: timing a failed call (a rate limit, an outage) that must be raised, not waited out."""

from __future__ import annotations

import time

import pytest

from moai.providers import ChatParams, Provider
from moai.providers.base import ProviderError, ProviderRateLimited


async def raised_at_once(provider: Provider, params: ChatParams, stream: bool) -> tuple[float, ProviderRateLimited]:
    """Seconds until the provider raised its rate limit (plain or streamed), and the error."""
    t0 = time.perf_counter()
    with pytest.raises(ProviderRateLimited) as e:
        if stream:
            [d async for d in provider.stream(params)]
        else:
            await provider.complete(params)
    return time.perf_counter() - t0, e.value


async def failed_at_once(provider: Provider, params: ChatParams, stream: bool) -> float:
    """Seconds until the provider gave up with any provider error (plain or streamed)."""
    t0 = time.perf_counter()
    with pytest.raises(ProviderError):
        if stream:
            [d async for d in provider.stream(params)]
        else:
            await provider.complete(params)
    return time.perf_counter() - t0
