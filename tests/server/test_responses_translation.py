"""The Responses API's translation both ways, without a server: what reaches the chat path, and how a chat stream
(text, refusals, tool calls numbered or not, a failure) is told as the Responses API's events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi.responses import JSONResponse

from moai.server import responses
from moai.server.responses import Unsupported, to_chat
from moai.server.responses_stream import events
from moai.server.translation import chat_id


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> str:
    obj = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 100, "model": "moai/default",
           "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(obj)}\n\n"


USAGE = "data: " + json.dumps({"id": "chatcmpl-abc", "choices": [], "usage": {
    "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 3},
    "completion_tokens_details": {"reasoning_tokens": 1}}}) + "\n\n"


def told(*chat: str) -> list[dict[str, Any]]:
    """The events (decoded, with their SSE event name checked) for a chat stream of ``chat`` chunks."""
    async def source() -> AsyncIterator[str]:
        for c in chat:
            yield c

    async def collect() -> list[str]:
        return [e async for e in events(source(), {"model": "moai/default", "input": "hi"}, "resp_abc")]

    out = []
    for text in asyncio.run(collect()):
        name, data = text.removesuffix("\n\n").split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        out.append(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def test_text_then_tool_calls_are_items_one_after_another() -> None:
    out = told(chunk({"role": "assistant", "content": ""}), chunk({"content": "Let me look."}),
               chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                      "function": {"name": "a", "arguments": '{"x"'}}]}),
               chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
               chunk({"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "b", "arguments": "{}"}}]}),
               chunk({}, "tool_calls", moai={"model": "m1"}), USAGE, "data: [DONE]\n\n")
    assert [e["type"] for e in out] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    final = out[-1]["response"]
    assert final["id"] == "resp_abc" and final["status"] == "completed" and final["moai"] == {"model": "m1"}
    assert [(i["type"], i.get("call_id"), i.get("arguments")) for i in final["output"]] == [
        ("message", None, None), ("function_call", "call_1", '{"x": 1}'), ("function_call", "call_2", "{}")]
    assert final["usage"] == {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 3}, "output_tokens": 2,
                              "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 7}
    # an item's added event carries it as it was then, its done event as it ended
    assert out[8]["item"]["arguments"] == "" and out[12]["item"]["arguments"] == '{"x": 1}'


def test_calls_without_an_index_are_told_apart_by_their_ids() -> None:
    out = told(chunk({"tool_calls": [{"id": "c1", "function": {"name": "a", "arguments": "{"}}]}),
               chunk({"tool_calls": [{"function": {"arguments": "}"}}]}),
               chunk({"tool_calls": [{"id": "c2", "function": {"name": "b", "arguments": "{}"}}]}),
               "data: [DONE]\n\n")
    final = out[-1]["response"]
    assert [(i["call_id"], i["name"], i["arguments"]) for i in final["output"]] == [("c1", "a", "{}"),
                                                                                    ("c2", "b", "{}")]


def test_refusal_and_a_cut_answer() -> None:
    out = told(chunk({"refusal": "I can't"}), chunk({"refusal": " help."}), chunk({}, "length"), "data: [DONE]\n\n")
    kinds = [e["type"] for e in out]
    assert kinds.count("response.refusal.delta") == 2 and "response.refusal.done" in kinds
    final = out[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    (message,) = final["response"]["output"]
    assert message["status"] == "incomplete" and message["content"] == [{"type": "refusal",
                                                                         "refusal": "I can't help."}]


def test_failure_mid_stream_is_response_failed_and_nothing_after() -> None:
    error = {"error": {"message": "stream failed: boom", "type": "server_error", "param": None,
                       "code": "upstream_failed"}}
    out = told(chunk({"content": "one"}), f"data: {json.dumps(error)}\n\n", "data: [DONE]\n\n")
    assert out[-1]["type"] == "response.failed" and out[-2]["type"] == "response.output_text.delta"
    failed = out[-1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "server_error",
                                                                "message": "stream failed: boom"}
    assert failed["output"][0]["content"][0]["text"] == "one"


def test_an_empty_answer_is_an_empty_message() -> None:
    out = told(chunk({"role": "assistant", "content": ""}), chunk({}, "stop"), "data: [DONE]\n\n")
    assert out[-1]["type"] == "response.completed"
    assert out[-1]["response"]["output"][0]["content"][0]["text"] == ""


def test_request_translation() -> None:
    chat = to_chat({"model": "moai/default", "input": "hi", "instructions": "Be brief.", "stream": True,
                    "reasoning": {"effort": "low"}, "user": "u1", "store": False, "metadata": {"a": "b"},
                    "truncation": "disabled", "text": {"format": {"type": "text"}, "verbosity": "low"},
                    "seed": 7, "moai": {"cache": False}, "include": ["reasoning.encrypted_content"]})
    assert chat == {"model": "moai/default", "messages": [{"role": "system", "content": "Be brief."},
                                                         {"role": "user", "content": "hi"}],
                    "stream": True, "stream_options": {"include_usage": True}, "reasoning_effort": "low",
                    "user": "u1", "response_format": {"type": "text"}, "seed": 7, "moai": {"cache": False}}
    # calls made alongside an answer's text are one assistant turn
    chat = to_chat({"model": "m", "input": [
        {"role": "user", "content": "go"}, {"role": "assistant", "content": "On it."},
        {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "b", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "ok"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []}]})
    assert chat["messages"][1:] == [
        {"role": "assistant", "content": "On it.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "ok"}]}]


@pytest.mark.parametrize(("payload", "param"), [
    ({"input": ""}, "input"), ({"input": []}, "input"), ({}, "input"),
    ({"input": "hi", "messages": []}, "messages"),
    ({"input": "hi", "reasoning": {"effort": "max"}}, "reasoning.effort"),
    ({"input": "hi", "metadata": {"k": 1}}, "metadata.k"),
    ({"input": "hi", "top_logprobs": 3}, "top_logprobs"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].file_id"),
    ({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}]},
     "input[0].content[0].type"),
])
def test_untranslatable_requests_name_their_param(payload: dict[str, Any], param: str) -> None:
    with pytest.raises(Unsupported) as e:
        to_chat({"model": "m", **payload})
    assert e.value.param == param and str(e.value).startswith(param + ":")


def test_chat_errors_name_the_responses_param() -> None:
    body = {"error": {"message": "max_tokens: Input should be less than or equal to 1048576", "type":
                      "invalid_request_error", "param": "max_tokens", "code": None}}
    out = responses.translate(JSONResponse(body, status_code=400), {})
    error = json.loads(bytes(out.body))["error"]
    assert error["param"] == "max_output_tokens" and error["message"].startswith("max_output_tokens: ")
    assert out.headers["content-length"] == str(len(out.body))
    other = JSONResponse({"error": {"message": "nope", "type": "x", "param": "model", "code": "model_not_found"}},
                         status_code=404)
    assert responses.translate(other, {}).body == other.body


def test_feedback_ids() -> None:
    assert responses.response_id("chatcmpl-abc") == "resp_abc"
    assert chat_id("resp_abc") == "chatcmpl-abc" and chat_id("chatcmpl-x") == "chatcmpl-x"


def test_completion_with_text_calls_or_a_refusal_as_output_items() -> None:
    def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
        return {"id": "chatcmpl-abc", "object": "chat.completion", "created": 100, "model": "moai/default",
                "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}, "moai": {"model": "m1"}}

    refused = responses.from_completion(completion({"content": None, "refusal": "No."}), {"model": "moai/default"})
    assert refused["output"] == [{"type": "message", "id": "msg_abc", "status": "completed", "role": "assistant",
                                  "content": [{"type": "refusal", "refusal": "No."}]}]
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    both = responses.from_completion(completion({"content": "Looking.", "tool_calls": [call]}, "tool_calls"), {})
    assert [i["type"] for i in both["output"]] == ["message", "function_call"]
    assert both["output"][1] == {"type": "function_call", "id": "fc_abc_0", "call_id": "call_1", "name": "f",
                                 "arguments": "{}", "status": "completed"}
    assert both["status"] == "completed" and both["moai"] == {"model": "m1"} and both["created_at"] == 100
