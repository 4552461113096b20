"""Tool calls in OpenAI's format through the real server, on a local model that supports tools."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from servers import MoaiServer, start_moai, stop

from moai import local_models
from moai.providers.tool_calls import parse_tool_calls

WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def test_parser_accepts_only_offered_tools() -> None:
    tagged = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    fenced = '```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```'
    for text in (tagged, fenced):
        calls = parse_tool_calls(text, WEATHER)
        assert calls and calls[0]["function"]["name"] == "get_weather"
        assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    assert parse_tool_calls('{"name": "rm_rf", "arguments": {}}', WEATHER) is None
    assert parse_tool_calls("It is sunny in Oslo.", WEATHER) is None
    assert parse_tool_calls(tagged, None) is None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoaiServer]:
    local_models.pull("qwen2.5-coder-0.5b")
    cfg = """
models:
  qwen: {provider: local, package: qwen2.5-coder-0.5b, privacy: local, supports_tools: true, context: 4096}
  smol: {provider: local, package: smollm2-135m, privacy: local, context: 2048}
mixes:
  default: {strategy: route, max_tokens: 80}
  team: {strategy: moa, proposers: [qwen, smol], aggregator: qwen}
"""
    s = start_moai(cfg, Path(tmp_path_factory.mktemp("tools")))
    try:
        yield s
    finally:
        stop(s.proc)


@pytest.mark.integration
def test_tool_call_round_trip(server: MoaiServer) -> None:
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=300)
    messages: list = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = c.chat.completions.create(model="moai/default", messages=messages, tools=WEATHER, temperature=0)
    choice = first.choices[0]
    assert first.model_extra["moai"]["model"] == "qwen"  # smol's card has no tool support
    assert "smol" in first.model_extra["moai"]["decision"]["excluded"]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] == "Paris"
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 18, "sky": "clear"}'}]
    final = c.chat.completions.create(model="moai/default", messages=messages, tools=WEATHER, temperature=0)
    assert final.choices[0].finish_reason == "stop" and "18" in (final.choices[0].message.content or "")


@pytest.mark.integration
def test_tool_call_streamed(server: MoaiServer) -> None:
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=300)
    chunks = list(c.chat.completions.create(model="moai/default", stream=True, tools=WEATHER, temperature=0,
                                            messages=[{"role": "user", "content": "Weather in Rome?"}]))
    calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


@pytest.mark.integration
def test_collaboration_refuses_tools_clearly(server: MoaiServer) -> None:
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="moai/team", tools=WEATHER, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "tools_not_supported" and "moa" in e.value.body["message"]


NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.integration
def test_named_tool_choice_returns_that_call(server: MoaiServer) -> None:
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=300)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = c.chat.completions.create(model="qwen", messages=messages, tools=WEATHER, tool_choice=NAMED, temperature=0,
                                  max_tokens=24)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Paris"


@pytest.mark.integration
def test_named_tool_choice_streamed(server: MoaiServer) -> None:
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=300)
    with c.chat.completions.stream(model="qwen", tools=WEATHER, tool_choice=NAMED, temperature=0, max_tokens=24,
                                   messages=[{"role": "user", "content": "Weather in Rome?"}]) as s:
        final = s.get_final_completion()  # the client's own accumulation of the streamed pieces
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] == "Rome"


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_tool_choice_none_answers_in_text(server: MoaiServer, stream: bool) -> None:
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=300)
    kw = {"model": "qwen", "tools": WEATHER, "tool_choice": "none", "temperature": 0, "max_tokens": 12,
          "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}
    if stream:
        chunks = list(c.chat.completions.create(stream=True, **kw))
        deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
        assert not any(d.tool_calls for d in deltas)
        text = "".join(d.content or "" for d in deltas)
        finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    else:
        choice = c.chat.completions.create(**kw).choices[0]
        assert not choice.message.tool_calls
        text, finish = choice.message.content or "", [choice.finish_reason]
    assert text.strip() and "get_weather" not in text and finish in (["stop"], ["length"])
