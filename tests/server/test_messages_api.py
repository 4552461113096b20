"""Anthropic's Messages API (POST /v1/messages) through the real server with Anthropic's official client: translated
to a chat request that takes the chat endpoint's path (upstream payload, recording, keys, limits, errors), and back,
streamed and not, with Anthropic's error envelope."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from servers import MoaiServer
from stub_openai import Script
from translated_support import recorded, rows, served
from typer.testing import CliRunner

from moai.cli import app as cli
from moai.server.auth import create_key
from moai.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

REPLY = "hello from stub"
ARGS = '{"city": "Paris", "unit": "celsius"}'
WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                            "required": ["city", "unit"]}}
HI = [{"role": "user", "content": "Say hi"}]


@dataclass
class Rig:
    server: MoaiServer
    scripts: dict[str, Script]

    def client(self, **kw: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.server.base, api_key=kw.pop("api_key", "x"), max_retries=0,
                                   timeout=30, **kw)

    def post(self, body: dict[str, Any], path: str = "/messages", **headers: str) -> httpx.Response:
        return httpx.post(self.server.url + path, json=body, headers=headers, timeout=30)

    def seen(self, name: str) -> dict[str, Any]:
        """What the upstream ``name`` received last."""
        return self.scripts[name].seen[-1]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    scripts = {"talker": Script(reply=REPLY), "caller": Script(tool_call=("get_weather", ARGS)),
               "cutter": Script(reply="one two three", finish_reason="length"),
               "dying": Script(reply="one two three four five", die_after_words=2)}
    mixes = {"default": "talker", "tools": "caller", "cut": "cutter", "dies": "dying"}
    with served(scripts, mixes, Path(tmp_path_factory.mktemp("messages")), card='sampling_extras: [top_k], ') as server:
        yield Rig(server, scripts)


def completion_id(message_id: str) -> str:
    assert message_id.startswith("msg_"), message_id
    return "chatcmpl-" + message_id.removeprefix("msg_")


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each Server-Sent Event."""
    out = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.split("\n") if ": " in line)
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_text_round_trip_with_the_anthropic_client_recorded_as_a_chat_request(rig: Rig) -> None:
    raw = rig.client().messages.with_raw_response.create(
        model="moai/default", max_tokens=50, system="Be brief.", messages=HI, metadata={"user_id": "user-42"},
        service_tier="auto", extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 5})  # the SDK lists them no more
    msg = raw.parse()
    assert (msg.type, msg.role, msg.model, msg.stop_reason, msg.stop_sequence) == (
        "message", "assistant", "moai/default", "end_turn", None)
    assert [(b.type, b.text) for b in msg.content] == [("text", REPLY)]
    assert (msg.usage.input_tokens, msg.usage.output_tokens, msg.usage.cache_read_input_tokens) == (7, 3, 0)
    # the system prompt is the upstream's leading system message; the settings reach it under chat's names
    sent = rig.seen("talker")
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["top_k"]) == (50, 0.2, 0.9, 5)
    # metadata.user_id is the chat request's user (sent on to OpenAI and Anthropic models, not to this server)
    assert not {"system", "metadata", "service_tier", "stop_sequences", "user"} & set(sent)
    # the chat endpoint's headers and moai object; the id is the chat completion's, also as Anthropic's request-id
    cid = raw.headers["x-request-id"]
    assert cid == raw.headers["x-moai-request-id"] == raw.headers["request-id"] == msg.model_extra["moai"]["id"]
    assert msg.id == "msg_" + cid.removeprefix("chatcmpl-")
    assert raw.headers["x-moai-model"] == "talker" and raw.headers["x-moai-mix"] == "default"
    assert recorded(rig.server.db, cid) == [("default", "talker", "ok", 7, 3)]
    # the message's id can be rated, at the endpoint and with the CLI
    rated = httpx.post(rig.server.url + "/feedback", json={"id": msg.id, "score": 1})
    assert rated.status_code == 200, rated.text
    r = CliRunner().invoke(cli, ["feedback", msg.id, "0.5", "--database-url", f"sqlite:///{rig.server.db}"])
    assert r.exit_code == 0, r.output
    assert rows(rig.server.db, "select score from feedback where request_id=?", cid) == [(0.5,)]


