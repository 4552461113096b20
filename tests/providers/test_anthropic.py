"""The anthropic provider over real HTTP against a Messages-API stub: translation both ways, streaming,
tools, usage, retries and typed errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rate_limit_support import failed_at_once, raised_at_once
from stub_anthropic import Script, StubAnthropic, api_key
from stub_openai import free_port

from moai.catalog import ModelCard
from moai.providers import (
    ChatParams,
    ProviderError,
    ProviderRateLimited,
    ProviderRequestError,
    ProviderServerError,
    ProviderUnavailable,
    make_provider,
)
from moai.providers.anthropic import (
    AnthropicProvider,
    to_anthropic_messages,
    to_anthropic_tool_choice,
    to_anthropic_tools,
)
from moai.providers.base import ProviderAuthError

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PARAMS = ChatParams(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                    max_tokens=8)


def provider(url: str, retries: int = 2) -> AnthropicProvider:
    card = ModelCard(name="claude", provider="anthropic", endpoint=url, model="claude-test",
                     api_key_env="MOAI_TEST_ANTHROPIC_KEY", max_retries=retries, timeout_s=5)
    p = make_provider(card)
    assert isinstance(p, AnthropicProvider)
    return p


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOAI_TEST_ANTHROPIC_KEY", "sk-ant-test")


# ---------------------------------------------------------------- translation (pure)


def test_system_messages_become_the_system_field_and_turns_alternate() -> None:
    system, turns = to_anthropic_messages([
        {"role": "system", "content": "A"}, {"role": "developer", "content": "B"},
        {"role": "user", "content": "q1"}, {"role": "user", "content": [{"type": "text", "text": "q2"}]},
        {"role": "assistant", "content": ""},
    ])
    assert system == "A\n\nB"
    assert turns == [{"role": "user", "content": [{"type": "text", "text": "q1"}, {"type": "text", "text": "q2"}]}]


def test_tool_calls_and_results_become_blocks() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    _, turns = to_anthropic_messages([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "13C"},
    ])
    assert turns[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}]}
    assert turns[2]["role"] == "user" and [b["tool_use_id"] for b in turns[2]["content"]] == ["call_1", "call_2"]


def test_tools_and_tool_choice() -> None:
    assert to_anthropic_tools([WEATHER]) == [{"name": "get_weather", "description": "Current weather for a city",
                                              "input_schema": WEATHER["function"]["parameters"]}]
    assert to_anthropic_tool_choice("required") == {"type": "any"}
    assert to_anthropic_tool_choice("none") == {"type": "none"}
    assert to_anthropic_tool_choice({"type": "function", "function": {"name": "f"}}) == {"type": "tool", "name": "f"}
    assert to_anthropic_tool_choice(None) is None and to_anthropic_tool_choice("auto", True) == {"type": "auto"}
    assert to_anthropic_tool_choice(None, False) == {"type": "auto", "disable_parallel_tool_use": True}
    assert to_anthropic_tool_choice("none", False) == {"type": "none"}


# ---------------------------------------------------------------- over HTTP


async def test_complete_translates_request_and_usage() -> None:
    params = ChatParams(messages=PARAMS.messages, max_tokens=8, temperature=1.5, stop=["END"])
    with StubAnthropic(Script(reply="one two three")) as s:
        out = await provider(s.url).complete(params)
    assert out.text == "one two three" and out.finish_reason == "stop"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (11, 3)
    sent = s.script.seen[0]
    assert sent["system"] == "Be brief." and sent["model"] == "claude-test" and sent["max_tokens"] == 8
    assert sent["temperature"] == 1.0 and sent["stop_sequences"] == ["END"]
    assert api_key(s.script.headers[0]) == "sk-ant-test"


async def test_endpoint_with_v1_suffix_works() -> None:
    with StubAnthropic() as s:
        out = await provider(s.url + "/v1").complete(PARAMS)
    assert out.text == "stub answer"


async def test_stream_yields_text_then_finish_and_usage() -> None:
    with StubAnthropic(Script(reply="a b c", stop_reason="max_tokens")) as s:
        deltas = [d async for d in provider(s.url).stream(PARAMS)]
    assert [d.text for d in deltas if d.text] == ["a", " b", " c"]
    last = deltas[-1]
    assert last.finish_reason == "length" and (last.usage.prompt_tokens, last.usage.completion_tokens) == (11, 3)


async def test_tool_use_comes_back_as_openai_tool_calls() -> None:
    params = ChatParams(messages=[{"role": "user", "content": "weather in Oslo?"}], tools=[WEATHER],
                        tool_choice="required")
    with StubAnthropic(Script(reply="Let me check.", tool_use=("get_weather", {"city": "Oslo"}))) as s:
        out = await provider(s.url).complete(params)
        deltas = [d async for d in provider(s.url).stream(params)]
    assert out.finish_reason == "tool_calls"
    (call,) = out.tool_calls or []
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'} and call["type"] == "function"
    streamed = [tc for d in deltas for tc in d.tool_calls or []]
    assert len(streamed) == 1 and json.loads(streamed[0]["function"]["arguments"]) == {"city": "Oslo"}
    assert streamed[0]["index"] == 0 and streamed[0]["id"] == "toolu_0002"
    assert deltas[-1].finish_reason == "tool_calls"
    assert s.script.seen[0]["tools"][0]["input_schema"]["required"] == ["city"]
    assert s.script.seen[0]["tool_choice"] == {"type": "any"}


async def test_tool_round_trip_is_accepted_by_the_api() -> None:
    """A full OpenAI tool conversation, as a client sends it back, passes the API's own checks."""
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    params = ChatParams(tools=[WEATHER], messages=[
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "12C, cloudy"}])
    with StubAnthropic(Script(reply="It is 12C.")) as s:
        out = await provider(s.url).complete(params)
    assert out.text == "It is 12C."
    assert s.script.seen[0]["messages"][2]["content"][0] == {
        "type": "tool_result", "tool_use_id": "toolu_1", "content": "12C, cloudy"}


