"""The chat-completions request model on its own: OpenAI's types taken strictly, tools checked, opt-outs read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from moai.server.openai_schema import ChatCompletionRequest, FeedbackRequest
from moai.server.openai_schema import validation_message as _validation_message

BASE: dict[str, Any] = {"model": "moai/default", "messages": [{"role": "user", "content": "What's the weather?"}]}
CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": CITY}}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def parse(**extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(json.loads(json.dumps(BASE | extra)))


def refused(**extra: Any) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as e:
        parse(**extra)
    return _validation_message(e.value)


@pytest.mark.parametrize("field,value", [("max_tokens", "3"), ("max_tokens", True), ("max_tokens", 2.0),
                                         ("temperature", "0.5"), ("top_p", "1"), ("stream", "yes"), ("stream", 1),
                                         ("seed", "7"), ("n", 1.0)])
def test_wrong_types_are_refused_not_coerced(field: str, value: Any) -> None:
    _msg, param = refused(**{field: value})
    assert param == field


def test_right_types_pass_and_an_integer_is_a_number() -> None:
    r = parse(max_tokens=3, temperature=1, top_p=0.5, stream=True, seed=7)
    assert (r.max_tokens, r.temperature, r.stream, r.seed) == (3, 1.0, True, 7)


def test_tools_and_tool_choice_follow_openai_rules() -> None:
    assert parse(tools=TOOLS, tool_choice="auto").tools == TOOLS  # kept as sent, for the providers
    assert parse(tools=TOOLS, tool_choice=NAMED).tool_choice == NAMED
    assert parse(tool_choice="none").tool_choice == "none"  # calls nothing: needs no tools
    assert refused(tools=TOOLS, tool_choice="bogus")[1] == "tool_choice"
    assert refused(tool_choice="required") == ("tool_choice: a tool choice that calls a tool requires tools",
                                               "tool_choice")
    msg, param = refused(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
    assert param == "tool_choice" and "'nope'" in msg
    assert refused(tools=[{}])[1] == "tools.type"
    assert refused(tools=[{"type": "bogus", "function": {"name": "f"}}])[1] == "tools.type"
    assert refused(tools=[{"type": "function", "function": {"name": "no spaces"}}])[1] == "tools.function.name"


def test_a_lone_surrogate_is_a_400_not_a_crash() -> None:
    """Valid JSON (json.loads takes "\\ud800"), but not text: the tokenizer and the database would fail on it."""
    body = json.loads('{"model": "m", "messages": [{"role": "user", '
                      '"content": [{"type": "text", "text": "hi \\ud800"}]}]}')
    with pytest.raises(ValidationError) as e:
        ChatCompletionRequest.model_validate(body)
    assert "messages[0].content[0].text: text is not valid Unicode" in _validation_message(e.value)[0]


def test_top_level_cache_opt_out() -> None:
    assert parse().moai is None
    assert parse(cache=True).moai is None
    for off in (False, {"no-cache": True}, {"no-store": True}):
        r = parse(cache=off, moai={"models": ["smollm2-135m"]})
        assert r.moai is not None and r.moai.cache is False and r.moai.models == ["smollm2-135m"]
    assert parse(cache={"no-cache": False, "no-store": False}).moai is None
    assert refused(cache="no")[1] is not None


@pytest.mark.parametrize("controls", [{"ttl": 10}, {"s-maxage": 60}, {"namespace": "a"}, {"no-store": "yes"}])
def test_cache_controls_moai_does_not_honour_are_refused(controls: dict[str, object]) -> None:
    """Stored for a day when the client asked for ten seconds, or served whatever its age: refused instead."""
    assert refused(cache=controls)[1] is not None


@pytest.mark.parametrize("score", [-1, 0, 0.5, 1, 7, 10])
def test_feedback_scores_on_every_scale(score: float) -> None:
    assert FeedbackRequest.model_validate({"id": "chatcmpl-1", "score": score}).score == score


@pytest.mark.parametrize("score", [-5, 11, 1e9, True, "7"])
def test_feedback_score_off_every_scale_is_refused(score: float) -> None:
    with pytest.raises(ValidationError):
        FeedbackRequest.model_validate({"id": "chatcmpl-1", "score": score})


def test_feedback_scale_is_checked_against_the_score() -> None:
    assert FeedbackRequest.model_validate({"id": "c", "score": 7, "scale": "ten"}).scale == "ten"
    for bad in ({"score": 7, "scale": "thumbs"}, {"score": -1, "scale": "unit"}, {"score": 1, "scale": "stars"}):
        with pytest.raises(ValidationError):
            FeedbackRequest.model_validate({"id": "c", **bad})


def test_a_nul_in_the_user_field_is_refused() -> None:
    """`user` is stored as the session; PostgreSQL refuses a NUL (it was a 503 'database unavailable')."""
    assert refused(user="u\x00x")[1] == "user"
    assert parse(user="alice").user == "alice"


def test_openai_ranges_and_new_fields() -> None:
    """top_p may be 0, limits above 32k are the model's to judge; logit_bias, parallel_tool_calls and
    reasoning_effort are checked as OpenAI checks them."""
    assert parse(top_p=0).top_p == 0
    assert parse(max_completion_tokens=100_000).completion_budget == 100_000
    assert parse(logit_bias={"50256": -100, "11": 5.5}).logit_bias == {"50256": -100, "11": 5.5}
    assert refused(logit_bias="nope")[1] == "logit_bias"
    assert "outside -100..100" in refused(logit_bias={"1": 500})[0]
    assert "token ids" in refused(logit_bias={"hello": 1})[0]
    assert parse(tools=TOOLS, parallel_tool_calls=False).parallel_tool_calls is False
    assert refused(parallel_tool_calls="x")[1] == "parallel_tool_calls"
    assert parse(reasoning_effort="low").reasoning_effort == "low"
    assert refused(stream_options={"include_usage": "yes"})[1] == "stream_options.include_usage"


@pytest.mark.parametrize("field,value", [("functions", [{"name": "f", "parameters": {}}]), ("function_call", "auto")])
def test_deprecated_function_calling_is_refused_with_a_pointer_to_tools(field: str, value: Any) -> None:
    msg, param = refused(**{field: value})
    assert param == field and "'tools'" in msg


@pytest.mark.parametrize("extra", [
    {"modalities": ["text", "audio"]}, {"audio": {"voice": "alloy", "format": "wav"}},
    {"web_search_options": {}}, {"prediction": {"type": "content", "content": "x"}},
    {"stream_options": {"include_usage": True}},
], ids=["modalities", "audio", "web-search", "prediction", "stream-options-unstreamed"])
def test_fields_asking_for_what_is_not_served_are_refused(extra: dict[str, Any]) -> None:
    """A text answer without the audio, the search or the stream asked for would pass for what was asked."""
    message, _param = refused(**extra)
    assert next(iter(extra)) in message, message


def test_unknown_fields_are_taken_and_named() -> None:
    body = parse(max_token=5, temprature=0.2, store=True, metadata={"a": "b"}, modalities=["text"])
    assert body.ignored_fields() == ["max_token", "temprature"]


def test_unknown_fields_are_told_in_the_answers_reasons() -> None:
    from moai.config import load_config
    from moai.mixture import Mixture

    prep = Mixture(load_config(None)).prepare(parse(model="moai/default", max_token=5, verbosity="low"))
    assert any("not read" in n and "max_token" in n and "verbosity" not in n for n in prep.ctx.notes), prep.ctx.notes
    hostile = {"a\x1b[31mRED\x07\n<b>x</b>": 1, "y" * 5000: 2}
    prep = Mixture(load_config(None)).prepare(parse(model="moai/default", **hostile))
    (note,) = [n for n in prep.ctx.notes if "not read" in n]
    assert "\x1b" not in note and "\n" not in note and "\\x1b" in note, note  # escaped, not sent raw
    assert "y" * 40 + "…" in note and "y" * 41 not in note, note


@pytest.mark.parametrize(("message", "sent"), [
    ({"role": "assistant", "content": "", "refusal": "No."}, "No."),
    ({"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "refusal", "refusal": "No."}]}, None),
], ids=["empty-content-and-refusal", "user-refusal-part"])
def test_refusals_in_the_history(message: dict[str, Any], sent: str | None) -> None:
    """An assistant's refusal goes as its text when its content is empty too; a user's refusal part is no text."""
    body = parse(messages=[{"role": "user", "content": "hi"}, message, {"role": "user", "content": "ok"}])
    out = body.messages[1].to_provider()
    if sent is not None:
        assert out["content"] == sent
    else:
        assert {"type": "text", "text": "No."} not in out["content"]


def test_a_legacy_function_call_message_is_pointed_to_tool_calls() -> None:
    message, _ = refused(messages=[{"role": "user", "content": "hi"},
                                   {"role": "assistant", "content": None, "function_call": {"name": "f"}}])
    assert "function_call" in message and "tool_calls" in message