def test_system_blocks_images_and_earlier_turns_reach_the_upstream(rig: Rig) -> None:
    rig.client().messages.create(model="moai/default", max_tokens=20, system=[
        {"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be brief."}], messages=[
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                          {"type": "text", "text": "A dot."}]},
        {"role": "user", "content": "Sure?"}])
    assert rig.seen("talker")["messages"] == [
        {"role": "system", "content": [{"type": "text", "text": "Answer in French."},
                                       {"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
        {"role": "assistant", "content": "A dot."},  # its thinking is no chat upstream's to read
        {"role": "user", "content": "Sure?"}]


def test_tool_use_and_tool_result_round_trip(rig: Rig) -> None:
    c = rig.client()
    first = c.messages.create(model="moai/tools", max_tokens=100, messages=[{"role": "user", "content": "Weather?"}],
                              tools=[WEATHER], tool_choice={"type": "any", "disable_parallel_tool_use": True})
    (call,) = first.content
    assert (call.type, call.id, call.name, call.input) == ("tool_use", "call_stub1", "get_weather", json.loads(ARGS))
    assert first.stop_reason == "tool_use"
    sent = rig.seen("caller")
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": WEATHER["description"], "parameters": WEATHER["input_schema"]}}]
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    # the answer goes back as the next request's assistant turn, and the result in a user turn (an error marked)
    c.messages.create(model="moai/tools", max_tokens=100, tools=[WEATHER],
                      tool_choice={"type": "tool", "name": "get_weather"}, messages=[
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_stub1", "content": [{"type": "text", "text": "18 C"}]},
            {"type": "tool_result", "tool_use_id": "call_stub2", "content": "no such city", "is_error": True},
            {"type": "text", "text": "And tomorrow?"}]}])
    sent = rig.seen("caller")
    assert sent["messages"][1:] == [
        {"role": "assistant", "tool_calls": [
            {"id": "call_stub1", "type": "function", "function": {"name": "get_weather", "arguments": ARGS}}]},
        {"role": "tool", "tool_call_id": "call_stub1", "content": "18 C"},
        {"role": "tool", "tool_call_id": "call_stub2", "content": "Error: no such city"},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert "parallel_tool_calls" not in sent


def test_streamed_text_with_the_anthropic_client(rig: Rig) -> None:
    c = rig.client()
    with c.messages.stream(model="moai/default", max_tokens=50, system="Be brief.", messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == REPLY and final.content[0].text == REPLY and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (7, 3)  # the upstream's count, at the end
    assert rig.seen("talker")["messages"][0] == {"role": "system", "content": "Be brief."}
    assert recorded(rig.server.db, completion_id(final.id)) == [("default", "talker", "ok", 7, 3)]
    # the events as sent, in Anthropic's order (the SDK skips the ping)
    r = rig.post({"model": "moai/default", "max_tokens": 50, "messages": HI, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["request-id"] == r.headers["x-moai-request-id"]
    events = sse_events(r.text)
    assert [name for name, _ in events] == [
        "message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["content"] == [] and start["usage"]["input_tokens"] > 0
    assert [d["delta"] for n, d in events if n == "content_block_delta"] == [
        {"type": "text_delta", "text": t} for t in ("hello", " from", " stub")]
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 3 and delta["moai"]["model"] == "talker"


def test_streamed_tool_use_assembles_its_input(rig: Rig) -> None:
    with rig.client().messages.stream(model="moai/tools", max_tokens=100, tools=[WEATHER],
                                      messages=[{"role": "user", "content": "Weather?"}]) as stream:
        events = list(stream)
        final = stream.get_final_message()
    pieces = [e.delta.partial_json for e in events if e.type == "content_block_delta"]
    assert len(pieces) > 1 and "".join(pieces) == ARGS
    assert all(e.delta.type == "input_json_delta" for e in events if e.type == "content_block_delta")
    (call,) = final.content
    assert (call.type, call.id, call.name, call.input) == ("tool_use", "call_stub1", "get_weather", json.loads(ARGS))
    assert final.stop_reason == "tool_use"


def test_cut_at_max_tokens_and_stop_sequences(rig: Rig) -> None:
    c = rig.client()
    msg = c.messages.create(model="moai/cut", max_tokens=3, messages=HI, stop_sequences=["\n\nHuman:", "END"])
    assert msg.stop_reason == "max_tokens" and msg.content[0].text == "one two three"
    sent = rig.seen("cutter")
    assert sent["max_tokens"] == 3 and sent["stop"] == ["\n\nHuman:", "END"]
    with c.messages.stream(model="moai/cut", max_tokens=3, messages=HI) as stream:
        assert stream.get_final_message().stop_reason == "max_tokens"


def test_stream_failure_after_the_start_is_an_error_event(rig: Rig) -> None:
    r = rig.post({"model": "moai/dies", "max_tokens": 50, "messages": HI, "stream": True})
    assert r.status_code == 200
    events = sse_events(r.text)
    name, data = events[-1]
    assert name == "error" and data["error"]["type"] == "api_error" and "stream failed" in data["error"]["message"]
    assert "message_stop" not in [n for n, _ in events]
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "one two"
    assert recorded(rig.server.db, completion_id(events[0][1]["message"]["id"]))[0][2] == "error"
    with pytest.raises(anthropic.APIStatusError), rig.client().messages.stream(
            model="moai/dies", max_tokens=50, messages=HI) as stream:
        "".join(stream.text_stream)


@pytest.mark.parametrize(("body", "says"), [
    ({"max_tokens": None}, "max_tokens: required"),
    ({"max_tokens": "many"}, "max_tokens: must be a positive integer"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "'web_search_20250305' are run by Anthropic"),
    ({"tools": [WEATHER, {"type": "bash_20250124", "name": "bash"}]}, "tools[1].type: server tools"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content: must be a string or an array"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role: must be 'user' or 'assistant'"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
     "belong in assistant turns"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "moai keeps no files"),
    ({"system": 5}, "system: must be a string or an array"),
    ({"tool_choice": {"type": "required"}}, "tool_choice.type: must be 'auto', 'any', 'tool' or 'none'"),
    ({"stop_sequences": "END"}, "stop_sequences: must be an array"),
    ({"stop": ["END"]}, "`stop_sequences`"),
    ({"thinking": {"type": "on"}}, "thinking.type"),
    ({"mcp_servers": [{"type": "url", "url": "https://x"}]}, "MCP"),
    ({"temperature": 5}, "temperature"),  # checked by the chat path, under the same name
])
def test_what_cannot_be_served_is_an_anthropic_400(rig: Rig, body: dict[str, Any], says: str) -> None:
    calls = rig.scripts["talker"].calls
    r = rig.post({k: v for k, v in {"model": "moai/default", "max_tokens": 10, "messages": HI, **body}.items()
                  if v is not None})
    assert r.status_code == 400, r.text
    answer = r.json()
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    assert says in answer["error"]["message"], answer
    assert r.headers["request-id"] == r.headers["x-request-id"] == answer["request_id"]
    assert rig.scripts["talker"].calls == calls  # refused before any model ran


def test_client_errors_are_the_anthropic_clients_exceptions(rig: Rig) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        rig.client().messages.create(model="moai/default", max_tokens=10, messages=HI,
                                     tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert bad.value.body["error"]["type"] == "invalid_request_error" and bad.value.request_id
    with pytest.raises(anthropic.NotFoundError) as missing:
        rig.client().messages.create(model="moai/nope", max_tokens=10, messages=HI)
    assert missing.value.body["error"]["type"] == "not_found_error" and "moai/nope" in missing.value.message


def test_thinking_and_unknown_fields_are_taken_and_told(rig: Rig) -> None:
    msg = rig.client().messages.create(model="moai/default", max_tokens=2048, messages=HI,
                                       thinking={"type": "enabled", "budget_tokens": 1024},
                                       extra_body={"frobnicate": 1})
    reasons = msg.model_extra["moai"]["reason"]
    assert any(reason.startswith("request field thinking taken but not applied") for reason in reasons)
    assert any("frobnicate" in reason for reason in reasons)
    assert "thinking" not in rig.seen("talker") and msg.content[0].text == REPLY


def test_count_tokens(rig: Rig) -> None:
    counted = rig.client().messages.count_tokens(model="moai/default", system="Be brief.", messages=HI,
                                                 tools=[WEATHER])
    plain = rig.client().messages.count_tokens(model="moai/default", messages=HI)
    assert 0 < plain.input_tokens < counted.input_tokens
    r = rig.post({"model": "moai/nope", "messages": HI}, "/messages/count_tokens")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_unserved_paths_name_the_messages_endpoint(rig: Rig) -> None:
    r = httpx.post(rig.server.url + "/embeddings", json={})
    assert r.status_code == 404 and "POST /v1/messages" in r.json()["error"]["message"]


@pytest.mark.parametrize(("method", "path", "status", "kind"), [
    ("GET", "/messages", 405, "invalid_request_error"),
    ("GET", "/messages/count_tokens", 405, "invalid_request_error"),
    ("POST", "/messages/batches", 404, "not_found_error"),
])
def test_what_the_messages_paths_do_not_serve_is_told_in_anthropic_s_envelope(rig: Rig, method: str, path: str,
                                                                               status: int, kind: str) -> None:
    r = httpx.request(method, rig.server.url + path, json={})
    body = r.json()
    assert r.status_code == status and body["type"] == "error" and body["error"]["type"] == kind, body
    assert body["request_id"] == r.headers["request-id"] == r.headers["x-request-id"]


def test_gateway_keys_as_x_api_key_and_their_rate_limit(rig: Rig) -> None:
    """Last in this module: once a key exists, every request needs one."""
    store = TelemetryStore(f"sqlite:///{rig.server.db}")
    _, secret = create_key(store, "ci")
    _, limited = create_key(store, "slow", rpm=1)
    time.sleep(2.5)  # servers re-read the key table every 2 s
    r = rig.post({"model": "moai/default", "max_tokens": 10, "messages": HI})
    assert r.status_code == 401 and r.json()["error"] == {
        "type": "authentication_error", "message": "This gateway requires an API key: send 'x-api-key: <key>' (or "
                                                   "'Authorization: Bearer <key>')."}
    with pytest.raises(anthropic.AuthenticationError):
        rig.client(api_key="wrong").messages.create(model="moai/default", max_tokens=10, messages=HI)
    msg = rig.client(api_key=secret).messages.create(model="moai/default", max_tokens=10, messages=HI)
    assert msg.content[0].text == REPLY
    assert rows(rig.server.db, "select count(*) from requests r join api_keys k on r.api_key = k.id "
                               "where k.name='ci'") == [(1,)]
    assert rig.client(api_key=secret).messages.count_tokens(model="moai/default", messages=HI).input_tokens > 0
    _, narrow = create_key(store, "narrow", mixes=["other"])
    time.sleep(2.5)
    for call in (lambda c: c.messages.create(model="moai/default", max_tokens=10, messages=HI),
                 lambda c: c.messages.count_tokens(model="moai/default", messages=HI)):
        with pytest.raises(anthropic.PermissionDeniedError) as denied:  # a mix the key may not use: 403 both ways
            call(rig.client(api_key=narrow))
        assert "may not use mix 'default'" in denied.value.message
    # a bearer key is read as on the chat endpoint
    r = rig.post({"model": "moai/default", "max_tokens": 10, "messages": HI}, authorization=f"Bearer {secret}")
    assert r.status_code == 200, r.text
    slow = rig.client(api_key=limited)
    slow.messages.create(model="moai/default", max_tokens=10, messages=HI)
    with pytest.raises(anthropic.RateLimitError) as limited_error:
        slow.messages.create(model="moai/default", max_tokens=10, messages=HI)
    assert limited_error.value.status_code == 429
    assert limited_error.value.body["error"]["type"] == "rate_limit_error"
    assert int(limited_error.value.response.headers["retry-after"]) > 0
