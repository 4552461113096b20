"""What a Responses request is checked for before it is translated (the chat endpoint's own checks, under the
Responses names, for what the translation would otherwise drop or send on unchecked), and what the response
object repeats and adds: ``completed_at``, ``truncation``, fields taken but not applied, a failed stream's usage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from typer.testing import CliRunner

from moai.cli import app as cli
from moai.server import responses
from moai.server.responses import Unsupported, to_chat
from moai.server.responses_stream import events

TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
SCHEMA_FORMAT = {"type": "json_schema", "name": "place", "schema": {"type": "object"}}
ASKED_LOW = "request field text.verbosity taken but not applied"


def deep(levels: int) -> Any:
    value: Any = "y"
    for _ in range(levels):
        value = [value]
    return value


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"input": [{"role": "user", "content": list(parts)}]}


def refused(payload: dict[str, Any]) -> Unsupported:
    with pytest.raises(Unsupported) as e:
        to_chat({"model": "m", "input": "hi", **payload})
    assert str(e.value).startswith(f"{e.value.param}: ")
    return e.value


@pytest.mark.parametrize(("payload", "param"), [
    ({"input": [{"role": "user", "content": "x", "extra": deep(70)}]}, "input[0].extra" + "[0]" * 61),
    (user({"type": "input_text", "text": "x", "extra": deep(900)}), "input[0].content[0].extra" + "[0]" * 59),
    ({"text": {"format": {**SCHEMA_FORMAT, "schema": {"type": "object", "x": deep(70)}}}},
     "text.format.schema.x" + "[0]" * 60),
])
def test_nesting_past_64_levels_is_a_400_naming_where(payload: dict[str, Any], param: str) -> None:
    """Items' extra fields are dropped by the translation, so the chat endpoint's depth check never saw them."""
    e = refused(payload)
    assert e.param == param and "nested more than 64 levels deep" in str(e)


def test_nesting_at_the_limit_is_taken() -> None:
    """Guard: 61 arrays under an item's field (64 levels in all) is as deep as the chat endpoint takes."""
    to_chat({"model": "m", "input": [{"role": "user", "content": "x", "extra": deep(61)}]})


def test_a_lone_surrogate_is_named_where_the_request_has_it() -> None:
    e = refused({"input": [{"role": "user", "content": "x", "note": "\ud800"}]})
    assert e.param == "input[0].note" and "not valid Unicode" in str(e)


@pytest.mark.parametrize(("payload", "param", "says"), [
    ({"stream_options": {"include_obfuscation": False}}, "stream_options", "only allowed when stream is true"),
    ({"stream": False, "stream_options": {}}, "stream_options", "only allowed when stream is true"),
    ({"stream": True, "stream_options": "x"}, "stream_options", "an object"),
    ({"stream_options": 5}, "stream_options", "an object"),
    ({"stream": True, "stream_options": {"include_obfuscation": "no"}}, "stream_options.include_obfuscation",
     "a boolean"),
])
def test_stream_options_checked_as_on_the_chat_endpoint(payload: dict[str, Any], param: str, says: str) -> None:
    e = refused(payload)
    assert e.param == param and says in str(e)


def test_an_include_item_that_is_no_string_is_a_400() -> None:
    """It was looked up in a set: a list there was a TypeError, answered 500."""
    e = refused({"include": ["reasoning.encrypted_content", ["x"]]})
    assert e.param == "include[1]" and e.code == "unsupported_parameter"


