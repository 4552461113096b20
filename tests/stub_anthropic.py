"""A scriptable server that speaks Anthropic's Messages API on loopback, standing in for api.anthropic.com.

It answers ``POST /v1/messages`` as JSON or as Anthropic's SSE event stream (``message_start``,
``content_block_start``/``delta``/``stop``, ``ping``, ``message_delta`` with usage, ``message_stop``),
checks requests the way the real API does (alternating roles, no system role in ``messages``, a
``tool_result`` must answer a ``tool_use``), and fails on cue so retries and error mapping can be tested.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from stub_openai import free_port

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


@dataclass
class Script:
    """What the stub does: fail the first ``fail_times`` calls with ``fail_status``, then answer.

    ``tool_use`` (name, input) makes the answer a tool call when the request offers tools;
    ``stream_error`` sends an in-band ``error`` event (HTTP 200 already sent) after ``stream_error_after`` text
    deltas, 0 meaning right after ``message_start``; ``final_usage`` is what ``message_delta`` reports as its usage.
    """

    reply: str = "stub answer"
    tool_use: tuple[str, dict[str, Any]] | None = None
    stop_reason: str = "end_turn"
    fail_times: int = 0
    fail_status: int = 500
    retry_after: str | None = None  # a Retry-After header for a 429 or 5xx instead of the default retry-after-ms: 5
    stream_error: str | None = None
    stream_error_after: int = 1
    stream_error_message: str = "boom"
    final_usage: dict[str, int] | None = None  # message_delta's usage; default: the output tokens alone
    delay_s: float = 0.0
    input_tokens: int = 11
    cache_read_input_tokens: int = 0  # input read from Anthropic's prompt cache (counted apart from input_tokens)
    cache_creation_input_tokens: int = 0  # input written to the prompt cache (also apart from input_tokens)
    calls: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def validate(body: dict[str, Any]) -> str | None:
    """The checks the real API makes that a translation bug would trip; None when the request is valid."""
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not messages:
        return "messages: at least one message is required"
    if body.get("temperature") is not None and not 0 <= body["temperature"] <= 1:
        return "temperature: must be between 0 and 1"
    tool_ids: set[str] = set()
    prev = None
    for i, m in enumerate(messages):
        if m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if m["role"] == prev:
            return f"messages.{i}: roles must alternate between 'user' and 'assistant'"
        prev = m["role"]
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not blocks:
            return f"messages.{i}: content must be non-empty"
        for b in blocks:
            if b.get("type") == "text" and not b.get("text"):
                return f"messages.{i}: text content blocks must be non-empty"
            if b.get("type") == "tool_use":
                if m["role"] != "assistant" or not isinstance(b.get("input"), dict):
                    return f"messages.{i}: tool_use blocks belong to assistant turns and need an input object"
                tool_ids.add(b["id"])
            if b.get("type") == "tool_result" and b.get("tool_use_id") not in tool_ids:
                return f"messages.{i}: tool_result block(s) provided when previous message has no tool_use"
    for t in body.get("tools") or []:
        if "input_schema" not in t or "name" not in t:
            return "tools: each tool needs name and input_schema"
    choice = body.get("tool_choice")
    if choice is not None:
        kind = choice.get("type")
        allowed = {"auto": {"type", "disable_parallel_tool_use"}, "any": {"type", "disable_parallel_tool_use"},
                   "tool": {"type", "name", "disable_parallel_tool_use"}, "none": {"type"}}.get(kind)
        if allowed is None:
            return "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'"
        extra = sorted(set(choice) - allowed)
        if extra:
            return f"tool_choice.{kind}.{extra[0]}: Extra inputs are not permitted"
        if kind == "tool" and not choice.get("name"):
            return "tool_choice.tool.name: Field required"
        if not isinstance(choice.get("disable_parallel_tool_use", False), bool):
            return f"tool_choice.{kind}.disable_parallel_tool_use: Input should be a valid boolean"
    return None


def api_key(headers: Any) -> str | None:
    """The key from ``x-api-key`` or (what recent SDKs send) ``authorization: Bearer``."""
    auth = headers.get("authorization") or ""
    return headers.get("x-api-key") or (auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def make_app(script: Script) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/messages", response_model=None)
    async def messages(request: Request) -> Any:
        body = await request.json()
        script.calls += 1
        script.seen.append(body)
        script.headers.append(dict(request.headers))
        if script.calls <= script.fail_times:
            headers = {"retry-after-ms": "5"} if script.fail_status in (429, 529) else {}
            if script.retry_after is not None:
                headers = {"retry-after": script.retry_after}
            return error(script.fail_status, "scripted failure", headers)
        if not api_key(request.headers) or not request.headers.get("anthropic-version"):
            return error(401, "missing API key or anthropic-version")
        problem = validate(body)
        if problem:
            return error(400, problem)
        if script.delay_s:
            await asyncio.sleep(script.delay_s)
        words = script.reply.split(" ")
        blocks: list[dict[str, Any]] = [{"type": "text", "text": script.reply}]
        stop = script.stop_reason
        if script.tool_use and body.get("tools") and (body.get("tool_choice") or {}).get("type") != "none":
            name, args = script.tool_use
            blocks.append({"type": "tool_use", "id": f"toolu_{script.calls:04d}", "name": name, "input": args})
            stop = "tool_use"
        usage = {"input_tokens": script.input_tokens, "output_tokens": len(words),
                 "cache_creation_input_tokens": script.cache_creation_input_tokens,
                 "cache_read_input_tokens": script.cache_read_input_tokens}
        message = {"id": f"msg_{script.calls:04d}", "type": "message", "role": "assistant",
                   "model": body["model"], "content": blocks, "stop_reason": stop, "stop_sequence": None,
                   "usage": usage}
        if not body.get("stream"):
            return message

        stream_error = {"type": "error", "error": {"type": script.stream_error, "message": script.stream_error_message}}

        async def gen() -> Any:
            start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
            yield _sse("message_start", {"type": "message_start", "message": start})
            if script.stream_error and script.stream_error_after == 0:
                yield _sse("error", stream_error)
                return
            for index, block in enumerate(blocks):
                if block["type"] == "text":
                    yield _sse("content_block_start", {"type": "content_block_start", "index": index,
                                                       "content_block": {"type": "text", "text": ""}})
                    yield _sse("ping", {"type": "ping"})
                    for i, w in enumerate(words):
                        delta = {"type": "text_delta", "text": w if i == 0 else " " + w}
                        yield _sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                                           "delta": delta})
                        if script.stream_error and i + 1 == script.stream_error_after:
                            yield _sse("error", stream_error)
                            return
                else:
                    head = {**block, "input": {}}
                    yield _sse("content_block_start", {"type": "content_block_start", "index": index,
                                                       "content_block": head})
                    raw = json.dumps(block["input"])
                    for part in ("", raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                        delta = {"type": "input_json_delta", "partial_json": part}
                        yield _sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                                           "delta": delta})
                yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
            yield _sse("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": stop, "stop_sequence": None},
                                         "usage": script.final_usage or {"output_tokens": len(words)}})
            yield _sse("message_stop", {"type": "message_stop"})

        return StreamingResponse(gen(), media_type="text/event-stream")

    return app


class StubAnthropic:
    """Runs the stub in a background thread; ``url`` is its base (the SDK appends /v1/messages)."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.port = free_port()
        config = uvicorn.Config(make_app(self.script), host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> StubAnthropic:
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("stub server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
