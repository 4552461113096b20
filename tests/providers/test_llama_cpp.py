"""The in-process local provider answers a real prompt with a real GGUF model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moai.catalog import ModelCard, complete_card
from moai.providers import ChatParams, ProviderRequestError, ProviderUnavailable
from moai.providers.base import is_refusal
from moai.providers.llama_cpp import (
    LlamaCppProvider,
    generation_error,
    llama_response_format,
    text_messages,
)
from moai.providers.tool_calls import merge_tool_call_deltas

pytestmark = pytest.mark.integration


def smol() -> LlamaCppProvider:
    card = complete_card("smollm2-135m", ModelCard(provider="local", package="smollm2-135m", privacy="local",
                                                   context=2048))
    return LlamaCppProvider(card)


async def test_local_model_answers(smollm_path: Path) -> None:
    ask = "What is the capital of France? Answer with one word."
    out = await smol().complete(ChatParams(messages=[{"role": "user", "content": ask}], max_tokens=24))
    assert "paris" in out.text.lower()
    assert out.usage.prompt_tokens > 5 and 0 < out.usage.completion_tokens <= 24
    assert out.cpu_s is not None and out.cpu_s > 0
    assert out.ttft_s is not None and out.ttft_s <= out.latency_s


async def test_local_model_streams_tokens(smollm_path: Path) -> None:
    deltas = [d async for d in smol().stream(ChatParams(messages=[{"role": "user", "content": "Count: 1, 2, 3,"}],
                                                        max_tokens=12))]
    pieces = [d.text for d in deltas if d.text]
    assert len(pieces) >= 2  # token by token, not one blob
    assert deltas[-1].finish_reason in ("stop", "length") and deltas[-1].usage.completion_tokens == len(pieces)
    # the first piece already carries the prompt's exact size: a stream the client cuts short is billed by it,
    # not by a length estimate
    first = next(d for d in deltas if d.text)
    assert first.usage is not None and first.usage.prompt_tokens == deltas[-1].usage.prompt_tokens


async def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    card = ModelCard(name="ghost", provider="local", path=str(tmp_path / "ghost.gguf"), privacy="local")
    with pytest.raises(ProviderUnavailable, match="model file not found"):
        await LlamaCppProvider(card).complete(ChatParams(messages=[{"role": "user", "content": "hi"}]))


def test_content_parts_become_text_for_the_chat_template() -> None:
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}, {"type": "text", "text": "Digits."}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
    ]
    out = text_messages("m", msgs)
    assert out[0] == msgs[0] and out[2] == {**msgs[2], "content": ""}
    assert out[1] == {"role": "user", "content": "What is 2 + 2?\nDigits."}
    assert isinstance(msgs[1]["content"], list)  # the caller's messages are not modified
    assert text_messages("m", [{"role": "developer", "content": "Be brief."}]) == [
        {"role": "system", "content": "Be brief."}]


@pytest.mark.parametrize("part", [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                  {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}])
async def test_a_part_a_text_model_cannot_read_is_refused_before_loading(tmp_path: Path, part: dict) -> None:
    # the model file does not even exist: the request is refused first, as a request error another model may take
    card = ModelCard(name="ghost", provider="local", path=str(tmp_path / "ghost.gguf"), privacy="local")
    msgs = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]
    with pytest.raises(ProviderRequestError, match=f"reads text only.*'{part['type']}'") as e:
        await LlamaCppProvider(card).complete(ChatParams(messages=msgs))
    assert e.value.retryable and e.value.status == 400


def test_sampling_options_reach_llama_cpp() -> None:
    params = ChatParams(messages=[{"role": "user", "content": "hi"}], max_tokens=4, frequency_penalty=0.5,
                        presence_penalty=0.25, seed=3)
    kw = smol()._kwargs(params)
    assert (kw["frequency_penalty"], kw["presence_penalty"], kw["seed"], kw["temperature"]) == (0.5, 0.25, 3, 0.0)
    assert "top_p" not in kw  # unset: llama.cpp's own default


async def test_local_model_reads_text_parts(smollm_path: Path) -> None:
    parts = [{"type": "text", "text": "What is the capital of France?"},
             {"type": "text", "text": "Answer with one word."}]
    out = await smol().complete(ChatParams(messages=[{"role": "user", "content": parts}], max_tokens=24))
    assert "paris" in out.text.lower()


ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


def test_openai_response_formats_in_llama_cpp_terms() -> None:
    schema_kind = {"type": "json_schema", "json_schema": {"name": "a", "schema": ANSWER_SCHEMA, "strict": True}}
    assert llama_response_format(schema_kind) == {"type": "json_object", "schema": ANSWER_SCHEMA}
    assert llama_response_format({"type": "json_schema", "json_schema": {"name": "a"}}) == {"type": "json_object"}
    assert llama_response_format({"type": "json_object"}) == {"type": "json_object"}
    assert llama_response_format({"type": "text"}) is None and llama_response_format(None) is None


async def test_local_model_answers_in_the_requested_schema(smollm_path: Path) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "sum", "schema": ANSWER_SCHEMA}}
    out = await smol().complete(ChatParams(messages=[{"role": "user", "content": "What is 2 + 2?"}], max_tokens=40,
                                           response_format=fmt))
    assert isinstance(json.loads(out.text)["answer"], int)  # constrained by grammar, even for a 135M model


def test_a_prompt_over_the_context_window_is_the_requests_fault() -> None:
    e = generation_error("m", ValueError("Requested tokens (30030) exceed context window of 8192"))
    assert isinstance(e, ProviderRequestError) and e.status == 400
    assert (e.code, e.param) == ("context_length_exceeded", "messages")
    assert "30030" in str(e) and "8192" in str(e)
    assert type(generation_error("m", RuntimeError("llama_decode returned -3"))) is ProviderUnavailable


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_prompt_longer_than_the_window_is_refused_with_openais_code(smollm_path: Path, stream: bool) -> None:
    # ~6000 characters that are ~3000 tokens: the length estimate before routing would let them through
    params = ChatParams(messages=[{"role": "user", "content": "7 " * 3000}], max_tokens=4)
    with pytest.raises(ProviderRequestError) as e:
        if stream:
            _ = [d async for d in smol().stream(params)]
        else:
            await smol().complete(params)
    assert (e.value.code, e.value.param, e.value.status) == ("context_length_exceeded", "messages", 400)
    assert "context window of 2048" in str(e.value)


def test_streamed_tool_call_pieces_become_one_call() -> None:
    # llama.cpp repeats the id and name in every piece of a call it makes for a named tool_choice
    piece = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    calls: list[dict] = []
    for part in ('{"city"', ': "Paris"', "}"):
        merge_tool_call_deltas(calls, [{**piece, "function": {**piece["function"], "arguments": part}}])
    assert calls == [{"index": 0, "id": "call_1", "type": "function",
                      "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]


def test_tool_choice_none_shows_the_template_no_tools() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    msgs = [{"role": "user", "content": "hi"}]
    kw = smol()._kwargs(ChatParams(messages=msgs, tools=tools, tool_choice="none"))
    assert "tools" not in kw and "tool_choice" not in kw
    named = {"type": "function", "function": {"name": "get_weather"}}
    kw = smol()._kwargs(ChatParams(messages=msgs, tools=tools, tool_choice=named))
    assert kw["tools"] == tools and kw["tool_choice"] == named


async def test_a_seeded_answer_is_the_same_whatever_was_asked_before(smollm_path: Path) -> None:
    """A prompt partly in llama.cpp's cache was evaluated in other batches: its logits moved, and the seeded sample
    with them. The same seed and prompt give the same answer, after another prompt or the same one."""
    model = smol()

    async def ask(text: str) -> str:
        params = ChatParams(messages=[{"role": "user", "content": text}], max_tokens=16, temperature=1.0, seed=42)
        return (await model.complete(params)).text

    answers = []
    for _ in range(2):
        await ask("Name a fruit.")
        answers += [await ask("Write one sentence about cats."), await ask("Write one sentence about cats.")]
    assert len(set(answers)) == 1, answers


TWO_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}},
]


def test_an_assistant_turn_without_content_reaches_the_template_as_text() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    msgs = text_messages("m", [{"role": "user", "content": "hi"},
                               {"role": "assistant", "content": None, "tool_calls": [call]},
                               {"role": "assistant", "content": None, "refusal": "I cannot help with that."}])
    templated = {**call, "function": {"name": "get_weather", "arguments": {}}}  # as templates show arguments
    assert msgs[1] == {"role": "assistant", "content": "", "tool_calls": [templated]}
    assert msgs[2]["content"] == "I cannot help with that."


def test_a_template_that_cannot_render_the_messages_is_the_requests_fault() -> None:
    import jinja2

    e = generation_error("m", jinja2.exceptions.UndefinedError("'dict object' has no attribute 'content'"))
    assert isinstance(e, ProviderRequestError) and is_refusal(e.status)  # not counted against the model
    assert (e.code, e.param, e.status) == ("unsupported_request", "messages", 400)


def test_required_tool_choice_is_a_grammar_for_a_call() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    kw = smol()._kwargs(ChatParams(messages=msgs, tools=TWO_TOOLS[:1], tool_choice="required"))
    assert kw["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    kw = smol()._kwargs(ChatParams(messages=msgs, tools=TWO_TOOLS, tool_choice="required"))
    assert "tool_choice" not in kw and kw["tools"] == TWO_TOOLS
    names = [c["properties"]["name"]["const"] for c in kw["response_format"]["schema"]["anyOf"]]
    assert kw["response_format"]["type"] == "json_object" and names == ["get_weather", "get_time"]


def test_empty_stop_strings_are_not_sent() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    assert "stop" not in smol()._kwargs(ChatParams(messages=msgs, stop=[""]))
    assert smol()._kwargs(ChatParams(messages=msgs, stop=["", "\n"]))["stop"] == ["\n"]


async def test_a_conversation_with_a_tool_call_turn_is_answered(smollm_path: Path) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    msgs = [{"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "user", "content": "Never mind. Say hello."}]
    out = await smol().complete(ChatParams(messages=msgs, max_tokens=8))
    assert out.text.strip() and out.finish_reason in ("stop", "length")


@pytest.mark.parametrize("tools", [TWO_TOOLS, TWO_TOOLS[:1]], ids=["two-tools", "one-tool"])
async def test_required_tool_choice_answers_with_a_call(smollm_path: Path, tools: list) -> None:
    msgs = [{"role": "user", "content": "Tell me a joke about cats."}]
    out = await smol().complete(ChatParams(messages=msgs, tools=tools, tool_choice="required", max_tokens=64))
    assert out.finish_reason == "tool_calls" and out.tool_calls and not out.text
    call = out.tool_calls[0]["function"]
    assert call["name"] in {t["function"]["name"] for t in tools}
    assert isinstance(json.loads(call["arguments"]), dict)
