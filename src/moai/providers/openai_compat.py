"""Any OpenAI-compatible server (OpenAI, Together, Groq, vLLM, llama.cpp, Ollama) via the official SDK.

The SDK already retries 429/5xx/timeouts with exponential backoff (and honours Retry-After), so we only
configure it and translate its exceptions into moai's error types.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import openai

from moai.catalog import ModelCard
from moai.providers.base import (
    ChatParams,
    Completion,
    Delta,
    Provider,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderRequestError,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
    Usage,
)

DEFAULT_ENDPOINTS = {"openai": "https://api.openai.com/v1"}


def translate_error(model: str, exc: Exception) -> ProviderError:
    """Map the SDK's exceptions onto moai's; unknown ones become server errors."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout(model, "timed out")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderUnavailable(model, f"connection failed: {exc.__cause__ or exc}")
    if isinstance(exc, openai.RateLimitError):
        retry = exc.response.headers.get("retry-after") if exc.response is not None else None
        return ProviderRateLimited(model, "rate limited", float(retry) if retry else None)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderAuthError(model, f"authentication failed ({exc.status_code})")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return ProviderServerError(model, f"upstream error {exc.status_code}")
        return ProviderRequestError(model, f"upstream refused the request ({exc.status_code}): {exc.message}")
    return ProviderServerError(model, f"{type(exc).__name__}: {exc}")


def _tool_calls(raw: Any) -> list[dict[str, Any]] | None:
    if not raw:
        return None
    return [tc.model_dump(exclude_none=True) for tc in raw]


class OpenAICompatProvider(Provider):
    """Talks to ``card.endpoint`` with the ``openai`` SDK; one client per provider instance."""

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self._client: openai.AsyncOpenAI | None = None

    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:  # created lazily: never at import or config load
            key = os.environ.get(self.card.api_key_env, "") if self.card.api_key_env else ""
            self._client = openai.AsyncOpenAI(
                base_url=self.card.endpoint or DEFAULT_ENDPOINTS.get(self.card.provider),
                api_key=key or "not-needed",
                timeout=self.card.timeout_s,
                max_retries=self.card.max_retries,
            )
        return self._client

    async def complete(self, params: ChatParams) -> Completion:
        start = time.perf_counter()
        try:
            resp = await self.client.chat.completions.create(
                model=self.card.upstream_model, **params.openai_kwargs()
            )
        except openai.OpenAIError as e:
            raise translate_error(self.name, e) from e
        if not resp.choices:
            raise ProviderServerError(self.name, "response had no choices")
        choice = resp.choices[0]
        usage = Usage(resp.usage.prompt_tokens, resp.usage.completion_tokens) if resp.usage else Usage()
        elapsed = time.perf_counter() - start
        return Completion(
            model=self.name,
            text=choice.message.content or "",
            finish_reason=choice.finish_reason or "stop",
            usage=usage,
            tool_calls=_tool_calls(choice.message.tool_calls),
            latency_s=elapsed,
            ttft_s=elapsed,
        )

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        try:
            stream = await self.client.chat.completions.create(
                model=self.card.upstream_model,
                stream=True,
                stream_options={"include_usage": True},
                **params.openai_kwargs(),
            )
            finish: str | None = None
            usage: Usage | None = None
            async for chunk in stream:
                if chunk.usage:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices[:1]:
                    d = choice.delta
                    if d.content or d.tool_calls:
                        yield Delta(text=d.content or "", tool_calls=_tool_calls(d.tool_calls))
                    if choice.finish_reason:
                        finish = choice.finish_reason
            yield Delta(finish_reason=finish or "stop", usage=usage)
        except openai.OpenAIError as e:
            raise translate_error(self.name, e) from e

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
