"""Any OpenAI-compatible server (OpenAI, Together, Groq, vLLM, llama.cpp, Ollama) over httpx.

A gateway's own cost per call is what every request pays, so this speaks the protocol with one pooled
``httpx.AsyncClient`` per model (half the CPU of the ``openai`` SDK per call, measured by
benchmarks/overhead.py) and keeps the SDK's retry policy: exponential backoff with jitter on timeouts,
connection errors, 408/409/429 and 5xx, honouring ``Retry-After``; streams are retried only before
their first byte.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

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
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 8.0


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None


def status_error(model: str, response: httpx.Response, body: bytes) -> ProviderError:
    """The moai error for an upstream HTTP error status."""
    status = response.status_code
    try:
        message = json.loads(body).get("error", {}).get("message") or body.decode(errors="replace")[:200]
    except (ValueError, AttributeError):
        message = body.decode(errors="replace")[:200]
    if status == 429:
        return ProviderRateLimited(model, f"rate limited: {message}", _retry_after(response))
    if status in (401, 403):
        return ProviderAuthError(model, f"authentication failed ({status})")
    if status >= 500:
        return ProviderServerError(model, f"upstream error {status}")
    return ProviderRequestError(model, f"upstream refused the request ({status}): {message}")


def _usage(raw: dict[str, Any] | None) -> Usage | None:
    if not raw:
        return None
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))


class OpenAICompatProvider(Provider):
    """Talks to ``card.endpoint``; one connection pool per provider instance."""

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # created lazily: never at import or config load
            key = os.environ.get(self.card.api_key_env, "") if self.card.api_key_env else ""
            headers = {"authorization": f"Bearer {key}"} if key else {}
            base = (self.card.endpoint or DEFAULT_ENDPOINTS.get(self.card.provider, "")).rstrip("/")
            limits = httpx.Limits(max_connections=self.card.max_concurrency * 2,
                                  max_keepalive_connections=self.card.max_concurrency)
            self._client = httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                                             timeout=httpx.Timeout(self.card.timeout_s, connect=10.0))
        return self._client

    def _payload(self, params: ChatParams, stream: bool) -> dict[str, Any]:
        body = {"model": self.card.upstream_model, **params.openai_kwargs()}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def _backoff(self, attempt: int, hint: float | None) -> None:
        delay = hint if hint is not None else min(MAX_BACKOFF_S, 0.5 * 2**attempt) * random.uniform(0.75, 1.0)
        await asyncio.sleep(delay)

    async def _send(self, payload: dict[str, Any], stream: bool) -> httpx.Response:
        """POST with retries; returns an open response with a 2xx status (streamed when ``stream``)."""
        attempt = 0
        while True:
            try:
                request = self.client.build_request("POST", "/chat/completions", json=payload)
                response = await self.client.send(request, stream=stream)
            except httpx.TimeoutException as e:
                error: ProviderError = ProviderTimeout(self.name, "timed out")
                hint = None
                cause: Exception = e
            except httpx.TransportError as e:
                error, hint, cause = ProviderUnavailable(self.name, f"connection failed: {e}"), None, e
            else:
                if response.status_code < 400:
                    return response
                body = await response.aread()
                await response.aclose()
                error, hint = status_error(self.name, response, body), _retry_after(response)
                cause = error_cause(response)
                if response.status_code not in RETRY_STATUSES:
                    raise error from cause
            if attempt >= self.card.max_retries:
                raise error from cause
            await self._backoff(attempt, hint)
            attempt += 1

    async def complete(self, params: ChatParams) -> Completion:
        start = time.perf_counter()
        response = await self._send(self._payload(params, stream=False), stream=False)
        try:
            data = response.json()
        except ValueError as e:
            raise ProviderServerError(self.name, "response was not JSON") from e
        choices = data.get("choices") or []
        if not choices:
            raise ProviderServerError(self.name, "response had no choices")
        choice = choices[0]
        message = choice.get("message") or {}
        elapsed = time.perf_counter() - start
        return Completion(
            model=self.name,
            text=message.get("content") or "",
            finish_reason=choice.get("finish_reason") or "stop",
            usage=_usage(data.get("usage")) or Usage(),
            tool_calls=message.get("tool_calls") or None,
            latency_s=elapsed,
            ttft_s=elapsed,
        )

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        response = await self._send(self._payload(params, stream=True), stream=True)
        finish: str | None = None
        usage: Usage | None = None
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    continue
                if "error" in chunk and not chunk.get("choices"):
                    message = (chunk.get("error") or {}).get("message", "stream error")
                    raise ProviderServerError(self.name, f"upstream stream error: {message}")
                usage = _usage(chunk.get("usage")) or usage
                for choice in (chunk.get("choices") or [])[:1]:
                    d = choice.get("delta") or {}
                    if d.get("content") or d.get("tool_calls"):
                        yield Delta(text=d.get("content") or "", tool_calls=d.get("tool_calls"))
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        except httpx.TimeoutException as e:
            raise ProviderTimeout(self.name, "timed out mid-stream") from e
        except httpx.TransportError as e:
            raise ProviderUnavailable(self.name, f"connection lost mid-stream: {e}") from e
        finally:
            await response.aclose()
        yield Delta(finish_reason=finish or "stop", usage=usage)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def error_cause(response: httpx.Response) -> Exception:
    return httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request, response=response)
