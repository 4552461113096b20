"""The providers of a configuration's models, made on first use, each with its concurrency gate.

Shared by every request of a mix: the gate (a model's ``max_concurrency``) holds across requests, and the health
and rate-limit hooks let live statistics steer every request. The executor reads it; it does not own it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from moai.catalog import ModelCard
from moai.config import Config
from moai.providers import Provider, make_provider


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

    def limit(self, name: str) -> asyncio.Semaphore:
        if name not in self._limits:
            self._limits[name] = asyncio.Semaphore(self.card(name).max_concurrency)
        return self._limits[name]

    async def aclose(self) -> None:
        for p in self._providers.values():
            await p.aclose()
