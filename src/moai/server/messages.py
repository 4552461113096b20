"""Anthropic's Messages API (``POST /v1/messages``, ``POST /v1/messages/count_tokens``) over the chat-completions path.

A Messages request is translated into the chat-completions payload it means, answered by the very code that answers
``POST /v1/chat/completions`` (keys, limits, privacy, the gate, recording, metrics, headers), and the answer
translated back: a message object, Anthropic's stream events (``messages_stream``), or Anthropic's error envelope
with the status the chat path gave. Clients written for Anthropic send their key as ``x-api-key``: it is read as the
bearer key on these endpoints. What only Anthropic's servers can do (server tools such as web search, code execution,
MCP servers) is a 400 saying so; ``thinking`` is taken but not applied (no model here is sent a thinking budget, no
answer carries thinking blocks), and ``moai.reason`` says so.

The names shared with moai's Anthropic provider (its stop reasons, tool-choice shapes, tool-call blocks, error
types) are read from ``moai.providers.anthropic``, which imports Anthropic's SDK (about a second): ``loaded`` imports
it off the event loop before the first request needs it.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from starlette.responses import Response

from moai.server.auth import bearer_credentials
from moai.server.headers import fresh_request_id
from moai.server.translation import (
    CHAT_PREFIX,
    MESSAGE_PREFIX,
    Unsupported,
    answer_id,
    chat_start,
    expect,
    kind_of,
    named,
    one_of,
    text_field,
    translated,
    with_body,
    with_notes,
)

_MESSAGE = {"type": "object", "required": ["role", "content"],
            "properties": {"role": {"type": "string", "enum": ["user", "assistant"]},
                           "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]}}}
# the requests' outlines in /openapi.json (what clients and fuzzers read; ``to_chat`` checks every field it takes)
COUNT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["model", "messages"], "additionalProperties": True,
    "properties": {"model": {"type": "string"}, "messages": {"type": "array", "items": _MESSAGE},
                   "system": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
                   "tools": {"type": "array", "items": {"type": "object"}}, "tool_choice": {"type": "object"}},
}
REQUEST_SCHEMA: dict[str, Any] = {
    **COUNT_SCHEMA, "required": ["model", "messages", "max_tokens"],
    "properties": {**COUNT_SCHEMA["properties"], "max_tokens": {"type": "integer", "minimum": 1},
                   "stream": {"type": "boolean"}, "temperature": {"type": "number"}, "top_p": {"type": "number"},
                   "top_k": {"type": "integer"}, "stop_sequences": {"type": "array", "items": {"type": "string"}},
                   "metadata": {"type": "object"}, "thinking": {"type": "object"}, "moai": {"type": "object"}},
}
PROVIDER = "moai.providers.anthropic"
MESSAGES_PATH = "/v1/messages"
PATHS = (MESSAGES_PATH, f"{MESSAGES_PATH}/count_tokens")
API_KEY_HEADER = "x-api-key"  # where Anthropic's clients send their key
MISSING_KEY = "This gateway requires an API key: send 'x-api-key: <key>' (or 'Authorization: Bearer <key>')."

# chat-completions names a Messages request spells otherwise: refused with the Messages name
CHAT_NAMES = {"stop": "stop_sequences", "max_completion_tokens": "max_tokens", "user": "metadata.user_id",
              "functions": "tools", "function_call": "tool_choice",
              "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
              "stream_options": "stream (a stream's usage always comes in message_start and message_delta)"}
# Messages fields that ask for what only Anthropic's servers do
UNSERVED = {"mcp_servers": "moai connects to no MCP servers: run the MCP client yourself and define its tools",
            "container": "moai runs no code containers: run the code yourself and define the tool that does"}
# Messages fields read here (or taken without changing anything: one service tier)
TRANSLATED = frozenset({"model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k",
                        "stop_sequences", "stream", "tools", "tool_choice", "metadata", "thinking", "service_tier",
                        "moai", *UNSERVED})
SERVICE_TIERS = ("auto", "standard_only")
THINKING = ("enabled", "disabled", "adaptive")
MIN_THINKING = 1024  # Anthropic's least thinking budget
THINKING_NOTE = ("request field thinking taken but not applied (no model here is sent a thinking budget; the answer "
                 "has no thinking blocks)")
CLIENT_TOOL_TYPES = (None, "custom")  # every other tool type (web_search_20250305, bash_..., ...) is a server tool
IMAGE_SOURCES = ("base64", "url")
# chat 400 params as the Messages request names them (messages: indices differ, the system and tool results
# making messages of their own)
PARAM_NAMES = {"messages": "messages", "stop": "stop_sequences", "user": "metadata.user_id"}
TOOL_ID_PREFIX = "toolu_"
# HTTP statuses Anthropic gives no error type of its own, and the type they get here
MORE_ERROR_TYPES = {503: "overloaded_error", 422: "invalid_request_error"}


def provider() -> ModuleType:
    """moai's Anthropic provider module (imported here if ``loaded`` was not awaited first)."""
    return sys.modules.get(PROVIDER) or importlib.import_module(PROVIDER)


