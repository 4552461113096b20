"""Any OpenAI-compatible server (OpenAI, Together, Groq, vLLM, llama.cpp, Ollama) over aiohttp.

A gateway's own cost per call is what every request pays, so this speaks the protocol with one pooled
``aiohttp.ClientSession`` per model. Measured (benchmarks/load.py, py-spy): httpx spent ~60% of moai's
per-request CPU in its pool's per-connection expiry checks, the openai SDK more still; aiohttp's pool does
not scan. It keeps the SDK's retry policy: exponential backoff with jitter on timeouts, connection
errors, 408/409/429 and 5xx, honouring ``Retry-After``; streams are retried only before their first byte.
One exception: a 429 or 5xx whose ``Retry-After`` asks for more than about a second is raised at once, so
that the request moves to another deployment or model instead of waiting on this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from moai.catalog import CARD_SAMPLING_EXTRAS, ModelCard
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
    note_retried,
    parse_retry_after,
    prompt_usage,
    retries_in_place,
    retry_in_place,
    token_count,
    token_details,
    with_estimates,
)
from moai.providers.tool_calls import check_offered

DEFAULT_ENDPOINTS = {"openai": "https://api.openai.com/v1"}
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 8.0


class UpstreamStatus(Exception):
    """The upstream's HTTP error status, kept as the cause of the moai error raised for it."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200].decode(errors='replace')}")
        self.status, self.body = status, body


