"""Replies from OpenAI-compatible upstreams that break the protocol's shapes are that upstream's failure (the
request moves on to the next model), and content sent as a list of text parts is read as its text."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from compat_support import close_providers, provider  # noqa: F401 - close_providers: an autouse fixture
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.providers import ChatParams, ProviderServerError
from moai.providers.openai_compat import OpenAICompatProvider
from moai.server.app import create_app

PARAMS = ChatParams(messages=[{"role": "user", "content": "hi"}], max_tokens=8)
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def upstream(body: Any = None, events: list[Any] | None = None) -> FastAPI:
    """An upstream answering every request with ``body`` (plain) or ``events`` (streamed, then [DONE])."""
    app = FastAPI()
    app.state.calls = 0

    @app.post("/v1/chat/completions", response_model=None)
    async def chat() -> Any:
        app.state.calls += 1
        if events is None:
            return JSONResponse(body)

        async def gen() -> AsyncIterator[str]:
            for e in events:
                yield f"data: {json.dumps(e)}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(gen(), media_type="text/event-stream")

    return app


def reply(message: Any = None, choice: Any = None) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "model": "m", "usage": USAGE,
            "choices": [choice if choice is not None else {"index": 0, "message": message, "finish_reason": "stop"}]}


@pytest.mark.parametrize("body", [
    {"choices": ["x"]},
    {"choices": [{"message": "hi"}]},
    {"choices": {"0": {"message": {"content": "hi"}}}},
    reply({"role": "assistant", "content": 42}),
    reply({"role": "assistant", "content": {"text": "hi"}}),
    reply({"role": "assistant", "content": None, "tool_calls": "get_weather()"}),
    reply({"role": "assistant", "content": None, "tool_calls": [{"function": "get_weather"}]}),
], ids=["choice-string", "message-string", "choices-object", "content-number", "content-object",
        "tool-calls-string", "tool-call-function-string"])
async def test_a_reply_of_the_wrong_shape_is_a_server_error(body: Any) -> None:
    with StubServer(app=upstream(body)) as s, pytest.raises(ProviderServerError, match="malformed response"):
        await provider(s.url, retries=0).complete(PARAMS)


@pytest.mark.parametrize("events", [
    [{"choices": ["x"]}],
    [{"choices": [{"delta": "hi"}]}],
    [{"choices": [{"delta": {"content": 7}}]}],
    [{"choices": [{"delta": {"tool_calls": {"name": "f"}}}]}],
], ids=["choice-string", "delta-string", "content-number", "tool-calls-object"])
async def test_a_stream_event_of_the_wrong_shape_is_a_server_error(events: list[Any]) -> None:
    with StubServer(app=upstream(events=events)) as s, pytest.raises(ProviderServerError, match="malformed"):
        [d async for d in provider(s.url, retries=0).stream(PARAMS)]


async def test_a_stream_error_given_as_a_string_is_named() -> None:
    with StubServer(app=upstream(events=[{"error": "overloaded, try later"}])) as s, \
            pytest.raises(ProviderServerError, match="overloaded, try later"):
        [d async for d in provider(s.url, retries=0).stream(PARAMS)]


async def test_content_as_text_parts_is_read_as_its_text() -> None:
    parts = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]
    with StubServer(app=upstream(reply({"role": "assistant", "content": parts}))) as s:
        out = await provider(s.url, retries=0).complete(PARAMS)
    assert out.text == "Hello, world" and out.finish_reason == "stop"
    events = [{"choices": [{"index": 0, "delta": {"content": parts}}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    with StubServer(app=upstream(events=events)) as s:
        deltas = [d async for d in provider(s.url, retries=0).stream(PARAMS)]
    assert "".join(d.text for d in deltas) == "Hello, world" and deltas[-1].finish_reason == "stop"


def two_models(bad: str, good: str) -> str:
    """A route mix whose free model ``bad`` is tried first, then ``good``."""
    return f"""
models:
  bad: {{provider: openai_compat, endpoint: "{bad}", privacy: private, max_retries: 0}}
  good: {{provider: openai_compat, endpoint: "{good}", privacy: private, max_retries: 0,
         price: {{input_per_mtok: 100, output_per_mtok: 100}}}}
mixes:
  default: {{strategy: route, models: [bad, good], fallbacks: [good], weights: {{quality: 0, cost: 1}}}}
"""


def answer_of(r: Any, stream: bool) -> str:
    assert r.status_code == 200, r.text
    return r.text if stream else r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("stream", [False, True])
def test_the_next_model_answers_when_one_replies_in_the_wrong_shape(stream: bool) -> None:
    broken = upstream({"choices": [{"message": "hi"}]}, [{"choices": ["x"]}] if stream else None)
    with StubServer(app=broken) as bad, StubServer(Script(reply="fine answer")) as good, \
            TestClient(create_app(parse_config(two_models(bad.url, good.url)))) as client:
        body = {"model": "bad", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        text = answer_of(client.post("/v1/chat/completions", json={**body, "model": "moai/default"}), stream)
        assert "fine" in text and "answer" in text
        assert broken.state.calls == 1  # the free model was chosen first
        alone = client.post("/v1/chat/completions", json=body)
        assert alone.status_code == 502 and alone.json()["error"]["code"] == "upstream_failed"


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_raising_an_unforeseen_exception_is_a_failed_try(stream: bool, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    real_complete, real_stream = OpenAICompatProvider.complete, OpenAICompatProvider.stream

    async def complete(self: OpenAICompatProvider, params: ChatParams) -> Any:
        if self.name == "bad":
            raise KeyError("choices")
        return await real_complete(self, params)

    async def stream_(self: OpenAICompatProvider, params: ChatParams) -> AsyncIterator[Any]:
        if self.name == "bad":
            raise KeyError("choices")
        async for d in real_stream(self, params):
            yield d

    monkeypatch.setattr(OpenAICompatProvider, "complete", complete)
    monkeypatch.setattr(OpenAICompatProvider, "stream", stream_)
    with StubServer(Script(reply="unused")) as bad, StubServer(Script(reply="fine answer")) as good, \
            TestClient(create_app(parse_config(two_models(bad.url, good.url)))) as client:
        r = client.post("/v1/chat/completions", json={"model": "moai/default", "stream": stream,
                                                      "messages": [{"role": "user", "content": "hi"}]})
        assert "fine" in answer_of(r, stream)
        if not stream:
            failed = [a for t in r.json()["moai"]["trace"] for a in t.get("attempts", []) if a["model"] == "bad"]
            assert failed and "KeyError" in failed[0]["error"]
    assert any("unexpected KeyError" in rec.getMessage() and rec.exc_info for rec in caplog.records)