def test_stream_options_with_a_stream_are_taken() -> None:
    """Guard: the chat path is asked for its usage chunk whatever the client's options."""
    chat = to_chat({"model": "m", "input": "hi", "stream": True, "stream_options": {"include_obfuscation": False}})
    assert chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(("payload", "param", "says"), [
    ({"tools": [{**TOOL, "strict": "yes"}]}, "tools[0].strict", "a boolean"),
    ({"tools": [{**TOOL, "parameters": "x"}]}, "tools[0].parameters", "a JSON Schema object"),
    ({"tools": [{**TOOL, "description": 5}]}, "tools[0].description", "a string"),
    ({"tools": [TOOL, {**TOOL, "name": 7}]}, "tools[1].name", "a string"),
    ({"text": {"format": {**SCHEMA_FORMAT, "name": ["x"]}}}, "text.format.name", "a string"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": "yes"}}]}, "tools[0].function.strict",
     "a boolean"),
    ({"text": {"format": {**SCHEMA_FORMAT, "strict": "yes"}}}, "text.format.strict", "a boolean"),
    ({"text": {"format": {**SCHEMA_FORMAT, "description": 5}}}, "text.format.description", "a string"),
    ({"text": {"verbosity": 5}}, "text.verbosity", "'low', 'medium', 'high'"),
    ({"text": {"verbosity": "loud"}}, "text.verbosity", "not 'loud'"),
    ({"truncation": 5}, "truncation", "'auto', 'disabled'"),
    (user({"type": "input_image", "image_url": "https://x/y.png", "detail": "ultra"}),
     "input[0].content[0].detail", "'low', 'high', 'auto', 'original'"),
    ({"input": [{"role": "user", "content": "x", "status": 5}]}, "input[0].status", "'completed'"),
    ({"input": [{"role": "user", "content": "x", "status": "done"}]}, "input[0].status", "'completed'"),
    ({"input": [{"type": "message", "role": "user", "content": "x", "id": 7}]}, "input[0].id", "a string"),
    ({"input": [{"role": "user", "content": "x"}, {"type": "function_call", "id": ["x"], "call_id": "c",
                                                   "name": "f", "arguments": "{}"}]}, "input[1].id", "a string"),
    (user({"type": "input_file", "file_id": "file_1"}), "input[0].content[0].file_id", "file_data"),
    (user({"type": "input_file", "file_url": "https://x/a.pdf"}), "input[0].content[0].file_url", "file_data"),
])
def test_wrong_values_are_a_400_naming_the_responses_param(payload: dict[str, Any], param: str, says: str) -> None:
    """Each was sent on (or echoed) as if valid, or refused by the chat path under its own names."""
    e = refused(payload)
    assert e.param == param and says in str(e)


def test_valid_values_are_sent_on() -> None:
    """Guard: what the checks take reaches the chat payload as before."""
    chat = to_chat({"model": "m", "truncation": "auto", "text": {"verbosity": "high", "format": {
        **SCHEMA_FORMAT, "strict": True, "description": "A place."}}, "tools": [{**TOOL, "strict": False}],
        "input": [{"type": "message", "id": "msg_1", "status": "completed", "role": "user", "content": [
            {"type": "input_image", "image_url": "https://x/y.png", "detail": "auto"}]}]})
    assert chat["tools"] == [{"type": "function", "function": {**{k: TOOL[k] for k in ("name", "parameters")},
                                                               "strict": False}}]
    assert chat["response_format"]["json_schema"] == {"name": "place", "schema": {"type": "object"},
                                                      "strict": True, "description": "A place."}
    assert chat["messages"] == [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "auto"}}]}]
    assert not {"truncation", "text", "verbosity"} & set(chat)


def test_names_and_details_the_openai_sdk_sends_are_taken_as_the_chat_endpoint_takes_them() -> None:
    """Guard of the chat endpoint's leniency: ``responses.parse`` names a format after its model (a generic one is
    ``Page[Item]``), and the SDK's image detail may be "original"; the upstream holds them to its own rules."""
    chat = to_chat({"model": "m", "text": {"format": {**SCHEMA_FORMAT, "name": "Page[Item]"}},
                    "tools": [{**TOOL, "name": "get weather"}], "input": [{"role": "user", "content": [
                        {"type": "input_image", "image_url": "https://x/y.png", "detail": "original"}]}]})
    assert chat["response_format"]["json_schema"]["name"] == "Page[Item]"
    assert chat["tools"][0]["function"]["name"] == "get weather"
    assert chat["messages"][0]["content"][0]["image_url"]["detail"] == "original"