def status_error(model: str, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    """The moai error for an upstream HTTP error status.

    A 4xx keeps the upstream's ``code`` and ``param``: a peer's ``context_length_exceeded`` reaches the client
    as such. A model the upstream does not know (404, ``model_not_found``) is the card's fault, not the request's.
    """
    error: dict[str, Any] = {}
    with contextlib.suppress(ValueError, AttributeError):
        error = json.loads(body).get("error") or {}
    if not isinstance(error, dict):
        error = {}
    message = error.get("message") or body.decode(errors="replace")[:200]
    code, param = error.get("code"), error.get("param")
    if status == 429:
        return ProviderRateLimited(model, f"rate limited: {message}", parse_retry_after(headers))
    if status in (401, 403):
        return ProviderAuthError(model, f"authentication failed ({status})")
    if status >= 500:
        return ProviderServerError(model, f"upstream error {status}")
    if status == 404 or code == "model_not_found":
        return ProviderUnavailable(model, f"not found upstream ({status}): {message}")
    return ProviderRequestError(model, f"upstream refused the request ({status}): {message}",
                                code=code if isinstance(code, str) else None,
                                param=param if isinstance(param, str) else None)


def end_user(value: str | None, privacy: str) -> str | None:
    """An end-user identifier (``user``, ``safety_identifier``) as an upstream may get it: as the client gave it,
    except that a cloud model gets none in which moai's privacy scan finds something (an email address, a phone
    number, a key): OpenAI and Anthropic ask for an opaque id (a hash), and a value that would be redacted from
    the request's text is not sent beside it. A private or local model gets it whatever it holds."""
    if not value:
        return None
    if privacy == "cloud":
        from moai.gate.privacy import detect_text

        if detect_text(value):
            return None
    return value


def sampling_extras(params: ChatParams, listed: list[str]) -> dict[str, float | int]:
    """The sampling extras asked for that the card lists (``listed``, names as its server reads them), under those
    names; the others are not sent (a real OpenAI endpoint refuses any field it does not know with a 400). top_k
    "off" goes as -1: vLLM's "disable" (older releases refuse 0), which llama.cpp's server reads as off too."""
    asked = params.sampling_extras()
    out: dict[str, float | int] = {}
    for name in listed:
        value = asked.get(CARD_SAMPLING_EXTRAS[name])
        if value is not None:
            out[name] = -1 if name == "top_k" and value == 0 else value
    return out


def _usage(raw: Any) -> Usage | None:
    """The upstream's usage; a count that is missing or unusable (negative, not a number) reads 0, as not
    reported, and is then estimated: a broken upstream's figures are never billed (nor fail the request)."""
    if not raw or not isinstance(raw, Mapping):
        return None
    return Usage(token_count(raw.get("prompt_tokens")) or 0, token_count(raw.get("completion_tokens")) or 0,
                 token_details(raw.get("prompt_tokens_details")), token_details(raw.get("completion_tokens_details")))


def _timed_out(model: str, message: str, sent: ChatParams, e: TimeoutError) -> ProviderTimeout:
    """A timeout; once the request was sent (not while connecting) the upstream has read its prompt and bills
    it, finished or not, so the try counts its prompt (estimated)."""
    error = ProviderTimeout(model, message)
    if not isinstance(e, aiohttp.ConnectionTimeoutError):
        error.usage = prompt_usage(sent)
    return error


def _malformed(model: str, what: str) -> ProviderServerError:
    """A reply that breaks the protocol is the upstream's failure: the request moves on to the next model."""
    return ProviderServerError(model, f"malformed response: {what}")


def _dict(model: str, value: Any, what: str) -> dict[str, Any]:
    """An object the protocol requires (a choice, a message, a delta); absent reads as empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _malformed(model, f"{what} is {type(value).__name__}, not an object")
    return value


def _text(model: str, value: Any, what: str) -> str:
    """Text content: a string, or a list of content parts (some compatible servers answer so), text joined."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        return "".join(p["text"] for p in value if isinstance(p.get("text"), str))
    raise _malformed(model, f"{what} is {type(value).__name__}, not text")


def _calls(model: str, value: Any) -> list[dict[str, Any]] | None:
    """Tool calls: a list of objects whose ``function`` is an object, or nothing."""
    if not value:
        return None
    if not isinstance(value, list) or not all(
            isinstance(c, dict) and isinstance(c.get("function", {}), dict) for c in value):
        raise _malformed(model, "tool_calls is not a list of calls")
    return value


def _finish(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _fingerprint(data: dict[str, Any]) -> str | None:
    value = data.get("system_fingerprint")
    return value if isinstance(value, str) and value else None


class OpenAICompatProvider(Provider):
    """Talks to ``card.endpoint``; one connection pool per provider instance and event loop."""

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        key = os.environ.get(card.api_key_env, "") if card.api_key_env else ""
        self._headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
        base = (card.endpoint or DEFAULT_ENDPOINTS.get(card.provider, "")).rstrip("/")
        self._url = base + "/chat/completions"
        # connect: 10 s; then at most timeout_s between bytes (a long generation is not a stall)
        self._timeout = aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=card.timeout_s)

    @property
    def session(self) -> aiohttp.ClientSession:
        """Created lazily in the running loop (never at import or config load); a new loop gets its own."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self.card.max_concurrency * 2, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers, timeout=self._timeout)
            self._loop = loop
        return self._session

    def _payload(self, params: ChatParams, stream: bool) -> dict[str, Any]:
        body = {"model": self.card.upstream_model, **params.openai_kwargs()}
        if self.card.provider == "openai" and "max_tokens" in body:  # OpenAI's current name; its reasoning models
            body["max_completion_tokens"] = body.pop("max_tokens")  # take no other
        if self.card.provider != "openai" and any(m.get("role") == "developer" for m in body["messages"]):
            # OpenAI's newer name for system instructions: llama.cpp's server (and others) refuse the role (500),
            # which failed every such request and counted against the model's health
            body["messages"] = [{**m, "role": "system"} if m.get("role") == "developer" else m
                                for m in body["messages"]]
        # for the upstream's abuse monitoring: OpenAI's, and a server whose card says it takes them (others may
        # refuse fields they do not know: Mistral's API answers 422)
        for name in ("user", "safety_identifier") if self.card.sends_end_user else ():
            if (value := end_user(getattr(params, name), self.card.privacy)) is not None:
                body[name] = value
        body.update(sampling_extras(params, self.card.sampling_extras))
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def _backoff(self, attempt: int, hint: float | None) -> None:
        delay = hint if hint is not None else min(MAX_BACKOFF_S, 0.5 * 2**attempt) * random.uniform(0.75, 1.0)
        await asyncio.sleep(delay)

    async def _send(self, payload: dict[str, Any], sent: ChatParams) -> aiohttp.ClientResponse:
        """POST with retries; returns an open response with a 2xx status (the caller reads and releases it).
        Each failed try that is retried is reported (``note_retried``): it is counted, and billed if it was."""
        attempt = 0
        data = json.dumps(payload).encode()
        while True:
            hint: float | None = None
            try:
                response = await self.session.post(self._url, data=data)
            except TimeoutError as e:
                error: ProviderError = _timed_out(self.name, "timed out", sent, e)
                cause: Exception = e
            except aiohttp.ClientError as e:
                error, cause = ProviderUnavailable(self.name, f"connection failed: {e or type(e).__name__}"), e
            else:
                if response.status < 400:
                    return response
                try:
                    body = await response.read()
                except (aiohttp.ClientError, TimeoutError):
                    body = b""
                response.release()
                error = status_error(self.name, response.status, response.headers, body)
                hint = parse_retry_after(response.headers)
                cause = UpstreamStatus(response.status, body)
                if response.status not in RETRY_STATUSES:
                    raise error from cause
                if not retry_in_place(hint):
                    raise error from cause  # another model answers now; waiting here would hold the request
            if attempt >= retries_in_place(self.card.max_retries):
                raise error from cause
            note_retried(error)
            try:
                await self._backoff(attempt, hint)
            except asyncio.CancelledError:
                error.last_sent = True  # cut short while waiting: nothing is in flight
                raise
            attempt += 1

    async def complete(self, params: ChatParams) -> Completion:
        start = time.perf_counter()
        response = await self._send(self._payload(params, stream=False), params)
        try:
            raw = await response.read()
        except TimeoutError as e:
            raise _timed_out(self.name, "timed out reading the response", params, e) from e
        except aiohttp.ClientError as e:
            raise ProviderUnavailable(self.name, f"connection lost: {e or type(e).__name__}") from e
        finally:
            response.release()
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise ProviderServerError(self.name, "response was not JSON") from e
        choices = (data.get("choices") if isinstance(data, dict) else None) or []
        if not choices:
            error = ProviderServerError(self.name, "response had no choices")
            error.usage = _usage(data.get("usage")) if isinstance(data, dict) else None  # processed, and billed
            raise error
        if not isinstance(choices, list):
            raise _malformed(self.name, "choices is not a list")
        choice = _dict(self.name, choices[0], "a choice")
        message = _dict(self.name, choice.get("message"), "the message")
        calls = _calls(self.name, message.get("tool_calls"))
        try:
            check_offered(self.name, calls, params.tools, tool_choice=params.tool_choice)
        except ProviderServerError as e:  # the upstream generated it, and bills it
            generated = "".join(json.dumps(c.get("function")) for c in calls or ())
            e.usage = with_estimates(_usage(data.get("usage")) or Usage(), params, generated)
            raise
        elapsed = time.perf_counter() - start
        return Completion(
            model=self.name,
            text=_text(self.name, message.get("content"), "the content"),
            finish_reason=_finish(choice.get("finish_reason")) or "stop",
            usage=_usage(data.get("usage")) or Usage(),
            tool_calls=calls,
            refusal=_text(self.name, message.get("refusal"), "the refusal") or None,
            latency_s=elapsed,
            ttft_s=elapsed,
            system_fingerprint=_fingerprint(data),
        )

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        response = await self._send(self._payload(params, stream=True), params)
        finish: str | None = None
        usage: Usage | None = None
        fingerprint: str | None = None
        done = False
        try:
            async for raw in response.content:
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    continue
                if not isinstance(chunk, dict):
                    continue
                if "error" in chunk and not chunk.get("choices"):
                    error = chunk.get("error")
                    message = error.get("message") if isinstance(error, dict) else error
                    raise ProviderServerError(self.name, f"upstream stream error: {message or 'stream error'}")
                usage = _usage(chunk.get("usage")) or usage
                fingerprint = _fingerprint(chunk) or fingerprint
                choices = chunk.get("choices") or []
                if not isinstance(choices, list):
                    raise _malformed(self.name, "choices is not a list")
                for raw_choice in choices[:1]:
                    choice = _dict(self.name, raw_choice, "a choice")
                    d = _dict(self.name, choice.get("delta"), "the delta")
                    text = _text(self.name, d.get("content"), "the content")
                    calls = _calls(self.name, d.get("tool_calls"))
                    try:  # before the call goes out: the next model may still answer
                        check_offered(self.name, calls, params.tools, pieces=True,
                                      tool_choice=params.tool_choice)
                    except ProviderServerError as e:
                        e.usage = prompt_usage(params)  # sent and read; what it generated is not reported yet
                        raise
                    refusal = _text(self.name, d.get("refusal"), "the refusal")
                    if text or calls or refusal:
                        yield Delta(text=text, tool_calls=calls, refusal=refusal, system_fingerprint=fingerprint)
                    finish = _finish(choice.get("finish_reason")) or finish
        except TimeoutError as e:
            raise _timed_out(self.name, "timed out mid-stream", params, e) from e
        except aiohttp.ClientError as e:
            raise ProviderUnavailable(self.name, f"connection lost mid-stream: {e or type(e).__name__}") from e
        finally:
            response.release()  # a stream cut short leaves unread data: aiohttp drops that connection
        if not done and finish is None:  # closed without an end: e.g. llama.cpp's server hides a failure this way
            raise ProviderServerError(self.name, "upstream stream ended unfinished (no finish_reason, no [DONE])")
        yield Delta(finish_reason=finish or "stop", usage=usage, system_fingerprint=fingerprint)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()
