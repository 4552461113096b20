"""OpenAI's Responses API (POST /v1/responses) through the real server with the official client: translated to a
chat request that takes the chat endpoint's path (upstream payload, recording, keys, errors), and back, streamed
and not."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel
from servers import MoaiServer
from stub_openai import Script
from translated_support import recorded, rows, served
from typer.testing import CliRunner

from moai.cli import app as cli

pytestmark = pytest.mark.integration

REPLY = "hello from stub"
ARGS = '{"city": "Paris", "unit": "celsius"}'
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                          "required": ["city", "unit"], "additionalProperties": False}, "strict": True}


def nested(levels: int) -> Any:
    """A value ``levels`` arrays deep."""
    value: Any = "y"
    for _ in range(levels):
        value = [value]
    return value


class Place(BaseModel):
    city: str


@dataclass
class Rig:
    server: MoaiServer
    scripts: dict[str, Script]

    def client(self, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.url, api_key=kw.pop("api_key", "x"), max_retries=0, timeout=30,
                             **kw)

    def post(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return httpx.post(self.server.url + "/responses", json=body, headers=headers, timeout=30)

    def seen(self, name: str) -> dict[str, Any]:
        """What the upstream ``name`` received last."""
        return self.scripts[name].seen[-1]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    scripts = {"talker": Script(reply=REPLY), "caller": Script(tool_call=("get_weather", ARGS)),
               "cutter": Script(reply="one two three", finish_reason="length"),
               "jsoner": Script(reply='{"city": "Paris"}'),
               "dying": Script(reply="one two three four five", die_after_words=2)}
    mixes = {"default": "talker", "tools": "caller", "cut": "cutter", "json": "jsoner", "dies": "dying"}
    with served(scripts, mixes, Path(tmp_path_factory.mktemp("responses"))) as server:
        yield Rig(server, scripts)


def test_text_in_and_out_recorded_as_a_chat_request(rig: Rig) -> None:
    raw = rig.client().responses.with_raw_response.create(
        model="moai/default", input="Say hi", instructions="Be brief.", metadata={"team": "qa"}, temperature=0.2,
        max_output_tokens=50, store=False)
    resp = raw.parse()
    assert resp.object == "response" and resp.status == "completed" and resp.output_text == REPLY
    (item,) = resp.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert [(c.type, c.text, c.annotations) for c in item.content] == [("output_text", REPLY, [])]
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (7, 3, 10)
    assert resp.usage.input_tokens_details.cached_tokens == 0
    assert resp.usage.output_tokens_details.reasoning_tokens == 0
    # the request's own settings echoed, as OpenAI's response objects do
    assert (resp.instructions, resp.metadata, resp.temperature, resp.max_output_tokens) == (
        "Be brief.", {"team": "qa"}, 0.2, 50)
    assert resp.model == "moai/default" and resp.tool_choice == "auto" and resp.tools == []
    # the instructions are the upstream's leading system message; max_output_tokens its max_tokens
    sent = rig.seen("talker")
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.2
    assert not {"metadata", "store", "instructions", "input"} & set(sent)
    # the chat endpoint's extension object and headers; the id is the chat completion's
    summary = resp.model_extra["moai"]
    assert summary["model"] == "talker" and summary["mix"] == "default" and summary["cost_usd"] > 0
    completion_id = raw.headers["x-request-id"]
    assert completion_id == raw.headers["x-moai-request-id"] == summary["id"]
    assert resp.id == "resp_" + completion_id.removeprefix("chatcmpl-")
    assert raw.headers["x-moai-model"] == "talker" and raw.headers["x-moai-mix"] == "default"
    # recorded as one request, with its tokens
    assert recorded(rig.server.db, completion_id) == [("default", "talker", "ok", 7, 3)]
    # the response's id can be rated
    rated = httpx.post(rig.server.url + "/feedback", json={"id": resp.id, "score": 1})
    assert rated.status_code == 200, rated.text
    assert rows(rig.server.db, "select count(*) from feedback where request_id=?", completion_id) == [(1,)]


def test_input_items_and_content_parts_reach_the_upstream(rig: Rig) -> None:
    image = "data:image/png;base64,iVBORw0KGgo="
    rig.client().responses.create(model="moai/default", input=[
        {"role": "developer", "content": "Answer in French."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                                        {"type": "input_image", "image_url": image, "detail": "low"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A dot."}]},
        {"role": "user", "content": "Sure?"}])
    assert rig.seen("talker")["messages"] == [
        {"role": "system", "content": "Answer in French."},  # a developer message, as the chat path sends it
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": image, "detail": "low"}}]},
        {"role": "assistant", "content": "A dot."},
        {"role": "user", "content": "Sure?"}]


def test_function_tools_round_trip(rig: Rig) -> None:
    c = rig.client()
    first = c.responses.create(model="moai/tools", input="Weather in Paris?", tools=[WEATHER],
                               tool_choice="required", parallel_tool_calls=False)
    (call,) = first.output
    assert call.type == "function_call" and call.status == "completed"
    assert (call.name, call.arguments, call.call_id) == ("get_weather", ARGS, "call_stub1")
    assert first.status == "completed" and first.tools[0].name == "get_weather"
    sent = rig.seen("caller")
    assert sent["tools"] == [{"type": "function", "function": {k: WEATHER[k] for k in (
        "name", "description", "parameters", "strict")}}]
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    # the call's output goes back as the next request's input: a tool message after the assistant's call
    c.responses.create(model="moai/tools", tools=[WEATHER], input=[
        {"role": "user", "content": "Weather in Paris?"}, *first.output,
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature_c": 18}'}],
        tool_choice={"type": "function", "name": "get_weather"})
    sent = rig.seen("caller")
    assert sent["messages"][1:] == [
        {"role": "assistant", "tool_calls": [
            {"id": "call_stub1", "type": "function", "function": {"name": "get_weather", "arguments": ARGS}}]},
        {"role": "tool", "tool_call_id": "call_stub1", "content": '{"temperature_c": 18}'}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_json_schema_format_is_the_upstream_response_format(rig: Rig) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    fmt = {"type": "json_schema", "name": "place", "schema": schema, "strict": True}
    resp = rig.client().responses.create(model="moai/json", input="Where?", text={"format": fmt})
    assert json.loads(resp.output_text) == {"city": "Paris"}
    assert resp.text.format.type == "json_schema"
    assert rig.seen("jsoner")["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}}
    rig.client().responses.create(model="moai/json", input="Where?", text={"format": {"type": "json_object"}})
    assert rig.seen("jsoner")["response_format"] == {"type": "json_object"}
    # the SDK's structured outputs: a pydantic model as the schema, the answer parsed into it
    parsed = rig.client().responses.parse(model="moai/json", input="Where?", text_format=Place)
    assert parsed.output_parsed == Place(city="Paris")
    assert rig.seen("jsoner")["response_format"]["json_schema"]["name"] == "Place"


def test_cut_at_max_output_tokens_is_incomplete(rig: Rig) -> None:
    c = rig.client()
    resp = c.responses.create(model="moai/cut", input="Count.", max_output_tokens=3)
    assert rig.seen("cutter")["max_tokens"] == 3
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    assert resp.output[0].status == "incomplete" and resp.output_text == "one two three"
    events = list(c.responses.create(model="moai/cut", input="Count.", max_output_tokens=3, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert "response.completed" not in [e.type for e in events]


def test_streamed_text_events_in_order(rig: Rig) -> None:
    c = rig.client()
    with c.responses.stream(model="moai/default", input="Say hi", instructions="Be brief.") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["hello", " from", " stub"]
    assert final.output_text == REPLY and final.status == "completed"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (7, 3)  # asked upstream for, on the client's behalf
    assert final.model_extra["moai"]["model"] == "talker"
    assert final.id == events[0].response.id and final.id.startswith("resp_")
    assert rig.seen("talker")["messages"][0] == {"role": "system", "content": "Be brief."}
    completion_id = "chatcmpl-" + final.id.removeprefix("resp_")
    assert recorded(rig.server.db, completion_id) == [("default", "talker", "ok", 7, 3)]
    # iterated raw, as create(stream=True) gives them
    raw = list(c.responses.create(model="moai/default", input="Say hi", stream=True))
    assert "".join(e.delta for e in raw if e.type == "response.output_text.delta") == REPLY
    assert raw[-1].type == "response.completed" and raw[-1].response.output[0].content[0].text == REPLY


def test_streamed_function_call(rig: Rig) -> None:
    with rig.client().responses.stream(model="moai/tools", input="Weather?", tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                          "response.completed"]
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) > 1 and "".join(deltas) == ARGS
    (call,) = final.output
    assert (call.type, call.name, call.arguments, call.call_id) == ("function_call", "get_weather", ARGS,
                                                                    "call_stub1")


def test_stream_failure_after_the_start_is_response_failed(rig: Rig) -> None:
    events = list(rig.client().responses.create(model="moai/dies", input="Go.", stream=True))
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error" and "stream failed" in failed.error.message
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two"
    assert "response.completed" not in [e.type for e in events]
    completion_id = "chatcmpl-" + failed.id.removeprefix("resp_")
    assert recorded(rig.server.db, completion_id)[0][2] == "error"


@pytest.mark.parametrize(("body", "param", "says"), [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", "'web_search'"),
    ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[1].type", "'file_search'"),
    ({"previous_response_id": "resp_123"}, "previous_response_id", "send the earlier turns in `input`"),
    ({"conversation": "conv_1"}, "conversation", "`input`"),
    ({"background": True}, "background", "background"),
    ({"reasoning": {"effort": "high", "summary": "auto"}}, "reasoning.summary", "summaries"),
    ({"include": ["reasoning.encrypted_content", "message.output_text.logprobs"]}, "include[1]",
     "message.output_text.logprobs"),
    ({"input": 42}, "input", "a string or an array"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content", "a string or an array"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "'user'"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type", "send the item itself"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id", "a string"),
    ({"instructions": ["be brief"]}, "instructions", "a string"),
    ({"max_output_tokens": "many"}, "max_output_tokens", "positive integer"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name", "a string"),
    ({"tool_choice": {"type": "web_search"}}, "tool_choice.type", "'web_search'"),
    ({"max_tokens": 10}, "max_tokens", "max_output_tokens"),
    ({"temperature": 5}, "temperature", "temperature"),  # checked by the chat path, under the same name
    # the chat endpoint's checks, on what the translation would drop or send on unchecked
    ({"input": [{"role": "user", "content": "x", "extra": nested(70)}]},
     "input[0].extra" + "[0]" * 61, "nested more than 64 levels deep"),
    ({"stream_options": {"include_obfuscation": False}}, "stream_options", "only allowed when stream is true"),
    ({"tools": [{**WEATHER, "strict": "yes"}]}, "tools[0].strict", "a boolean"),
    ({"tools": [{**WEATHER, "parameters": "x"}]}, "tools[0].parameters", "a JSON Schema object"),
    ({"text": {"verbosity": 5}}, "text.verbosity", "'low', 'medium', 'high'"),
    ({"truncation": 5}, "truncation", "'auto', 'disabled'"),
    ({"input": [{"role": "user", "content": "x"}] * 1024, "instructions": "sys"}, "input",
     "the instructions count as one"),
])
def test_what_cannot_be_served_is_a_400_naming_its_param(rig: Rig, body: dict[str, Any], param: str,
                                                          says: str) -> None:
    calls = rig.scripts["talker"].calls
    r = rig.post({"model": "moai/default", "input": "hi", **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and says in error["message"] and error["type"] == "invalid_request_error"
    assert r.headers["x-request-id"]
    assert rig.scripts["talker"].calls == calls  # refused before any model ran
    with pytest.raises(openai.BadRequestError):
        rig.client().responses.create(model="moai/default", input="hi", extra_body=body)


def test_echoed_settings_and_fields_taken_but_not_applied(rig: Rig) -> None:
    r = rig.post({"model": "moai/default", "input": "hi", "truncation": "auto", "text": {"verbosity": "low"}})
    assert r.status_code == 200, r.text
    resp = r.json()
    assert isinstance(resp["completed_at"], int) and resp["completed_at"] >= resp["created_at"]
    assert resp["truncation"] == "auto" and resp["text"]["verbosity"] == "low"
    assert any(reason.startswith("request field text.verbosity taken but not applied")
               for reason in resp["moai"]["reason"])
    assert "verbosity" not in rig.seen("talker")


def metric(rig: Rig, name: str, **labels: str) -> float:
    """A counter's value in /metrics (0 when not yet counted)."""
    for family in text_string_to_metric_families(httpx.get(rig.server.base + "/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_counted_in_the_metrics_as_chat_requests(rig: Rig) -> None:
    answered = metric(rig, "moai_requests_total", mix="default", model="talker", status="ok")
    refused = metric(rig, "moai_rejected_requests_total", status="400", code="unsupported_parameter")
    rig.client().responses.create(model="moai/default", input="hi")
    assert rig.post({"model": "moai/default", "input": "hi", "previous_response_id": "resp_1"}).status_code == 400
    assert metric(rig, "moai_requests_total", mix="default", model="talker", status="ok") == answered + 1
    assert metric(rig, "moai_rejected_requests_total", status="400", code="unsupported_parameter") == refused + 1


def test_chat_path_errors_and_unknown_fields_as_for_chat(rig: Rig) -> None:
    r = rig.post({"model": "moai/nope", "input": "hi"})
    chat = httpx.post(rig.server.url + "/chat/completions",
                      json={"model": "moai/nope", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == chat.status_code == 404 and r.json() == chat.json()
    # a field neither API has is taken and told in moai.reason, as the chat endpoint does
    resp = rig.client().responses.create(model="moai/default", input="hi", extra_body={"frobnicate": 1})
    assert any("frobnicate" in reason for reason in resp.model_extra["moai"]["reason"])
    # the moai extension object reaches the chat path as it is: refused as there
    narrowed = {"models": ["caller"]}
    r = rig.post({"model": "moai/default", "input": "hi", "moai": narrowed})
    chat = httpx.post(rig.server.url + "/chat/completions", json={
        "model": "moai/default", "messages": [{"role": "user", "content": "hi"}], "moai": narrowed})
    assert r.status_code == chat.status_code == 422 and r.json() == chat.json()
    assert "moai.models" in r.json()["error"]["message"]


def test_gateway_keys_apply(rig: Rig) -> None:
    """Last in this module: once a key exists, every request needs one."""
    r = CliRunner().invoke(cli, ["keys", "create", "--database-url", f"sqlite:///{rig.server.db}", "--name", "ci"])
    assert r.exit_code == 0, r.output
    key = r.output.strip().splitlines()[-1]
    time.sleep(2.5)  # servers re-read the key table every 2 s
    r = rig.post({"model": "moai/default", "input": "hi"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError):
        rig.client(api_key="wrong").responses.create(model="moai/default", input="hi")
    resp = rig.client(api_key=key).responses.create(model="moai/default", input="hi")
    assert resp.output_text == REPLY
    assert rows(rig.server.db, "select count(*) from requests r join api_keys k on r.api_key = k.id "
                               "where k.name='ci'") == [(1,)]