async def loaded() -> None:
    """Import the provider module off the event loop, once: it imports Anthropic's SDK (about a second), which
    would stall every request in flight."""
    if PROVIDER not in sys.modules:
        await asyncio.to_thread(importlib.import_module, PROVIDER)


def authorization(path: str, headers: Mapping[str, str]) -> str | None:
    """The Authorization header a key is read from. On the Messages endpoints a client that sends no bearer key
    may send it as ``x-api-key`` (Anthropic's header); a bearer key wins where both are sent (Claude Code sends
    its gateway token as a bearer one, next to whatever Anthropic key its environment holds)."""
    header = headers.get("authorization")
    if path not in PATHS or bearer_credentials(header) is not None:
        return header
    key = headers.get(API_KEY_HEADER)
    return f"Bearer {key}" if key and key.strip() else header


def message_id(completion_id: str) -> str:
    """The message's id: ``msg_`` and the chat completion id's suffix."""
    return answer_id(MESSAGE_PREFIX, completion_id)


# ------------------------------------------------------------------ request


def to_chat(payload: dict[str, Any], counting: bool = False) -> dict[str, Any]:
    """The chat-completions payload a Messages request means (``counting``: a count_tokens request, which has no
    ``max_tokens``). Raises ``Unsupported`` (a 400) for what cannot be translated; fields neither API has are
    passed on, so that the chat path treats them as its own unknown fields (taken, named in ``moai.reason``)."""
    chat = chat_start(payload, "the Messages API's", CHAT_NAMES, UNSERVED, TRANSLATED)
    messages = system_messages(payload.get("system"))
    if "messages" not in payload:
        raise Unsupported("required", "messages")
    messages += turns(payload["messages"])
    chat["messages"] = messages
    limit = payload.get("max_tokens")
    if limit is None and not counting:
        raise Unsupported("required (the most tokens the answer may have)", "max_tokens")
    if limit is not None and not counting:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise Unsupported(f"must be a positive integer, not {limit!r}"[:120], "max_tokens")
        chat["max_tokens"] = limit
    for name in ("temperature", "top_p", "top_k", "moai"):
        if payload.get(name) is not None and not counting:
            chat[name] = payload[name]
    if (stops := payload.get("stop_sequences")) is not None:
        for i, stop in enumerate(expect(stops, list, "stop_sequences", "an array of strings")):
            expect(stop, str, f"stop_sequences[{i}]", "a string")
        if stops and not counting:
            chat["stop"] = stops
    if (stream := payload.get("stream")) is not None and not counting:
        chat["stream"] = stream
        if stream is True:  # usage arrives in a chunk of its own only when asked for: message_delta carries it
            chat["stream_options"] = {"include_usage": True}
    if payload.get("tools") is not None:
        tools = [_chat_tool(t, i) for i, t in enumerate(expect(payload["tools"], list, "tools", "an array"))]
        if tools:
            chat["tools"] = tools
    if payload.get("tool_choice") is not None:
        choice, parallel = _chat_tool_choice(payload["tool_choice"])
        if not counting:
            chat["tool_choice"] = choice
            if parallel is False and chat.get("tools"):
                chat["parallel_tool_calls"] = False
    if (metadata := payload.get("metadata")) is not None:
        expect(metadata, dict, "metadata", "an object")
        if metadata.get("user_id") is not None:
            user = expect(metadata["user_id"], str, "metadata.user_id", "a string")
            if not counting:
                chat["user"] = user
    one_of(payload.get("service_tier"), SERVICE_TIERS, "service_tier")
    _thinking(payload.get("thinking"), None if counting else limit)
    return chat


