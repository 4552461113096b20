"""Values and disclosures that hide in the shape of a request rather than in its words: padding around a
disclosure, identifiers in tool schemas, JSON escapes, stop sequences, values split across texts, invisible
or full-width characters, a trusted model's rewritten copy, and placeholder-shaped text the user typed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moai.gate.privacy import detect, detect_text, redact
from moai.providers.base import ChatParams
from moai.strategies.privacy_guard import privacy_guard
from moai.strategies.redaction import Redactor, SensitiveHeldBack

CARD = "4539 1488 0343 6467"
EMAIL = "jane.roe@fastmail.com"
DISCLOSURE = ("Since the accident my brother can't feel his legs and the wheelchair doesn't fit in our car, "
              "what are my options?")


def user(text: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def sent(params: ChatParams) -> str:
    return json.dumps({"messages": params.messages, "tools": params.tools, "fmt": params.response_format,
                       "stop": params.stop, "choice": params.tool_choice}, ensure_ascii=False)


def test_an_unrelated_sentence_does_not_dilute_a_disclosure() -> None:
    padded = "Also, separately, please give me three tips for writing clear unit tests in Python with pytest. "
    assert detect(padded + DISCLOSURE).kinds == ["health"]


def test_a_quoted_answer_in_a_chain_prompt_is_still_a_disclosure() -> None:
    prompt = ("Improve the previous answer. Keep it short.\n\nPrevious answer:\n"
              "Bob's blood test came back positive for hepatitis C.")
    with pytest.raises(SensitiveHeldBack):
        Redactor().apply(ChatParams(messages=user(prompt)))


@pytest.mark.parametrize("text", [
    "Translate 'I have diabetes' into French.",
    "Translate into Spanish: 'My father has cancer'.",
    "A 45-year-old patient presents with chest pain and diabetes. What is the differential?",
])
def test_words_to_translate_and_case_vignettes_are_about_nobody(text: str) -> None:
    assert not detect(text).sensitive


def test_a_translation_for_someone_the_asker_knows_is_still_read() -> None:
    assert detect("Translate 'I have diabetes' into French for my mother, she was diagnosed last week.").sensitive


def test_tool_schema_keys_and_nested_name_values_are_redacted() -> None:
    tools = [{"type": "function", "function": {"name": "notify", "description": "notify a customer",
              "parameters": {"type": "object", "properties": {EMAIL: {"type": "string"}},
                             "examples": [{"name": EMAIL, "type": "card " + CARD}]}}}]
    messages = user("notify")
    guard = privacy_guard(messages, "redact", None, tools=tools)
    assert guard.redactor is not None and set(guard.report.kinds) == {"payment_card", "contact"}
    out = guard.redactor.apply(ChatParams(messages=messages, tools=tools))
    assert EMAIL not in sent(out) and CARD not in sent(out)
    fn = out.tools[0]["function"]
    assert fn["name"] == "notify" and fn["parameters"]["type"] == "object"
    assert fn["parameters"]["properties"] == {"[EMAIL_1]": {"type": "string"}}


def test_response_format_nested_name_values_are_redacted() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": {
        "type": "object", "properties": {"amount": {"type": "number"}}, "examples": [{"name": EMAIL}]}}}
    messages = user("give amount")
    guard = privacy_guard(messages, "redact", None, response_format=fmt)
    assert guard.redactor is not None and guard.report.kinds == ["contact"]
    out = guard.redactor.apply(ChatParams(messages=messages, response_format=fmt))
    assert out.response_format is not None and EMAIL not in json.dumps(out.response_format)
    assert out.response_format["json_schema"]["name"] == "out"


def test_escaped_tool_call_arguments_are_detected_and_never_sent_decoded() -> None:
    args = '{"jane.roe\\u0040fastmail.com": "x", "note": "card 4539\\u00201488\\u00200343\\u00206467"}'
    messages = [{"role": "user", "content": "look it up"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": args}}]}]
    assert set(detect(messages).kinds) == {"payment_card", "contact"}
    assert privacy_guard(messages, "local_only", None).max_tier == "local"
    guard = privacy_guard(messages, "redact", None)
    assert guard.redactor is not None
    out = guard.redactor.apply(ChatParams(messages=messages))
    got = json.loads(out.messages[1]["tool_calls"][0]["function"]["arguments"])
    assert EMAIL not in json.dumps(got, ensure_ascii=False) and "4539" not in json.dumps(got)


def test_stop_sequences_and_tool_choice_are_scanned_and_redacted() -> None:
    messages = user("Write a poem.")
    assert privacy_guard(messages, "local_only", None, stop=[CARD]).max_tier == "local"
    choice = {"type": "function", "function": {"name": "f", "arguments": EMAIL}}
    assert detect(messages, tool_choice=choice).kinds == ["contact"]
    out = Redactor().apply(ChatParams(messages=messages, stop=[CARD, "END"], tool_choice=choice))
    assert CARD not in sent(out) and EMAIL not in sent(out)
    assert out.stop is not None and out.stop[1] == "END" and out.tool_choice["function"]["name"] == "f"


@pytest.mark.parametrize("messages", [
    user([{"type": "text", "text": "My card is 4539 1488"}, {"type": "text", "text": "0343 6467, is it valid?"}]),
    [{"role": "user", "content": "First half of my card: 4539 1488"}, {"role": "assistant", "content": "ok"},
     {"role": "user", "content": "second half: 0343 6467"}],
])
def test_a_card_split_across_parts_or_turns_is_found_and_redacted(messages: list[dict[str, Any]]) -> None:
    assert detect(messages).kinds == ["payment_card"]
    guard = privacy_guard(messages, "redact", None)
    assert guard.redactor is not None
    out = guard.redactor.apply(ChatParams(messages=messages))
    text = sent(out)
    assert "1488" not in text and "0343" not in text and "[CARD_1]" in text
    assert guard.redactor.restore("[CARD_1]") == "4539 1488 0343 6467"


@pytest.mark.parametrize("text, kind", [
    ("card 4539\u200b1488\u200b0343\u200b6467", "payment_card"),
    ("card 4539/1488/0343/6467", "payment_card"),
    ("mail me at jane.roe\uff20fastmail.com", "contact"),
    ("mail me at jane.roe\u200b@fastmail.com", "contact"),
])
def test_invisible_and_full_width_characters_do_not_hide_a_value(text: str, kind: str) -> None:
    assert detect(text).kinds == [kind]
    out = Redactor().apply(ChatParams(messages=user(text)))
    assert "1488" not in sent(out) and "fastmail" not in sent(out)


@pytest.mark.parametrize("text, value", [
    ('My bank password is Ab"cd1234! - is it strong enough?', 'Ab"cd1234'),
    ("why does curl -u admin:S3cr3tP4ss! https://api.internal.corp/v1/users return 403?", "S3cr3tP4ss!"),
    ("pw=Xk9#mQ2$vL", "Xk9#mQ2$vL"),
])
def test_passwords_with_quotes_or_on_a_command_line(text: str, value: str) -> None:
    assert [text[h.start:h.end] for h in detect_text(text) if h.kind == "secret"] == [value]


@pytest.mark.parametrize("text", ["curl -u user:password https://x", "the password is \"hunter2x\"."])
def test_command_line_placeholders_and_quoted_values(text: str) -> None:
    assert [text[h.start:h.end] for h in detect_text(text)] in ([], ["hunter2x"])


def test_a_trusted_models_rewritten_copy_is_replaced() -> None:
    guard = privacy_guard(user(f"My card is {CARD}, mail {EMAIL}."), "redact", None)
    assert guard.redactor is not None
    answer = "Noted: card 4539/1488/0343/6467 and mail jane.roe [at] fastmail [dot] com, or JANE.ROE (at) FASTMAIL.COM"
    out = guard.redactor.apply(ChatParams(messages=[{"role": "user", "content": "Improve:\n" + answer}]))
    text = sent(out)
    assert "1488" not in text and "fastmail" not in text.lower()
    assert text.count("[CARD_1]") == 1 and text.count("[EMAIL_1]") == 2


def test_a_placeholder_the_user_typed_is_not_restored_as_a_value() -> None:
    messages = user(f"In my template the token [EMAIL_1] must stay literal. My address is {EMAIL}.")
    guard = privacy_guard(messages, "redact", None)
    assert guard.redactor is not None
    out = guard.redactor.apply(ChatParams(messages=messages))
    assert out.messages[0]["content"] == ("In my template the token [EMAIL_1] must stay literal. "
                                          "My address is [EMAIL_2].")
    assert guard.redactor.restore("The literal token is [EMAIL_1]; yours is [EMAIL_2].") == \
        f"The literal token is [EMAIL_1]; yours is {EMAIL}."
    _, mapping = redact(messages, detect(messages))
    assert "[EMAIL_1]" not in mapping