def test_the_item_limit_counts_the_clients_items() -> None:
    items = [{"role": "user", "content": "x"}] * 1024
    assert len(to_chat({"model": "m", "input": items})["messages"]) == 1024
    e = refused({"input": [*items, {"role": "user", "content": "x"}]})
    assert e.param == "input" and str(e) == "input: 1025 items is more than the 1024 a request may hold"
    # the instructions are a message of their own: said so, not counted as a 1,025th item
    e = refused({"input": items, "instructions": "sys"})
    assert e.param == "input" and "1024 input items and the instructions make 1025 messages" in str(e)
    assert "the instructions count as one" in str(e)


def completion() -> dict[str, Any]:
    return {"id": "chatcmpl-abc", "object": "chat.completion", "created": 100, "model": "moai/default",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            "moai": {"model": "m1", "reason": ["gate: one model"]}}


def test_completed_at_is_whole_seconds_and_truncation_is_echoed() -> None:
    obj = responses.from_completion(completion(), {"model": "moai/default", "truncation": "auto"})
    assert isinstance(obj["completed_at"], int) and isinstance(obj["created_at"], int)
    assert obj["truncation"] == "auto"
    assert responses.from_completion(completion(), {})["truncation"] == "disabled"


def test_verbosity_taken_but_not_applied_is_told_in_the_reason() -> None:
    obj = responses.from_completion(completion(), {"model": "moai/default", "text": {"verbosity": "low"}})
    assert obj["moai"]["reason"][0] == "gate: one model"
    assert any(r.startswith(ASKED_LOW) for r in obj["moai"]["reason"])
    assert obj["text"]["verbosity"] == "low"
    plain = responses.from_completion(completion(), {"model": "moai/default"})
    assert plain["moai"]["reason"] == ["gate: one model"]


def chunk(**fields: Any) -> str:
    return "data: " + json.dumps({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 100,
                                  "model": "moai/default", **fields}) + "\n\n"


def streamed(payload: dict[str, Any], *chat: str) -> list[dict[str, Any]]:
    async def source() -> AsyncIterator[str]:
        for c in chat:
            yield c

    async def collect() -> list[str]:
        return [e async for e in events(source(), payload, "resp_abc")]

    return [json.loads(e.split("\n")[1].removeprefix("data: ")) for e in asyncio.run(collect())]


USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
ERROR = {"message": "stream failed: boom", "type": "server_error", "param": None, "code": "upstream_failed"}
TEXT = chunk(choices=[{"index": 0, "delta": {"content": "one"}, "finish_reason": None}])
FINISH = chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}], moai={"model": "m1", "reason": []})


@pytest.mark.parametrize("chat", [
    (TEXT, FINISH, chunk(choices=[], usage=USAGE), f"data: {json.dumps({'error': ERROR})}\n\n"),
    (TEXT, f"data: {json.dumps({'error': ERROR, 'usage': USAGE, 'moai': {'model': 'm1', 'reason': []}})}\n\n"),
])
def test_failed_carries_the_usage_and_moai_object_the_chat_stream_gave(chat: tuple[str, ...]) -> None:
    """As ``response.completed`` would: the request was billed for what was generated."""
    out = streamed({"model": "moai/default", "input": "hi"}, *chat, "data: [DONE]\n\n")
    assert out[-1]["type"] == "response.failed"
    failed = out[-1]["response"]
    assert failed["usage"] == {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0},
                               "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0},
                               "total_tokens": 7}
    assert failed["moai"]["model"] == "m1"


def test_streamed_completion_whole_seconds_and_verbosity_reason() -> None:
    payload = {"model": "moai/default", "input": "hi", "truncation": "auto", "text": {"verbosity": "medium"}}
    out = streamed(payload, TEXT, FINISH, chunk(choices=[], usage=USAGE), "data: [DONE]\n\n")
    final = out[-1]["response"]
    assert out[-1]["type"] == "response.completed" and isinstance(final["completed_at"], int)
    assert final["truncation"] == "auto" and out[0]["response"]["truncation"] == "auto"
    assert [r for r in final["moai"]["reason"] if r.startswith(ASKED_LOW)]


def test_serve_help_lists_the_responses_endpoint() -> None:
    out = CliRunner().invoke(cli, ["serve", "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0
    assert "POST /v1/responses" in " ".join(out.output.split())
