"""The Messages API's translation both ways, without a server: a Messages request as the chat payload it means, a
chat completion (whole or streamed) as a message, the chat path's errors as Anthropic's, and ``x-api-key`` read as
the key on the Messages endpoints only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from moai.server import messages
from moai.server.messages import Unsupported, anthropic, authorization, from_completion, to_chat
from moai.server.messages_stream import events
from moai.server.translation import chat_id

HI = [{"role": "user", "content": "hi"}]


def chat(**payload: Any) -> dict[str, Any]:
    return to_chat({"model": "m", "max_tokens": 10, "messages": HI, **payload})


def refused(**payload: Any) -> Unsupported:
    with pytest.raises(Unsupported) as e:
        chat(**payload)
    return e.value


def test_request_fields_under_chat_names() -> None:
    out = chat(system="Be brief.", temperature=0.5, top_p=0.9, top_k=3, stop_sequences=["END"], stream=True,
               metadata={"user_id": "u"}, service_tier="standard_only", thinking={"type": "disabled"},
               moai={"models": ["m"]}, frobnicate=1)
    assert out == {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, *HI], "max_tokens": 10,
                   "temperature": 0.5, "top_p": 0.9, "top_k": 3, "stop": ["END"], "stream": True,
                   "stream_options": {"include_usage": True}, "user": "u", "moai": {"models": ["m"]},
                   "frobnicate": 1}  # a field neither API has: the chat path names it in moai.reason


@pytest.mark.parametrize(("choice", "expected", "parallel"), [
    ({"type": "auto"}, "auto", None),
    ({"type": "any"}, "required", None),
    ({"type": "none", "disable_parallel_tool_use": True}, "none", None),  # no call at all: nothing to disable
    ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
    ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}, None),
])
def test_tool_choice_is_the_providers_mapping_inverted(choice: dict[str, Any], expected: Any, parallel: Any) -> None:
    out = chat(tools=[{"name": "f", "input_schema": {"type": "object"}}], tool_choice=choice)
    assert out["tool_choice"] == expected and out.get("parallel_tool_calls") is parallel


def test_a_tool_result_with_images_sends_them_in_the_users_message() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    out = chat(messages=[{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "see"}, image]}]}])
    assert out["messages"] == [
        {"role": "tool", "tool_call_id": "t1", "content": "see"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]


def test_documents_as_file_and_text_parts() -> None:
    out = chat(messages=[{"role": "user", "content": [
        {"type": "document", "title": "a.pdf", "source": {"type": "base64", "media_type": "application/pdf",
                                                          "data": "JVBE"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}}]}])
    assert out["messages"][0]["content"] == [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
        {"type": "text", "text": "notes"}]


@pytest.mark.parametrize(("payload", "param"), [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}]},
     "messages[0].content[0].input"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}]}]},
     "messages[0].content[0].is_error"),
    ({"system": [{"type": "image"}]}, "system[0].type"),
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
    ({"tools": [{"type": "computer_20250124", "name": "computer"}]}, "tools[0].type"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"metadata": {"user_id": 5}}, "metadata.user_id"),
    ({"service_tier": "priority"}, "service_tier"),
    ({"thinking": {"type": "enabled", "budget_tokens": "lots"}}, "thinking.budget_tokens"),
    ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),  # Anthropic's rules, though it is not applied
    ({"thinking": {"type": "enabled", "budget_tokens": 1000}}, "thinking.budget_tokens"),
    ({"max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 2000}}, "thinking.budget_tokens"),
    ({"container": "c1"}, "container"),
    ({"max_completion_tokens": 5}, "max_completion_tokens"),
    ({"messages": [{"role": "user", "content": "x", "note": "\ud800"}]}, "messages[0].note"),
])
def test_what_cannot_be_translated_names_its_param(payload: dict[str, Any], param: str) -> None:
    assert refused(**payload).param == param


def test_count_tokens_needs_no_max_tokens() -> None:
    out = to_chat({"model": "m", "messages": HI, "system": "s", "tools": [{"name": "f", "input_schema": {}}],
                   "tool_choice": {"type": "any"}}, counting=True)
    assert "max_tokens" not in out and "tool_choice" not in out and len(out["messages"]) == 2


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-abc", "object": "chat.completion", "created": 1, "model": "moai/x",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                      "prompt_tokens_details": {"cached_tokens": 4}}, "moai": {"reason": []}}


def test_a_completion_as_a_message() -> None:
    call = {"id": "", "type": "function", "function": {"name": "f", "arguments": "not json"}}
    msg = from_completion(completion({"content": "", "tool_calls": [call]}, "tool_calls"),
                          {"thinking": {"type": "enabled", "budget_tokens": 2000}})
    assert msg["id"] == "msg_abc" and msg["stop_reason"] == "tool_use"
    # an id the upstream did not give is made up; arguments that are no JSON object are kept as the provider does
    assert msg["content"] == [{"type": "tool_use", "id": "toolu_abc_0", "name": "f", "input": {"_raw": "not json"}}]
    assert msg["usage"] == {"input_tokens": 6, "output_tokens": 2, "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": 4, "service_tier": "standard"}
    assert msg["moai"]["reason"] == [messages.THINKING_NOTE]
    refusal = from_completion(completion({"content": None, "refusal": "I cannot."}), {})
    assert refusal["stop_reason"] == "refusal" and refusal["content"] == [{"type": "text", "text": "I cannot."}]
    assert from_completion(completion({"content": "x"}, "content_filter"), {})["stop_reason"] == "refusal"
    assert from_completion(completion({"content": None}, "length"), {})["content"] == [{"type": "text", "text": ""}]


def test_message_ids_name_their_chat_completion() -> None:
    assert chat_id("msg_abc") == "chatcmpl-abc" == chat_id("resp_abc")
    assert messages.message_id("chatcmpl-abc") == "msg_abc"


def streamed(*chunks: Any, done: bool = True) -> list[tuple[str, dict[str, Any]]]:
    async def source() -> AsyncIterator[str]:
        for c in chunks:
            yield f"data: {json.dumps(c)}\n\n"
        if done:
            yield "data: [DONE]\n\n"

    async def read() -> list[str]:
        return [e async for e in events(source(), {"model": "moai/x"}, "msg_abc", 5)]

    out = []
    for text in asyncio.run(read()):
        name, data = text.strip().split("\n")
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def delta(**d: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-abc", "model": "moai/x", "choices": [{"index": 0, "delta": d, "finish_reason": None}]}


def test_stream_of_text_then_unnumbered_calls() -> None:
    out = streamed(delta(role="assistant", content=""), delta(content="Hi"),
                   delta(tool_calls=[{"id": "a", "function": {"name": "f", "arguments": '{"x":'}}]),
                   delta(tool_calls=[{"function": {"arguments": " 1}"}}]),
                   delta(tool_calls=[{"id": "b", "function": {"name": "g", "arguments": "{}"}}]),
                   {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "moai": {"id": "x"}},
                   {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}})
    names = [n for n, _ in out]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
                     "message_stop"]
    assert out[0][1]["message"]["usage"]["input_tokens"] == 5  # the estimate, until the upstream's count
    starts = [d["content_block"] for n, d in out if n == "content_block_start"]
    assert starts == [{"type": "text", "text": ""}, {"type": "tool_use", "id": "a", "name": "f", "input": {}},
                      {"type": "tool_use", "id": "b", "name": "g", "input": {}}]
    assert [d["index"] for n, d in out if n == "content_block_delta"] == [0, 1, 1, 2]
    end = out[-2][1]
    assert end["delta"]["stop_reason"] == "tool_use" and end["moai"] == {"id": "x"}
    assert (end["usage"]["input_tokens"], end["usage"]["output_tokens"]) == (9, 4)


def test_a_streamed_refusal_and_an_empty_answer() -> None:
    out = streamed(delta(role="assistant", content=""), delta(refusal="No."))
    assert out[-2][1]["delta"]["stop_reason"] == "refusal"
    assert [d["delta"] for n, d in out if n == "content_block_delta"] == [{"type": "text_delta", "text": "No."}]
    empty = streamed(delta(role="assistant", content=""), done=False)
    assert [n for n, _ in empty] == ["message_start", "ping", "content_block_start", "content_block_stop",
                                     "message_delta", "message_stop"]


@pytest.mark.parametrize(("code", "kind"), [("rate_limit_exceeded", "rate_limit_error"),
                                            ("request_timeout", "timeout_error"), ("upstream_failed", "api_error")])
def test_a_failure_after_the_start_is_an_error_event(code: str, kind: str) -> None:
    out = streamed(delta(role="assistant", content="a"),
                   {"error": {"message": "stream failed: x", "type": "server_error", "code": code}})
    assert out[-1] == ("error", {"type": "error", "error": {"type": kind, "message": "stream failed: x"}})
    assert "message_stop" not in [n for n, _ in out]


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (409, "invalid_request_error"), (413, "request_too_large"),
    (422, "invalid_request_error"), (429, "rate_limit_error"), (499, "invalid_request_error"), (500, "api_error"),
    (502, "api_error"), (503, "overloaded_error"), (504, "timeout_error")])
def test_chat_errors_as_anthropics(status: int, kind: str) -> None:
    response = JSONResponse({"error": {"message": "why", "type": "x", "param": None, "code": "c"}}, status,
                            headers={"x-request-id": "chatcmpl-1", "retry-after": "7"})
    out = anthropic(response)
    assert out.status_code == status
    assert json.loads(bytes(out.body)) == {"type": "error", "error": {"type": kind, "message": "why"},
                                           "request_id": "chatcmpl-1"}
    assert (out.headers["request-id"], out.headers["retry-after"]) == ("chatcmpl-1", "7")
    assert int(out.headers["content-length"]) == len(bytes(out.body))


@pytest.mark.parametrize(("path", "headers", "expected"), [
    ("/v1/messages", {"x-api-key": "k1"}, "Bearer k1"),
    ("/v1/messages/count_tokens", {"x-api-key": "k1"}, "Bearer k1"),
    ("/v1/messages", {"x-api-key": "k1", "authorization": "Bearer k2"}, "Bearer k2"),  # the bearer key wins
    ("/v1/messages", {"x-api-key": " "}, None),
    ("/v1/chat/completions", {"x-api-key": "k1"}, None),  # Anthropic's header on Anthropic's endpoints only
])
def test_x_api_key_is_the_key_on_the_messages_endpoints(path: str, headers: dict[str, str],
                                                         expected: str | None) -> None:
    assert authorization(path, Headers(headers)) == expected
