"""OpenAI-compatible providers for tests, each closed in its own test's loop, as the engine closes them on
shutdown (import ``close_providers`` into a test module: it is an autouse fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from moai.catalog import ModelCard
from moai.providers.openai_compat import OpenAICompatProvider

OPENED: list[OpenAICompatProvider] = []


def provider(url: str, retries: int = 2, name: str = "stub") -> OpenAICompatProvider:
    card = ModelCard(name=name, provider="openai_compat", endpoint=url, max_retries=retries, timeout_s=5)
    OPENED.append(OpenAICompatProvider(card))
    return OPENED[-1]


@pytest.fixture(autouse=True)
async def close_providers() -> AsyncIterator[None]:
    yield
    while OPENED:
        await OPENED.pop().aclose()
