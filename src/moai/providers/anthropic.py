"""Anthropic's Messages API via the official ``anthropic`` SDK, behind moai's OpenAI-shaped interface.

Everything above the providers speaks OpenAI's chat format, so this module only translates: system
messages become the top-level ``system``, tool calls and tool results become ``tool_use`` /
``tool_result`` blocks (and back), and ``stop_reason`` becomes ``finish_reason``. The SDK already
retries 408/409/429/5xx/529 with backoff (honouring ``retry-after``), so we configure it and map its
exceptions onto moai's error types; only a 429 or 5xx that asks for a wait of more than about a second is
not retried in place, so that the request moves on to another model at once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic

from moai.catalog import ANTHROPIC_KEY_ENV, ModelCard
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
    parse_retry_after,
    prompt_usage,
    retries_in_place,
    retry_in_place,
    token_count,
)
from moai.providers.openai_compat import end_user
from moai.providers.tool_calls import check_offered

DEFAULT_ENDPOINT = "https://api.anthropic.com"
UNASKED_MAX_TOKENS = 4096  # the limit sent when the client asked for none (the API requires one)
MAX_USER_ID = 256  # metadata.user_id's limit: a longer one is not sent (the API would refuse the request)
DEFAULT_KEY_ENV = ANTHROPIC_KEY_ENV

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "stop",  # OpenAI ends a refusal with "stop" and says it in message.refusal
}
REFUSED = "The model declined to answer."  # message.refusal when the model refused without a word

# Anthropic's error types and the HTTP status each comes with: an ``error`` event inside a stream arrives after the
# stream's 200, and means what the same error would have meant as a status of its own
ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}

JSON_HINT = "Respond with a single valid JSON value and nothing else."


# ---------------------------------------------------------------- errors


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
    return parse_retry_after(exc.response.headers) if exc.response is not None else None


def translate_error(model: str, exc: Exception) -> ProviderError:
    """Map the SDK's exceptions onto moai's by Anthropic's error type where the error names one, else by status.

    An ``error`` event inside a stream arrives with the stream's HTTP 200: a ``rate_limit_error`` there is as
    rate limited as a 429 (and must not count against the model's health), an ``invalid_request_error`` as much
    the request's fault as a 400."""
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderTimeout(model, "timed out")
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderUnavailable(model, f"connection failed: {exc.__cause__ or exc}")
    if not isinstance(exc, anthropic.APIStatusError):
        return ProviderServerError(model, f"{type(exc).__name__}: {exc}")
    kind = _error_field(exc.body, "type")
    in_stream = exc.status_code < 400
    status = ERROR_STATUS.get(kind or "", exc.status_code)
    where = "in the stream" if in_stream else str(exc.status_code)
    # the SDK's message for an in-stream error is the event's body as Python prints it: its own message reads better
    detail = (_error_field(exc.body, "message") or exc.message) if in_stream else exc.message
    if status == 429:
        return ProviderRateLimited(model, "rate limited", _retry_after(exc))
    if status == 529:
        return ProviderUnavailable(model, f"overloaded ({where})")
    if status in (401, 403):
        return ProviderAuthError(model, f"authentication failed ({where})")
    if status >= 500 or status < 400:
        return ProviderServerError(model, f"upstream error {where}{f' ({kind})' if kind else ''}")
    if status == 404:  # the configured model does not exist: its fault, not the request's
        return ProviderUnavailable(model, f"not found upstream ({where}): {detail}")
    too_long = "prompt is too long" in str(detail)  # Anthropic's words for a context overflow
    return ProviderRequestError(model, f"upstream refused the request ({where}): {detail}",
                                code="context_length_exceeded" if too_long else None,
                                param="messages" if too_long else None)


def _error_field(body: object, name: str) -> str | None:
    """``error.<name>`` of Anthropic's error body, when it is a string."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get(name), str):
            return err[name]
    return None


# ---------------------------------------------------------------- OpenAI -> Anthropic


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _image_block(part: dict[str, Any]) -> dict[str, Any] | None:
    url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
    if not url:
        return None
    if url.startswith("data:") and ";base64," in url:
        media, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI content (a string or parts) as Anthropic blocks; empty text is dropped (the API rejects it)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url":
            image = _image_block(part)
            if image:
                blocks.append(image)
    return blocks


def _tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    raw = fn.get("arguments") or "{}"
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        args = {"_raw": raw}  # keep what the model said rather than failing the whole conversation
    if not isinstance(args, dict):
        args = {"value": args}
    return {"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or "", "input": args}


def to_anthropic_messages(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """Split OpenAI messages into Anthropic's ``system`` and user/assistant turns.

    Consecutive turns of one role are merged (tool results following each other become one user turn),
    because Anthropic expects user and assistant to alternate.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            text = _text_of(m.get("content"))
            if text:
                system.append(text)
            continue
        if role == "tool":
            blocks = [{"type": "tool_result", "tool_use_id": m.get("tool_call_id") or "",
                       "content": _text_of(m.get("content"))}]
            role = "user"
        elif role == "assistant":
            blocks = _content_blocks(m.get("content"))
            blocks += [_tool_use_block(tc) for tc in m.get("tool_calls") or []]
        else:
            role = "user"
            blocks = _content_blocks(m.get("content"))
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return ("\n\n".join(system) or None), turns


def to_anthropic_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """OpenAI function tools as Anthropic tool definitions (``parameters`` becomes ``input_schema``)."""
    if not tools:
        return None
    out = []
    for t in tools:
        fn = t.get("function") if t.get("type", "function") == "function" else None
        if not fn:
            continue
        tool: dict[str, Any] = {"name": fn["name"],
                                "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
        if fn.get("description"):
            tool["description"] = fn["description"]
        out.append(tool)
    return out or None


def to_anthropic_tool_choice(choice: Any, parallel_tool_calls: bool | None = None) -> dict[str, Any] | None:
    """``auto``/``required``/``none``/a named function, in Anthropic's shape.

    Anthropic says ``parallel_tool_calls: false`` on the choice itself, as ``disable_parallel_tool_use`` (at most
    one call under ``auto``, exactly one under ``any`` or ``tool``); with no choice given that is ``auto``, the
    API's default. ``none`` calls no tool, and the API refuses the flag there."""
    out: dict[str, Any] | None = None
    if isinstance(choice, str):
        out = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}.get(choice)
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name:
            out = {"type": "tool", "name": name}
    if parallel_tool_calls is False and (out is None or out["type"] != "none"):
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def request_kwargs(params: ChatParams, model: str, privacy: str = "cloud") -> dict[str, Any]:
    """The Messages API arguments for one call (``privacy``: the model's tier, for what may be sent of the end
    user)."""
    system, messages = to_anthropic_messages(params.messages)
    if params.response_format and params.response_format.get("type") in ("json_object", "json_schema"):
        system = f"{system}\n\n{JSON_HINT}" if system else JSON_HINT  # Anthropic has no JSON mode
    # the Messages API needs a limit: with none asked for, a generous one rather than moai's estimate
    limit = params.max_tokens if params.limit_field else max(params.max_tokens, UNASKED_MAX_TOKENS)
    kw: dict[str, Any] = {"model": model, "max_tokens": limit, "messages": messages}
    if system:
        kw["system"] = system
    # The SDK no longer lists sampling parameters (newer models fix them), but the API still accepts
    # them for models that do: send them as extra body fields only when the caller set them.
    sampling: dict[str, float] = {}
    if params.temperature is not None:
        sampling["temperature"] = min(params.temperature, 1.0)  # Anthropic's range is 0..1, OpenAI's 0..2
    if params.top_p is not None:
        sampling["top_p"] = params.top_p
    if params.top_k:  # the one sampling extra the Messages API takes; "off" (0) is its default: none sent
        sampling["top_k"] = params.top_k
    if sampling:
        kw["extra_body"] = sampling
    if params.stop:
        kw["stop_sequences"] = params.stop
    tools = to_anthropic_tools(params.tools)
    if tools:
        kw["tools"] = tools
        choice = to_anthropic_tool_choice(params.tool_choice, params.parallel_tool_calls)
        if choice:
            kw["tool_choice"] = choice
    # Anthropic's end-user id for its abuse monitoring (at most 256 characters): OpenAI's safety_identifier, made
    # for that, else its user
    ids = (end_user(v, privacy) for v in (params.safety_identifier, params.user))
    user_id = next((v for v in ids if v is not None and len(v) <= MAX_USER_ID), None)
    if user_id is not None:
        kw["metadata"] = {"user_id": user_id}
    return kw


# ---------------------------------------------------------------- Anthropic -> OpenAI


def tool_call(block_id: str, name: str, args: Any, index: int | None = None) -> dict[str, Any]:
    """An OpenAI ``tool_calls`` entry; ``arguments`` is a JSON string, as OpenAI clients expect."""
    call: dict[str, Any] = {"id": block_id, "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args or {})}}
    if index is not None:
        call["index"] = index
    return call


def _usage(u: Any, earlier: Any = None) -> Usage:
    """Prompt tokens include cached input: all of it was read by the model. Cache reads are OpenAI's
    ``cached_tokens``; cache writes have no OpenAI counterpart (they are in the prompt tokens only).

    A stream's ``message_delta`` may give ``input_tokens`` without the cache counts: those are then the ones
    ``earlier`` (``message_start``'s usage) gave, or the prompt would lose its cached part."""
    if u is None:
        return Usage()

    def cache(name: str) -> int | None:
        n = token_count(getattr(u, name, None))
        return token_count(getattr(earlier, name, None)) if n is None and earlier is not None else n

    read = cache("cache_read_input_tokens")
    written = cache("cache_creation_input_tokens") or 0
    prompt = (token_count(u.input_tokens) or 0) + (read or 0) + written  # an unusable count reads 0: estimated
    return Usage(prompt, token_count(u.output_tokens) or 0, {"cached_tokens": read} if read is not None else None)


class _Client(anthropic.AsyncAnthropic):
    """The SDK's client, except that an error asking for a long wait is handed back instead of slept on."""

    def _should_retry(self, response: Any) -> bool:  # the SDK's own HTTP response type
        if not retry_in_place(parse_retry_after(response.headers)):
            return False
        return super()._should_retry(response)


class AnthropicProvider(Provider):
    """Talks to ``card.endpoint`` (default api.anthropic.com) with ``anthropic.AsyncAnthropic``."""

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        # made with the provider (by the server before its first request, off the event loop), not by the first
        # call: loading its TLS certificates takes ~40 ms, which would block the loop and count in that call
        self._client: _Client | None = self._new_client()

    def _new_client(self) -> _Client:
        key = os.environ.get(self.card.api_key_env or DEFAULT_KEY_ENV, "")
        base = (self.card.endpoint or DEFAULT_ENDPOINT).rstrip("/").removesuffix("/v1")
        return _Client(base_url=base, api_key=key or "not-needed", timeout=self.card.timeout_s,
                       max_retries=self.card.max_retries)

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        if self._client is None:  # closed (aclose): a later call gets a new one
            self._client = self._new_client()
        return self._client

    def _for_call(self) -> anthropic.AsyncAnthropic:
        """The client for the call in flight: without retries in place for a model tried as a last resort."""
        if retries_in_place(self.card.max_retries) < self.card.max_retries:
            return self.client.with_options(max_retries=0)
        return self.client

    def _kwargs(self, params: ChatParams) -> dict[str, Any]:
        return request_kwargs(params, self.card.upstream_model, self.card.privacy)

    async def complete(self, params: ChatParams) -> Completion:
        start = time.perf_counter()
        try:
            msg = await self._for_call().messages.create(**self._kwargs(params))
        except anthropic.AnthropicError as e:
            raise translate_error(self.name, e) from e
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in msg.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                calls.append(tool_call(block.id, block.name, block.input))
        try:
            check_offered(self.name, calls, params.tools, tool_choice=params.tool_choice)
        except ProviderServerError as e:  # the upstream generated it, and bills it
            e.usage = _usage(msg.usage)
            raise
        elapsed = time.perf_counter() - start
        text = "".join(texts)
        refused = msg.stop_reason == "refusal"  # whatever the model said is its refusal (OpenAI's message.refusal)
        return Completion(
            model=self.name, text="" if refused else text,
            finish_reason=STOP_REASONS.get(msg.stop_reason or "", "stop"), usage=_usage(msg.usage),
            tool_calls=calls or None, refusal=(text or REFUSED) if refused else None,
            latency_s=elapsed, ttft_s=elapsed,
        )

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        """Text streams as it comes; a tool call is emitted whole when its block closes (arguments complete).

        A refusal is known only at the end, after any text went out as content: it then comes as a ``refusal``
        piece of its own, so that clients still see ``message.refusal``."""
        try:
            events = await self._for_call().messages.create(**self._kwargs(params), stream=True)
            prompt = output = 0
            cached: dict[str, int] | None = None
            started: Any = None  # message_start's usage, for the cache counts message_delta leaves out
            finish = "stop"
            refused = False
            tools: dict[int, dict[str, Any]] = {}  # content-block index -> tool_use being assembled
            n_calls = 0
            async for ev in events:
                if ev.type == "message_start":
                    started = ev.message.usage
                    u = _usage(started)
                    prompt, output, cached = u.prompt_tokens, u.completion_tokens, u.prompt_details
                elif ev.type == "content_block_start" and ev.content_block.type == "tool_use":
                    b = ev.content_block
                    try:  # before the call goes out: the next model may still answer
                        check_offered(self.name, [{"function": {"name": b.name}}], params.tools,
                                      tool_choice=params.tool_choice)
                    except ProviderServerError as e:
                        e.usage = Usage(prompt, output, cached) if prompt else prompt_usage(params)
                        raise
                    tools[ev.index] = {"id": b.id, "name": b.name, "json": [], "input": b.input}
                elif ev.type == "content_block_start" and ev.content_block.type == "text" and ev.content_block.text:
                    yield Delta(text=ev.content_block.text)
                elif ev.type == "content_block_delta":
                    if ev.delta.type == "text_delta" and ev.delta.text:
                        yield Delta(text=ev.delta.text)
                    elif ev.delta.type == "input_json_delta" and ev.index in tools:
                        tools[ev.index]["json"].append(ev.delta.partial_json)
                elif ev.type == "content_block_stop" and ev.index in tools:
                    t = tools.pop(ev.index)
                    raw = "".join(t["json"])
                    args = json.loads(raw) if raw else (t["input"] or {})
                    yield Delta(tool_calls=[tool_call(t["id"], t["name"], args, n_calls)])
                    n_calls += 1
                elif ev.type == "message_delta":
                    if ev.delta.stop_reason:
                        finish = STOP_REASONS.get(ev.delta.stop_reason, "stop")
                        refused = ev.delta.stop_reason == "refusal"
                    if ev.usage is not None:
                        output = token_count(ev.usage.output_tokens) or output
                        if getattr(ev.usage, "input_tokens", None):
                            u = _usage(ev.usage, started)
                            prompt, cached = u.prompt_tokens, u.prompt_details or cached
            if refused:
                yield Delta(refusal=REFUSED)
            yield Delta(finish_reason=finish, usage=Usage(prompt, output, cached))
        except anthropic.AnthropicError as e:
            raise translate_error(self.name, e) from e
        except json.JSONDecodeError as e:
            raise ProviderServerError(self.name, f"tool arguments were not valid JSON: {e}") from e

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
