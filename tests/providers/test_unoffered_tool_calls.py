"""A reply that calls a function the request did not offer (no tools at all, or a name not among them) breaks the
protocol: the provider raises a retryable ProviderServerError, streamed or not, before any piece of the call goes
out, so that the next model answers. A call to an offered function is returned as before."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import stub_anthropic
from compat_support import close_providers, provider  # noqa: F401 - close_providers: an autouse fixture
from stub_openai import Script, StubServer

from moai.catalog import ModelCard
from moai.providers import ChatParams, Delta, Provider, ProviderServerError, make_provider

PARAMS = ChatParams(messages=[{"role": "user", "content": "hi"}], max_tokens=8)


def tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


async def _answer(p: Provider, params: ChatParams, stream: bool) -> tuple[list[Delta], Any]:
    """The deltas a stream yielded before it ended (or the completion), and the error it raised, if any."""
    got: list[Delta] = []
    try:
        if stream:
            async for d in p.stream(params):
                got.append(d)
        else:
            await p.complete(params)
    except ProviderServerError as e:
        return got, e
    return got, None


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("tools", [None, [tool("other")]], ids=["no-tools", "other-tool"])
async def test_openai_compat_call_to_an_unoffered_function_fails_the_try(
        stream: bool, tools: list[dict[str, Any]] | None) -> None:
    with StubServer(Script(tool_call=("zzz", '{"x": 1}'))) as s:
        got, error = await _answer(provider(s.url, retries=0), replace(PARAMS, tools=tools), stream)
    assert error is not None and error.retryable and error.status == 502
    assert "malformed response" in str(error) and "'zzz'" in str(error)
    assert not any(d.tool_calls for d in got)  # no piece of the call went out
    assert error.usage is not None and error.usage.prompt_tokens > 0  # the upstream read the prompt, and bills it


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_openai_compat_call_to_an_offered_function_is_returned(stream: bool) -> None:
    """Guard: the check lets calls to offered functions through."""
    params = replace(PARAMS, tools=[tool("other"), tool("zzz")])
    with StubServer(Script(tool_call=("zzz", '{"x": 1}'))) as s:
        p = provider(s.url, retries=0)
        if stream:
            out = await Provider.complete(p, params)  # drains p.stream
        else:
            out = await p.complete(params)
    assert out.tool_calls and out.tool_calls[0]["function"] == {"name": "zzz", "arguments": '{"x": 1}'}


def _anthropic(url: str) -> Provider:
    card = ModelCard(name="claude", provider="anthropic", endpoint=url, model="claude-test",
                     api_key_env="MOAI_TEST_ANTHROPIC_KEY", max_retries=0, timeout_s=5)
    return make_provider(card)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_anthropic_call_to_an_unoffered_function_fails_the_try(
        stream: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOAI_TEST_ANTHROPIC_KEY", "sk-ant-test")
    script = stub_anthropic.Script(tool_use=("zzz", {"x": 1}))
    with stub_anthropic.StubAnthropic(script) as s:
        p = _anthropic(s.url)
        got, error = await _answer(p, replace(PARAMS, tools=[tool("other")]), stream)
        await p.aclose()
    assert error is not None and error.retryable and "'zzz'" in str(error)
    assert not any(d.tool_calls for d in got)
    assert error.usage is not None and error.usage.prompt_tokens > 0


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_anthropic_call_to_an_offered_function_is_returned(stream: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard."""
    monkeypatch.setenv("MOAI_TEST_ANTHROPIC_KEY", "sk-ant-test")
    with stub_anthropic.StubAnthropic(stub_anthropic.Script(tool_use=("zzz", {"x": 1}))) as s:
        p = _anthropic(s.url)
        params = replace(PARAMS, tools=[tool("zzz")])
        out = await (Provider.complete(p, params) if stream else p.complete(params))
        await p.aclose()
    assert out.tool_calls and out.tool_calls[0]["function"]["name"] == "zzz"


def test_streamed_pieces_without_a_name_extend_a_call() -> None:
    """Only the piece that opens a call names it; a whole call must name an offered function."""
    from moai.providers.tool_calls import check_offered

    tools = [tool("f")]
    check_offered("m", [{"index": 0, "function": {"arguments": '{"a'}}], tools, pieces=True)
    with pytest.raises(ProviderServerError):
        check_offered("m", [{"index": 0, "function": {"arguments": "{}"}}], tools)
    with pytest.raises(ProviderServerError):
        check_offered("m", [{"index": 0, "function": {"arguments": "{}"}}], None, pieces=True)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("choice", "why"), [
    ("none", "tool_choice is 'none'"),
    ({"type": "function", "function": {"name": "other"}}, "tool_choice names 'other'"),
], ids=["none", "named-other"])
async def test_a_call_against_the_tool_choice_fails_the_try(stream: bool, choice: Any, why: str) -> None:
    """Both functions offered, but the request's tool_choice rules this call out: no call, or another one."""
    params = replace(PARAMS, tools=[tool("other"), tool("zzz")], tool_choice=choice)
    with StubServer(Script(tool_call=("zzz", '{"x": 1}'))) as s:
        got, error = await _answer(provider(s.url, retries=0), params, stream)
    assert error is not None and error.retryable and why in str(error), error
    assert not any(d.tool_calls for d in got)


async def test_a_call_to_the_function_the_tool_choice_names_is_returned() -> None:
    """Guard."""
    params = replace(PARAMS, tools=[tool("other"), tool("zzz")],
                     tool_choice={"type": "function", "function": {"name": "zzz"}})
    with StubServer(Script(tool_call=("zzz", '{"x": 1}'))) as s:
        out = await provider(s.url, retries=0).complete(params)
    assert out.tool_calls and out.tool_calls[0]["function"]["name"] == "zzz"