def _thinking(thinking: Any, max_tokens: int | None) -> None:
    """Checked as Anthropic checks it, though not applied: an "enabled" one names a budget of at least
    ``MIN_THINKING`` tokens, under ``max_tokens`` (a client that gets it past moai would be refused elsewhere)."""
    if thinking is None:
        return
    expect(thinking, dict, "thinking", "an object")
    one_of(thinking.get("type"), THINKING, "thinking.type")
    if thinking.get("type") is None:
        raise Unsupported("required", "thinking.type")
    budget = thinking.get("budget_tokens")
    if budget is None and thinking["type"] == "enabled":
        raise Unsupported("required when thinking is enabled", "thinking.budget_tokens")
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < MIN_THINKING):
        raise Unsupported(f"must be an integer of at least {MIN_THINKING}, not {budget!r}"[:120],
                          "thinking.budget_tokens")
    if budget is not None and max_tokens is not None and budget >= max_tokens:
        raise Unsupported(f"must be less than max_tokens ({max_tokens}), not {budget}", "thinking.budget_tokens")


def thinking_asked(payload: dict[str, Any]) -> bool:
    """Whether the request asked for thinking (taken, not applied: told in ``moai.reason``)."""
    thinking = payload.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def system_messages(system: Any) -> list[dict[str, Any]]:
    """``system`` (a string, or text blocks) as a leading system message (none when it is empty)."""
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system.strip() else []
    parts = []
    for i, block in enumerate(expect(system, list, "system", "a string or an array of text blocks")):
        where = f"system[{i}]"
        expect(block, dict, where, "a text block (an object)")
        if block.get("type") != "text":
            raise Unsupported(f"must be 'text', not {str(block.get('type'))[:40]!r}", f"{where}.type")
        parts.append({"type": "text", "text": text_field(block, "text", where)})
    return [{"role": "system", "content": parts}] if any(p["text"].strip() for p in parts) else []


def turns(value: Any) -> list[dict[str, Any]]:
    """``messages`` (user and assistant turns) as chat messages: a user turn's tool results are tool messages of
    their own, sent first (chat wants them right after the assistant's calls), then the rest of its content."""
    items = expect(value, list, "messages", "an array of messages")
    if not items:
        raise Unsupported("must not be empty", "messages")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        param = f"messages[{i}]"
        expect(item, dict, param, "a message (an object)")
        role = item.get("role")
        if role not in ("user", "assistant"):
            raise Unsupported(f"must be 'user' or 'assistant', not {str(role)[:40]!r} (the system prompt is the "
                              "top-level `system`)", f"{param}.role")
        content = item.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        blocks = expect(content, list, f"{param}.content", "a string or an array of content blocks")
        out += _assistant(blocks, f"{param}.content") if role == "assistant" else _user(blocks, f"{param}.content")
    return out


