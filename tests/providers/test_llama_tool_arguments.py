"""A local model's calls to functions declared ``strict: true`` have arguments that match their ``parameters``.

llama.cpp's grammar for tool calls drops keywords such as ``minimum``/``maximum``, as it does for a
``json_schema`` response format; so the arguments of each call to a strict function are validated, a call that
breaks them regenerated with what was wrong shown to the model, and one still wrong is a 422 refusal (the mix's
next model may answer). Calls to functions not declared strict are followed at best effort, unchecked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import scripted_llama
from scripted_llama import install_scripted, local_provider
from stub_openai import Script, StubServer

from moai.providers import ChatParams, ProviderRequestError
from moai.providers.json_schema_check import SchemaUnmet
from moai.providers.llama_cpp import LlamaCppProvider

AGE = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 120}},
       "required": ["age"], "additionalProperties": False}


def age_tool(strict: bool | None = True, parameters: Any = AGE) -> list[dict[str, Any]]:
    fn: dict[str, Any] = {"name": "set_age", "parameters": parameters}
    if strict is not None:
        fn["strict"] = strict
    return [{"type": "function", "function": fn}]


def call(age: int) -> str:
    """A call to ``set_age`` as a Hermes-style model writes it."""
    return f'<tool_call>\n{{"name": "set_age", "arguments": {{"age": {age}}}}}\n</tool_call>'


class ScriptedLlama(scripted_llama.ScriptedLlama):
    """Answers with text, or for ``named`` with the arguments of a call llama.cpp makes itself under a named
    tool_choice."""

    def __init__(self, answers: list[str], named: bool = False) -> None:
        super().__init__(answers)
        self.named = named

    def create_chat_completion(self, stream: bool, messages: list[dict[str, Any]], **kw: Any) -> Iterator[dict]:
        assert stream and kw["tools"]
        answer = self.next_answer(messages)
        if not self.named:
            yield from self.text_chunks(answer)
            return
        assert kw["tool_choice"]["function"]["name"] == "set_age"
        first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "set_age", "arguments": ""}}
        yield {"choices": [{"delta": {"tool_calls": [first]}, "finish_reason": None}]}
        yield {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": answer}}]},
                            "finish_reason": None}]}
        yield {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Installs a ScriptedLlama as the model every local card loads."""

    def install(answers: list[str], named: bool = False) -> ScriptedLlama:
        return install_scripted(monkeypatch, ScriptedLlama(answers, named))

    return install


def provider() -> LlamaCppProvider:
    return local_provider()


def ask(tools: list[dict[str, Any]] | None = None, tool_choice: Any = None) -> ChatParams:
    return ChatParams(messages=[{"role": "user", "content": "She is 40. Record her age."}], max_tokens=40,
                      tools=tools or age_tool(), tool_choice=tool_choice)


def ages(out: Any) -> list[int]:
    return [json.loads(c["function"]["arguments"])["age"] for c in out.tool_calls]


async def test_a_call_out_of_bounds_is_regenerated_with_the_problem_shown(scripted: Any) -> None:
    llm = scripted([call(4000), call(40)])
    out = await provider().complete(ask())
    assert ages(out) == [40] and out.finish_reason == "tool_calls"
    assert len(llm.calls) == 2
    retry = llm.calls[1]
    assert retry[:1] == llm.calls[0]  # the same conversation, then the rejected call and why
    assert retry[1]["role"] == "assistant" and '"age": 4000' in retry[1]["content"]
    assert retry[2]["role"] == "user" and "4000 is greater than the maximum of 120" in retry[2]["content"]
    assert "set_age" in retry[2]["content"] and "$.age" in retry[2]["content"]
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (10 + 30, 5 + 5)  # both tries are counted


async def test_a_strict_function_still_called_out_of_bounds_fails_the_call(scripted: Any) -> None:
    llm = scripted([call(4000), call(-1), call(200)])
    with pytest.raises(SchemaUnmet) as e:
        await provider().complete(ask())
    assert len(llm.calls) == 3
    message = str(e.value)
    assert "after 3 tries" in message and "'set_age'" in message and "200 is greater than the maximum of 120" in message
    assert e.value.usage is not None and e.value.usage.completion_tokens == 15
    # as for a strict json_schema: the mix's next model may answer, no mark on this one's health
    assert e.value.retryable and e.value.status == 422
    assert (e.value.code, e.value.param) == ("tool_arguments_unmet", "tools")


async def test_a_named_tool_choice_call_out_of_bounds_is_checked_too(scripted: Any) -> None:
    """llama.cpp makes the call itself under a named choice (its grammar has no bounds either)."""
    llm = scripted(['{"age": 4000}', '{"age": 300}', '{"age": 200}'], named=True)
    choice = {"type": "function", "function": {"name": "set_age"}}
    with pytest.raises(SchemaUnmet, match="after 3 tries"):
        await provider().complete(ask(tool_choice=choice))
    assert len(llm.calls) == 3


