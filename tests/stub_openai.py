"""A scriptable OpenAI-compatible server on loopback, standing in for cloud providers in tests.

It speaks the real protocol (JSON and SSE) so moai's provider code runs unmodified against it; tests
script failures (status codes, delays, drops) to exercise retries and fallbacks.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Script:
    """What the stub does: fail the first ``fail_times`` calls with ``fail_status``, then answer."""

    reply: str = "stub answer"
    replies: list[str] | None = None  # per call, in order (the last one repeats)
    fail_times: int = 0
    fail_status: int = 500
    retry_after: str | None = "0"  # the Retry-After header sent with a 429 (None: no header)
    error_retry_after: str | None = None  # a Retry-After header sent with any other failure status
    delay_s: float = 0.0
    die_after_words: int | None = None  # streams: drop the connection after this many words (no [DONE])
    word_delay_s: float = 0.0  # streams: pause between words (a slow generator)
    tool_call: tuple[str, str] | None = None  # answer with a call (function name, JSON arguments) instead of text
    refuse: bool = False  # answer with the reply as OpenAI's message.refusal (content null) instead of text
    finish_reason: str = "stop"  # e.g. "length": the answer was cut off at the limit
    # more of OpenAI's usage, merged into it as sent (e.g. {"completion_tokens_details": {"reasoning_tokens": 3}})
    usage_extra: dict[str, Any] | None = None
    system_fingerprint: str | None = None  # sent on the response and on every chunk when set
    calls: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)


def make_app(script: Script) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "stub", "object": "model"}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        body = await request.json()
        script.calls += 1
        script.seen.append(body)
        if script.calls <= script.fail_times:
            limited = script.fail_status == 429 and script.retry_after is not None
            headers = {"retry-after": script.retry_after} if limited else {}
            if script.fail_status != 429 and script.error_retry_after is not None:
                headers = {"retry-after": script.error_retry_after}
            return JSONResponse({"error": {"message": "scripted failure", "type": "server_error"}},
                                status_code=script.fail_status, headers=headers)
        if script.delay_s:
            await asyncio.sleep(script.delay_s)
        reply = script.replies[min(script.calls, len(script.replies)) - 1] if script.replies else script.reply
        words = reply.split(" ")
        usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words),
                 **(script.usage_extra or {})}
        fingerprint = {"system_fingerprint": script.system_fingerprint} if script.system_fingerprint else {}
        if script.tool_call is not None:
            return _tool_call_reply(body, *script.tool_call, usage)
        if body.get("stream"):
            async def gen() -> Any:
                base = {"id": "stub-1", "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": body["model"], **fingerprint}
                for i, w in enumerate(words):
                    if script.die_after_words is not None and i >= script.die_after_words:
                        await asyncio.sleep(0.05)  # let the words already sent reach the client
                        raise ConnectionAbortedError("scripted: died mid-stream")
                    if script.word_delay_s:
                        await asyncio.sleep(script.word_delay_s)
                    delta = {"refusal" if script.refuse else "content": w if i == 0 else " " + w}
                    yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta}]})}\n\n"
                fin = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": script.finish_reason}]}
                yield f"data: {json.dumps(fin)}\n\n"
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(gen(), media_type="text/event-stream")
        return {
            "id": "stub-1", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": reply}
                         if script.refuse else {"role": "assistant", "content": reply},
                         "finish_reason": script.finish_reason}],
            "usage": usage, **fingerprint,
        }

    return app


def _tool_call_reply(body: dict[str, Any], name: str, arguments: str, usage: dict[str, int]) -> Any:
    """A tool call, as OpenAI sends it: whole, or streamed with the arguments in 4-character pieces (as real
    streams split them, anywhere)."""
    call = {"id": "call_stub1", "type": "function", "function": {"name": name, "arguments": arguments}}
    base = {"id": "stub-1", "created": int(time.time()), "model": body["model"]}
    if not body.get("stream"):
        return {**base, "object": "chat.completion", "usage": usage,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                             "finish_reason": "tool_calls"}]}

    async def gen() -> Any:
        chunk = {**base, "object": "chat.completion.chunk"}
        first = {"index": 0, **call, "function": {"name": name, "arguments": ""}}
        yield f"data: {json.dumps({**chunk, 'choices': [{'index': 0, 'delta': {'tool_calls': [first]}}]})}\n\n"
        for i in range(0, len(arguments), 4):
            piece = {"index": 0, "function": {"arguments": arguments[i:i + 4]}}
            yield f"data: {json.dumps({**chunk, 'choices': [{'index': 0, 'delta': {'tool_calls': [piece]}}]})}\n\n"
        fin = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
        yield f"data: {json.dumps(fin)}\n\n"
        yield "data: [DONE]\n\n"
    return StreamingResponse(gen(), media_type="text/event-stream")


class StubServer:
    """Runs the stub in a background thread; ``url`` is its /v1 base."""

    def __init__(self, script: Script | None = None, app: Any = None) -> None:
        """``app``: another ASGI app to serve in the stub's place (an upstream with behaviour of its own)."""
        self.script = script or Script()
        self.port = free_port()
        config = uvicorn.Config(app or make_app(self.script), host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> StubServer:
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


ECHOED_SECRET = "sk-upstream-SECRET-4567"


def echoing_upstream() -> FastAPI:
    """An upstream that refuses every request with a message echoing its Authorization header and its hosts."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        auth = request.headers.get("authorization") or ""
        said = (f"Bad request; key={auth}; unknown credential {auth.removeprefix('Bearer ')}; "
                "see https://internal.corp/x, 10.9.8.7")
        return JSONResponse({"error": {"message": said, "type": "invalid_request_error"}}, status_code=400)

    return app