def _block(blocks: list[Any], j: int, param: str) -> tuple[dict[str, Any], str, Any]:
    where = f"{param}[{j}]"
    block = expect(blocks[j], dict, where, "a content block (an object)")
    return block, where, block.get("type")


def _user(blocks: list[Any], param: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j in range(len(blocks)):
        block, where, kind = _block(blocks, j, param)
        if kind == "tool_result":
            message, images = _tool_result(block, where)
            results.append(message)
            parts += images  # a chat tool message carries text only: its images follow in the user's message
        elif kind in ("tool_use", "thinking", "redacted_thinking"):
            raise Unsupported(f"{kind} blocks belong in assistant turns", f"{where}.type")
        else:
            parts.append(_part(block, where, kind))
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _assistant(blocks: list[Any], param: str) -> list[dict[str, Any]]:
    """An earlier answer: its text (chat assistant messages take text only) and its tool calls."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j in range(len(blocks)):
        block, where, kind = _block(blocks, j, param)
        if kind == "text":
            texts.append(text_field(block, "text", where))
        elif kind == "tool_use":
            call_input = expect(block.get("input"), dict, f"{where}.input", "an object")
            calls.append(provider().tool_call(text_field(block, "id", where), named(block, where),
                                              call_input))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # a model's private reasoning replayed from another service: no chat upstream takes it
        else:
            raise Unsupported(f"content blocks of type {str(kind)[:40]!r} are not supported in an assistant turn "
                              "(moai takes text, tool_use and thinking blocks)", f"{where}.type",
                              "unsupported_parameter")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _part(block: dict[str, Any], where: str, kind: Any) -> dict[str, Any]:
    """A user content block (text, image, document) as a chat content part."""
    if kind == "text":
        return {"type": "text", "text": text_field(block, "text", where)}
    if kind == "image":
        source = expect(block.get("source"), dict, f"{where}.source", "an object")
        if source.get("type") == "file":
            raise Unsupported("moai keeps no files: send the image as base64 or by URL", f"{where}.source.type",
                              "unsupported_parameter")
        one_of(source.get("type"), IMAGE_SOURCES, f"{where}.source.type")
        if source.get("type") == "url":
            return {"type": "image_url", "image_url": {"url": text_field(source, "url", f"{where}.source")}}
        media = text_field(source, "media_type", f"{where}.source")
        data = text_field(source, "data", f"{where}.source")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if kind == "document":
        source = expect(block.get("source"), dict, f"{where}.source", "an object")
        if source.get("type") == "text":
            return {"type": "text", "text": text_field(source, "data", f"{where}.source")}
        if source.get("type") != "base64":
            raise Unsupported("moai keeps no files and fetches none: send the document as base64 or text",
                              f"{where}.source.type", "unsupported_parameter")
        media = text_field(source, "media_type", f"{where}.source")
        file = {"file_data": f"data:{media};base64,{text_field(source, 'data', f'{where}.source')}"}
        if block.get("title") is not None:
            file["filename"] = text_field(block, "title", where)
        return {"type": "file", "file": file}
    raise Unsupported(f"content blocks of type {str(kind)[:40]!r} are not supported in a user turn (moai takes "
                      "text, image, document and tool_result blocks)", f"{where}.type", "unsupported_parameter")


def _tool_result(block: dict[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tool result as a chat tool message (an error's text marked as one), and the images it held."""
    call_id = text_field(block, "tool_use_id", where)
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if content is None or isinstance(content, str):
        text = content or ""
    else:
        texts = []
        blocks = expect(content, list, f"{where}.content", "a string or an array of content blocks")
        for j in range(len(blocks)):
            inner, at, kind = _block(blocks, j, f"{where}.content")
            if kind not in ("text", "image", "document"):
                raise Unsupported(f"must be 'text', 'image' or 'document', not {str(kind)[:40]!r}", f"{at}.type")
            part = _part(inner, at, kind)
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                images.append(part)
        text = "\n".join(texts)
    if block.get("is_error") is not None and expect(block["is_error"], bool, f"{where}.is_error", "a boolean"):
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images


def _chat_tool(tool: Any, i: int) -> dict[str, Any]:
    """A client tool as a chat function tool; a server tool (run by Anthropic: web search, bash, computer use, the
    text editor, code execution, ...) is refused by its type."""
    param = f"tools[{i}]"
    expect(tool, dict, param, "a tool (an object)")
    kind = tool.get("type")
    if kind not in CLIENT_TOOL_TYPES:
        raise Unsupported(f"server tools such as {str(kind)[:40]!r} are run by Anthropic's servers and are not "
                          "supported here: moai serves client tools only (define the tool with name, description "
                          "and input_schema, and run it yourself)", f"{param}.type", "unsupported_parameter")
    spec: dict[str, Any] = {"name": named(tool, param),
                            "parameters": expect(tool.get("input_schema"), dict, f"{param}.input_schema",
                                                  "a JSON Schema object")}
    for name, types, what in (("description", str, "a string"), ("strict", bool, "a boolean")):
        if tool.get(name) is not None:
            spec[name] = expect(tool[name], types, f"{param}.{name}", what)
    return {"type": "function", "function": spec}


def _chat_tool_choice(choice: Any) -> tuple[str | dict[str, Any], bool | None]:
    """``tool_choice`` as chat's, and ``parallel_tool_calls`` (False where parallel calls are disabled): the
    inverse of the provider's ``to_anthropic_tool_choice``."""
    expect(choice, dict, "tool_choice", "an object")
    kind = choice.get("type")
    named = {provider().to_anthropic_tool_choice(c)["type"]: c for c in ("auto", "required", "none")}
    if kind == "tool":
        chat: str | dict[str, Any] = {"type": "function",
                                      "function": {"name": text_field(choice, "name", "tool_choice")}}
    elif isinstance(kind, str) and kind in named:
        chat = named[kind]
    else:
        raise Unsupported(f"must be 'auto', 'any', 'tool' or 'none', not {_shown(kind)}", "tool_choice.type")
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None:
        expect(disable, bool, "tool_choice.disable_parallel_tool_use", "a boolean")
    return chat, (False if disable and kind != "none" else None)


def _shown(value: Any) -> str:
    return repr(value[:40]) if isinstance(value, str) else kind_of(value)


# ------------------------------------------------------------------ response


def stop_reason(finish_reason: str | None, refused: bool = False) -> str:
    """Anthropic's stop reason for a chat finish reason: the inverse of the provider's ``STOP_REASONS`` (its first
    reason for each: ``stop`` is ``end_turn``, as the chat APIs do not say whether a stop sequence matched)."""
    if refused or finish_reason == "content_filter":
        return "refusal"
    inverse: dict[str, str] = {}
    for anthropic_reason, chat_reason in provider().STOP_REASONS.items():
        inverse.setdefault(chat_reason, anthropic_reason)
    return inverse.get(finish_reason or "stop", "end_turn")


def usage(u: dict[str, Any] | None) -> dict[str, Any]:
    """Chat usage as Anthropic counts it: ``input_tokens`` without the cached part, which is
    ``cache_read_input_tokens`` (cache writes, which no chat API reports apart, are in ``input_tokens``)."""
    u = u or {}
    prompt = u.get("prompt_tokens") or 0
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {"input_tokens": max(prompt - cached, 0), "output_tokens": u.get("completion_tokens") or 0,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached, "service_tier": "standard"}


def tool_use_block(call: dict[str, Any], fallback_id: str) -> dict[str, Any]:
    """A chat tool call as a ``tool_use`` block with its arguments parsed (the provider's own translation)."""
    block: dict[str, Any] = provider()._tool_use_block(call)
    block["id"] = block["id"] or fallback_id
    return block


def skeleton(mid: str, model: Any) -> dict[str, Any]:
    """A message before its content: what ``message_start`` carries and the final object starts from."""
    return {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": usage(None)}


def from_completion(completion: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """A chat completion (as the chat endpoint answers) as a message object."""
    suffix = completion["id"].removeprefix(CHAT_PREFIX)
    choice = completion["choices"][0]
    message = choice["message"]
    obj = skeleton(message_id(completion["id"]), completion["model"])
    calls = message.get("tool_calls") or []
    texts = [t for t in (message.get("content"), message.get("refusal")) if t]
    if texts or not calls:
        obj["content"].append({"type": "text", "text": "".join(texts)})
    obj["content"] += [tool_use_block(call, f"{TOOL_ID_PREFIX}{suffix}_{i}") for i, call in enumerate(calls)]
    obj["stop_reason"] = stop_reason(choice.get("finish_reason"), bool(message.get("refusal")))
    obj["usage"] = usage(completion.get("usage"))
    if "moai" in completion:
        obj["moai"] = noted(completion["moai"], payload)
    return obj


def noted(summary: Any, payload: dict[str, Any]) -> Any:
    """The ``moai`` object with ``thinking`` (taken but not applied) in its ``reason``."""
    return with_notes(summary, [THINKING_NOTE] if thinking_asked(payload) else [])


def translate(response: Response, payload: dict[str, Any], chat: dict[str, Any]) -> Response:
    """The chat path's answer as the Messages API gives it, headers kept: a completion as a message object, a
    stream as Anthropic's events (``messages_stream``, ``chat``'s estimated tokens its input usage until the
    upstream's count comes); an error as it is (``anthropic`` makes it Anthropic's), a chat param named as the
    request names it."""
    from moai.server.messages_stream import events

    mid = message_id(response.headers.get("x-moai-request-id") or "")
    return translated(response, lambda body: events(body, payload, mid, count_tokens(chat)), PARAM_NAMES,
                      lambda data: from_completion(data, payload))


# ------------------------------------------------------------------ errors


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status: the inverse of the provider's ``ERROR_STATUS``, any other 4xx an
    ``invalid_request_error`` and 5xx an ``api_error`` (a 503, this gateway's "try again shortly", is
    ``overloaded_error``, which Anthropic's clients retry)."""
    if status in MORE_ERROR_TYPES:
        return MORE_ERROR_TYPES[status]
    types = {code: kind for kind, code in provider().ERROR_STATUS.items()}
    return types.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_object(error: Any, status: int) -> dict[str, Any]:
    """An OpenAI error (the chat path's, or an in-stream one) as Anthropic's ``error``: its type from the status,
    its message as it was (a missing key's told the Messages way)."""
    error = error if isinstance(error, dict) else {}
    message = error.get("message") if isinstance(error.get("message"), str) else "request failed"
    if error.get("code") == "missing_api_key":
        message = MISSING_KEY
    return {"type": error_type(status), "message": message}


def anthropic(response: Response) -> Response:
    """An answer of the Messages endpoints as Anthropic's clients read it: an error as Anthropic's envelope (same
    status and headers), and every answer's id also as ``request-id`` (where Anthropic's SDKs read it)."""
    request_id = response.headers.get("x-request-id") or fresh_request_id()
    response.headers["x-request-id"] = request_id
    response.headers["request-id"] = request_id
    if response.status_code < 400 or getattr(response, "body_iterator", None) is not None:
        return response
    try:
        data = json.loads(bytes(response.body))
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    body = {"type": "error", "error": error_object(error, response.status_code), "request_id": request_id}
    return with_body(response, body)


# ------------------------------------------------------------------ count_tokens


def count_tokens(chat: dict[str, Any]) -> int:
    """The prompt's tokens as moai estimates them before routing (its messages' text, tool calls and tools: the
    figure its context checks use), not a model's tokenizer count."""
    from moai.mixture import request_tokens

    return request_tokens(chat["messages"], chat.get("tools"))
