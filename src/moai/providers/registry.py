"""The providers of a configuration's models, made on first use, each with its concurrency gate.

Shared by every request of a mix: the gate (a model's ``max_concurrency``) holds across requests, and the health
and rate-limit hooks let live statistics steer every request. The executor reads it; it does not own it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from moai.catalog import ModelCard
from moai.config import Config
from moai.providers import Provider, make_provider

log = logging.getLogger(__name__)


class ProviderRegistry:
    """One provider and one concurrency gate per model, created on first use."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._providers: dict[str, Provider] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}
        self.health: Callable[[str], bool] = lambda _name: True  # replaced by live statistics
        # told at once of a 429 (model, Retry-After), so concurrent and later requests try other models first
        self.rate_limited: Callable[[str, float | None], None] = lambda _name, _retry_after: None

    def card(self, name: str) -> ModelCard:
        return self.config.models[name]

    def get(self, name: str) -> Provider:
        if name not in self._providers:
            self._providers[name] = make_provider(self.card(name))
        return self._providers[name]

    def prepare(self) -> None:
        """Make every model's provider before the first request (the server's start-up, in a thread): making the
        first of a protocol imports its library (aiohttp ~0.1 s, Anthropic's SDK ~1 s), which on the event loop
        would stall every request in flight and count in that call's latency. One that cannot be made is left
        to its first call to report."""
        for name in self.config.models:
            try:
                self.get(name)
            except Exception as e:  # noqa: BLE001 - reported by the call that needs it, as without this
                log.debug("provider of %s not made at start-up: %s", name, e)

    def limit(self, name: str) -> asyncio.Semaphore:
        if name not in self._limits:
            self._limits[name] = asyncio.Semaphore(self.card(name).max_concurrency)
        return self._limits[name]

    async def aclose(self) -> None:
        for p in self._providers.values():
            await p.aclose()