async def test_a_stream_shows_no_call_that_breaks_a_strict_function(scripted: Any) -> None:
    scripted([call(4000)])
    seen: list[Any] = []
    with pytest.raises(SchemaUnmet, match="after 2 tries"):  # a repeated call ends the tries
        async for d in provider().stream(ask()):
            seen.append(d.tool_calls)
    assert not any(seen)


@pytest.mark.parametrize("strict", [False, None], ids=["strict-false", "strict-absent"])
async def test_a_function_not_declared_strict_is_called_as_the_model_wrote_it(scripted: Any,
                                                                              strict: bool | None) -> None:
    """Guard: OpenAI follows a function's parameters at best effort unless ``strict``: one try, returned as is."""
    llm = scripted([call(4000), call(40)])
    out = await provider().complete(ask(age_tool(strict)))
    assert ages(out) == [4000] and len(llm.calls) == 1


async def test_a_call_that_matches_a_strict_function_takes_one_try(scripted: Any) -> None:
    """Guard: a call within the bounds is returned from the first try."""
    llm = scripted([call(40), call(41)])
    out = await provider().complete(ask())
    assert ages(out) == [40] and len(llm.calls) == 1


@pytest.mark.parametrize("parameters", [
    {"type": "object", "properties": {"age": {"type": "nonsense"}}},
    {"type": "object", "properties": {"age": {"$ref": "https://example.com/age.json"}}},
    "an object",
], ids=["not-json-schema", "unresolvable-ref", "not-an-object"])
async def test_a_strict_functions_parameters_that_cannot_be_checked_are_the_requests_fault(
        scripted: Any, parameters: Any) -> None:
    llm = scripted([call(40)])
    with pytest.raises(ProviderRequestError) as e:
        await provider().complete(ask(age_tool(True, parameters)))
    assert not isinstance(e.value, SchemaUnmet) and e.value.status == 400
    assert (e.value.code, e.value.param) == ("invalid_function_parameters", "tools")
    assert "'set_age'" in str(e.value) and llm.calls == []  # refused before any generation


# ------------------------------------------------------------------------------------------------ through a mix

def local_mix(tmp_path: Path, cloud_url: str | None = None) -> Any:
    """A mix whose first pick is the local (scripted) model ``tiny``; ``cloud`` after it when given."""
    from moai.config import parse_config
    from moai.mixture import Mixture
    from moai.telemetry.store import TelemetryStore

    (tmp_path / "tiny.gguf").write_bytes(b"")
    cloud = (f"  cloud: {{provider: openai_compat, endpoint: '{cloud_url}', privacy: local, max_retries: 0, "
             "supports_tools: true, price: {input_per_mtok: 5, output_per_mtok: 5}}\n") if cloud_url else ""
    models = "[tiny, cloud]" if cloud_url else "[tiny]"
    tiny = f"{{provider: local, path: '{tmp_path / 'tiny.gguf'}', privacy: local, supports_tools: true}}"
    cfg = (f"models:\n  tiny: {tiny}\n{cloud}"
           f"mixes:\n  m: {{strategy: route, models: {models}, fallbacks: {models}, "
           "weights: {quality: 0, cost: 1}}\n")
    return Mixture(parse_config(cfg), store=TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}"))


def body() -> Any:
    from moai.server.openai_schema import ChatCompletionRequest

    return ChatCompletionRequest.model_validate({"model": "moai/m", "tools": age_tool(),
                                                 "messages": [{"role": "user", "content": "She is 40."}]})


async def test_the_mix_calls_from_its_next_model_when_the_local_one_breaks_a_strict_function(
        scripted: Any, tmp_path: Path) -> None:
    scripted([call(4000), call(-1), call(200)])
    with StubServer(Script(tool_call=("set_age", '{"age": 40}'))) as stub:
        m = local_mix(tmp_path, stub.url)
        try:
            prep = m.prepare(body())
            ex = await m.run(prep)
        finally:
            await m.aclose()
    assert ex.answer.model == "cloud" and ex.answer.attempts[0]["status"] == 422
    assert prep.plan.failed == {}  # no mark on the local model
    assert m.stats.healthy("tiny")


async def test_a_strict_function_no_model_of_the_mix_calls_right_is_a_422_about_tools(
        scripted: Any, tmp_path: Path) -> None:
    from moai.strategies.outcome import PlanFailed

    scripted([call(4000), call(200), call(300)])
    m = local_mix(tmp_path)
    try:
        with pytest.raises(PlanFailed) as e:
            await m.run(m.prepare(body()))
    finally:
        await m.aclose()
    assert (e.value.status, e.value.code, e.value.param) == (422, "tool_arguments_unmet", "tools")