@pytest.mark.parametrize(("choice", "sent"), [
    (None, {"type": "auto", "disable_parallel_tool_use": True}),
    ("auto", {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", {"type": "any", "disable_parallel_tool_use": True}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
    ("none", {"type": "none"}),  # no tool is called; the API refuses the flag on this choice
])
async def test_parallel_tool_calls_false_disables_parallel_tool_use(choice: Any, sent: dict[str, Any]) -> None:
    """``parallel_tool_calls: false`` reaches the Messages API as ``disable_parallel_tool_use`` on the choice."""
    params = ChatParams(messages=[{"role": "user", "content": "weather in Oslo and Bergen?"}], tools=[WEATHER],
                        tool_choice=choice, parallel_tool_calls=False)
    with StubAnthropic(Script(reply="Checking.", tool_use=("get_weather", {"city": "Oslo"}))) as s:
        out = await provider(s.url).complete(params)
        deltas = [d async for d in provider(s.url).stream(params)]
    assert [seen["tool_choice"] for seen in s.script.seen] == [sent, sent]
    assert out.text == "Checking." and deltas[-1].finish_reason == out.finish_reason


@pytest.mark.parametrize("parallel", [True, None])
async def test_parallel_tool_calls_left_on_sends_no_tool_choice_of_its_own(parallel: bool | None) -> None:
    """Parallel calls are Anthropic's default: nothing is added for them, and an explicit choice goes as it is."""
    ask = {"messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER], "parallel_tool_calls": parallel}
    with StubAnthropic() as s:
        await provider(s.url).complete(ChatParams(**ask))
        await provider(s.url).complete(ChatParams(**ask, tool_choice="required"))
    assert "tool_choice" not in s.script.seen[0] and s.script.seen[1]["tool_choice"] == {"type": "any"}


@pytest.mark.parametrize("status", [429, 500, 529])
async def test_sdk_retries_transient_failures(status: int) -> None:
    with StubAnthropic(Script(fail_times=2, fail_status=status)) as s:
        out = await provider(s.url, retries=2).complete(PARAMS)
    assert out.text == "stub answer" and s.script.calls == 3


@pytest.mark.parametrize(("status", "error"), [(429, ProviderRateLimited), (500, ProviderServerError),
                                               (529, ProviderUnavailable)])
async def test_gives_up_with_a_typed_error(status: int, error: type[Exception]) -> None:
    with StubAnthropic(Script(fail_times=10, fail_status=status)) as s, pytest.raises(error):
        await provider(s.url, retries=1).complete(PARAMS)
    assert s.script.calls == 2


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_long_retry_after_is_raised_at_once_not_waited_for(stream: bool) -> None:
    """The SDK would sleep the 30 s the 429 asks for before each retry; the request must move on instead."""
    with StubAnthropic(Script(fail_times=10, fail_status=429, retry_after="30")) as s:
        p = provider(s.url, retries=2)
        elapsed, e = await raised_at_once(p, PARAMS, stream)
        await p.aclose()
    assert elapsed < 1.0 and s.script.calls == 1 and e.retry_after == 30


@pytest.mark.parametrize("status", [503, 529])
async def test_an_overload_asking_for_a_long_wait_is_raised_at_once(status: int) -> None:
    with StubAnthropic(Script(fail_times=10, fail_status=status, retry_after="30")) as s:
        p = provider(s.url, retries=2)
        elapsed = await failed_at_once(p, PARAMS, stream=False)
        await p.aclose()
    assert elapsed < 1.0 and s.script.calls == 1


async def test_a_429_with_a_short_retry_after_is_still_retried_by_the_sdk() -> None:
    with StubAnthropic(Script(fail_times=2, fail_status=429, retry_after="0")) as s:
        out = await provider(s.url, retries=2).complete(PARAMS)
    assert out.text == "stub answer" and s.script.calls == 3


async def test_bad_request_is_not_retried() -> None:
    with StubAnthropic(Script(fail_times=10, fail_status=400)) as s, pytest.raises(ProviderRequestError) as e:
        [d async for d in provider(s.url).stream(PARAMS)]
    assert s.script.calls == 1 and not isinstance(e.value, ProviderServerError)


async def test_in_stream_error_event_is_typed() -> None:
    with StubAnthropic(Script(reply="a b", stream_error="overloaded_error")) as s:
        got: list[Any] = []
        with pytest.raises(ProviderUnavailable):
            async for d in provider(s.url).stream(PARAMS):
                got.append(d)
    assert [d.text for d in got] == ["a"]


@pytest.mark.parametrize(("kind", "error", "status"), [
    ("rate_limit_error", ProviderRateLimited, 429),
    ("invalid_request_error", ProviderRequestError, 400),
    ("authentication_error", ProviderAuthError, 502),
    ("permission_error", ProviderAuthError, 502),
    ("api_error", ProviderServerError, 502),
    ("overloaded_error", ProviderUnavailable, 503),
])
async def test_an_error_event_in_the_stream_is_typed_by_its_kind_not_the_200(
        kind: str, error: type[ProviderError], status: int) -> None:
    """After ``message_start`` the stream's status is 200: the error's own type says what went wrong, as its HTTP
    status would have (an in-stream rate limit is a rate limit, not a failure of the model)."""
    with StubAnthropic(Script(stream_error=kind, stream_error_after=0)) as s, pytest.raises(ProviderError) as e:
        [d async for d in provider(s.url).stream(PARAMS)]
    assert type(e.value) is error and e.value.status == status
    assert "200" not in str(e.value) and s.script.calls == 1


async def test_a_prompt_too_long_in_the_stream_is_context_length_exceeded() -> None:
    script = Script(stream_error="invalid_request_error", stream_error_after=0,
                    stream_error_message="prompt is too long: 250000 tokens > 200000 maximum")
    with StubAnthropic(script) as s, pytest.raises(ProviderRequestError) as e:
        [d async for d in provider(s.url).stream(PARAMS)]
    assert (e.value.code, e.value.param, e.value.status) == ("context_length_exceeded", "messages", 400)
    assert str(e.value).endswith("prompt is too long: 250000 tokens > 200000 maximum")


async def test_a_rate_limit_after_the_first_token_still_ends_the_stream_as_a_rate_limit() -> None:
    with StubAnthropic(Script(reply="a b", stream_error="rate_limit_error")) as s:
        got: list[Any] = []
        with pytest.raises(ProviderRateLimited):
            async for d in provider(s.url).stream(PARAMS):
                got.append(d)
    assert [d.text for d in got] == ["a"]


async def test_a_refusal_without_a_word_comes_back_as_openais_refusal() -> None:
    """``stop_reason: refusal`` is OpenAI's ``message.refusal`` (finish_reason ``stop``), plain and streamed."""
    with StubAnthropic(Script(reply="", stop_reason="refusal")) as s:
        out = await provider(s.url).complete(PARAMS)
        deltas = [d async for d in provider(s.url).stream(PARAMS)]
    assert out.text == "" and out.refusal and out.finish_reason == "stop"
    assert "".join(d.text for d in deltas) == "" and "".join(d.refusal for d in deltas) == out.refusal
    assert deltas[-1].finish_reason == "stop"


async def test_what_a_refusing_model_said_is_its_refusal() -> None:
    """Plain, the model's words are the refusal. Streamed, they went out as content before the stop reason came:
    a refusal still follows, so that the client sees one."""
    with StubAnthropic(Script(reply="I cannot help with that.", stop_reason="refusal")) as s:
        out = await provider(s.url).complete(PARAMS)
        deltas = [d async for d in provider(s.url).stream(PARAMS)]
    assert (out.text, out.refusal, out.finish_reason) == ("", "I cannot help with that.", "stop")
    assert "".join(d.text for d in deltas) == "I cannot help with that." and "".join(d.refusal for d in deltas)
    assert deltas[-1].finish_reason == "stop"


async def test_an_ordinary_answer_has_no_refusal() -> None:
    with StubAnthropic(Script(reply="fine")) as s:
        out = await provider(s.url).complete(PARAMS)
        deltas = [d async for d in provider(s.url).stream(PARAMS)]
    assert out.refusal is None and not any(d.refusal for d in deltas)


@pytest.mark.parametrize("final", [
    {"input_tokens": 10, "output_tokens": 3},
    {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 3},
], ids=["without-cache-counts", "with-cache-counts"])
async def test_streamed_prompt_tokens_keep_the_cached_input(final: dict[str, int]) -> None:
    """``message_delta`` may repeat ``input_tokens`` alone: the cache counts ``message_start`` gave still count."""
    script = Script(reply="a b c", input_tokens=10, cache_read_input_tokens=100, cache_creation_input_tokens=20,
                    final_usage=final)
    with StubAnthropic(script) as s:
        deltas = [d async for d in provider(s.url).stream(PARAMS)]
    usage = deltas[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.prompt_details) == (130, 3, {"cached_tokens": 100})


async def test_connection_refused_is_unavailable() -> None:
    with pytest.raises(ProviderUnavailable):
        await provider(f"http://127.0.0.1:{free_port()}", retries=0).complete(PARAMS)
