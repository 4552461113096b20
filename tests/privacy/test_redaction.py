"""What a cloud-tier model is sent under `sensitive_data: redact`, and what the detector reads in a request:
tool-call arguments, values a trusted model wrote back in another form, tool definitions, participant
names, and card / IBAN numbers with wider separators."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moai.gate.privacy import Placeholders, Restorer, detect, redact, value_key
from moai.providers.base import ChatParams
from moai.strategies.privacy_guard import privacy_guard
from moai.strategies.redaction import Redactor, SensitiveHeldBack

CARD = "4539 1488 0343 6467"
EMAIL = "jean.dupont@orange.fr"
KEY = "sk-proj-Ab3xQ9LmN7pR2sT5vW8yZ1cD4eF6gH0jK2lM4nP6qR8sT0uV"
IBAN = "DE44 5001 0517 5407 3249 31"


def sent(params: ChatParams) -> str:
    """Everything in a call, as one text: what the untrusted model would read."""
    return json.dumps({"messages": params.messages, "tools": params.tools}, ensure_ascii=False)


def guard_for(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
              policy: str = "redact") -> Redactor:
    guard = privacy_guard(messages, policy, None, tools=tools)
    assert guard.redactor is not None
    return guard.redactor


def pay_tool(description: str, enum: list[str] | None = None) -> dict[str, Any]:
    who: dict[str, Any] = {"type": "string", "description": "who is paid"}
    if enum:
        who["enum"] = enum
    return {"type": "function", "function": {"name": "pay", "description": description, "parameters": {
        "type": "object", "properties": {"who": who}, "required": ["who"]}}}


# ------------------------------------------------------------------ 1. tool-call arguments


def test_tool_call_arguments_are_redacted_in_the_call_sent() -> None:
    messages = [
        {"role": "user", "content": "pay"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "pay", "arguments": '{"card":"4539148803436467"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    redactor = guard_for(messages)
    out = redactor.apply(ChatParams(messages=messages))
    call = out.messages[1]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"card": "[CARD_1]"}  # still JSON
    assert call["id"] == "c1" and call["function"]["name"] == "pay"
    assert "4539148803436467" not in sent(out)
    assert "4539148803436467" in messages[1]["tool_calls"][0]["function"]["arguments"]  # input untouched
    assert redactor.restore("charged [CARD_1]") == "charged 4539148803436467"


def test_arguments_found_only_in_context_or_behind_escapes_stay_valid_json() -> None:
    """A password is found next to its key in the raw JSON; an address with "ß" written as an escape only
    once decoded. Both are replaced and the arguments still parse."""
    args = json.dumps({"user": "admin", "password": "Blue!3830x",
                       "note": "Ich wohne in der Hauptstraße 12 in Köln"})  # ensure_ascii: "Hauptstra\\u00dfe"
    messages = [{"role": "user", "content": "log in for me"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "login", "arguments": args}}]}]
    out = Redactor().apply(ChatParams(messages=messages))
    got = json.loads(out.messages[1]["tool_calls"][0]["function"]["arguments"])
    assert got["user"] == "admin" and got["password"].startswith("[PASSWORD_")
    assert "Hauptstra" not in got["note"] and "[ADDRESS_" in got["note"]


def test_restore_arguments_escapes_for_json() -> None:
    redactor = Redactor({"[PASSWORD_1]": 'a"b\\c'})
    assert json.loads(redactor.restore_arguments('{"p": "[PASSWORD_1]"}')) == {"p": 'a"b\\c'}


# ------------------------------------------------------------------ 2. values written back in another form


def test_a_reformatted_copy_gets_the_same_placeholder() -> None:
    """A private proposer's answer quoted to a cloud aggregator: the card without spaces and the email in
    capitals are the values the user sent, so they get [CARD_1] and [EMAIL_1], and restoring them works."""
    request = [{"role": "user", "content": f"Write to {EMAIL} about card {CARD}"}]
    redactor = guard_for(request)
    aggregate = request + [{"role": "user", "content": "Answer 1: Card 4539148803436467 belongs to "
                                                       "JEAN.DUPONT@ORANGE.FR"}]
    out = redactor.apply(ChatParams(messages=aggregate))
    text = sent(out)
    assert "4539148803436467" not in text and EMAIL not in text.lower()
    assert out.messages[1]["content"] == "Answer 1: Card [CARD_1] belongs to [EMAIL_1]"
    assert redactor.restore("[EMAIL_1] / [CARD_1]") == f"{EMAIL} / {CARD}"


def test_a_new_value_in_a_cloud_bound_prompt_gets_a_new_placeholder_restored_live() -> None:
    """A trusted model adds a value the user never sent: it is redacted too, with the next free number, and
    a streaming restorer made before the call (as the executor makes it) still restores it."""
    request = [{"role": "user", "content": f"Write to {EMAIL} about my account"}]
    redactor = guard_for(request)
    restorer = redactor.restorer()
    out = redactor.apply(ChatParams(messages=request + [
        {"role": "assistant", "content": "Her other address is marie.curie1867@gmail.com"}]))
    assert out.messages[1]["content"] == "Her other address is [EMAIL_2]"
    assert redactor.mapping["[EMAIL_2]"] == "marie.curie1867@gmail.com"
    assert restorer.feed("to [EM") == "to " and restorer.feed("AIL_2] ok") == "marie.curie1867@gmail.com ok"


def test_a_request_with_nothing_found_still_gets_its_cloud_calls_scanned() -> None:
    """Nothing sensitive in the request, but a trusted model's answer quoted to a cloud model has a card."""
    redactor = guard_for([{"role": "user", "content": "Summarise the ticket."}])
    out = redactor.apply(ChatParams(messages=[{"role": "user", "content": f"Ticket: customer card {CARD}"}]))
    assert out.messages[0]["content"] == "Ticket: customer card [CARD_1]"
    assert privacy_guard([{"role": "user", "content": "hi"}], "allow", None).redactor is None


DISCLOSURE = "Intake notes: Jane Roe was diagnosed with HIV last year and takes antiretroviral therapy."


@pytest.mark.parametrize("policy", ["redact", "local_only", "private_ok"])
def test_a_disclosure_a_trusted_model_wrote_is_not_sent_to_an_untrusted_one(policy: str) -> None:
    """No placeholder hides a health disclosure: a cloud-bound call quoting one is refused before it leaves, as a
    refusal (422 no_trusted_model) so the step moves on to a trusted model."""
    redactor = guard_for([{"role": "user", "content": "Summarise the intake notes."}], policy=policy)
    call = ChatParams(messages=[{"role": "user", "content": f"Proposals:\n1. {DISCLOSURE}\nWrite the best answer."}])
    with pytest.raises(SensitiveHeldBack) as e:
        redactor.apply(call, "cloud-big")
    assert e.value.kinds == ["health"] and e.value.status == 422 and e.value.code == "no_trusted_model"
    assert e.value.retryable and str(e.value).startswith("cloud-big: not sent")
    # the next call of the same request is judged on its own: a plain one goes out
    assert redactor.apply(ChatParams(messages=[{"role": "user", "content": "Summarise the notes."}]))


def test_an_untrusted_call_is_held_for_confidential_detail_in_tool_arguments_too() -> None:
    redactor = guard_for([{"role": "user", "content": "File the report."}])
    call = ChatParams(messages=[{"role": "assistant", "content": None, "tool_calls": [{
        "id": "c1", "type": "function", "function": {
            "name": "file", "arguments": json.dumps({"text": "The merger terms are strictly confidential."})}}]}])
    with pytest.raises(SensitiveHeldBack) as e:
        redactor.apply(call, "cloud-big")
    assert e.value.kinds == ["confidential"]


def test_medical_knowledge_without_a_disclosure_is_sent() -> None:
    redactor = guard_for([{"role": "user", "content": "How is depression treated?"}])
    out = redactor.apply(ChatParams(messages=[{"role": "user", "content":
                                               "Common treatments for depression include SSRIs such as sertraline."}]))
    assert "sertraline" in out.messages[0]["content"]


def test_redact_gives_one_placeholder_to_one_value_whatever_its_form() -> None:
    text = f"card {CARD}, again 4539148803436467; mail {EMAIL} or {EMAIL.upper()}"
    red, mapping = redact(text, detect(text))
    assert red == "card [CARD_1], again [CARD_1]; mail [EMAIL_1] or [EMAIL_1]"
    assert mapping == {"[CARD_1]": CARD, "[EMAIL_1]": EMAIL}


def test_value_key_normalises_by_kind() -> None:
    assert value_key("CARD", "4539-1488.0343 6467") == value_key("CARD", "4539148803436467")
    assert value_key("IBAN", "de44 5001 0517 5407 3249 31") == value_key("IBAN", "DE44500105175407324931")
    assert value_key("EMAIL", "Jean.Dupont@Orange.FR") == value_key("EMAIL", EMAIL)
    assert value_key("PASSWORD", "Hunter2") != value_key("PASSWORD", "hunter2")  # a password is exact


def test_placeholders_continue_numbering_from_a_mapping() -> None:
    p = Placeholders({"[EMAIL_1]": EMAIL, "[EMAIL_3]": "a.b@web.de"})
    assert p.token("EMAIL", EMAIL.upper()) == "[EMAIL_1]"
    assert p.token("EMAIL", "c.d@web.de") == "[EMAIL_4]" and p.mapping["[EMAIL_4]"] == "c.d@web.de"


def test_restorer_reads_the_mapping_live() -> None:
    mapping: dict[str, str] = {}
    r = Restorer(mapping)
    mapping["[CARD_12]"] = CARD
    assert r.feed("card [CARD_") == "card " and r.feed("12].") == f"{CARD}."


# ------------------------------------------------------------------ 3. tool definitions and names


def test_tool_definitions_and_names_are_scanned() -> None:
    tools = [pay_tool(f"Pays through the gateway with key {KEY}", enum=[EMAIL, "someone else"])]
    rep = detect([{"role": "user", "content": "Pay the usual people."}], tools)
    assert rep.kinds == ["secret", "contact"]
    assert {(d.message, d.field) for d in rep.detections} == {(None, "tools.0")}
    assert all(KEY not in r and EMAIL not in r for r in rep.reasons())
    named = detect([{"role": "user", "content": "hello", "name": EMAIL}])
    assert [(d.kind, d.message, d.field) for d in named.detections] == [("contact", 0, "name")]


def test_local_only_keeps_a_request_whose_tools_carry_a_secret_off_the_cloud() -> None:
    messages = [{"role": "user", "content": "Pay the usual people."}]
    tools = [pay_tool(f"Use key {KEY}")]
    assert privacy_guard(messages, "local_only", None).max_tier is None
    guard = privacy_guard(messages, "local_only", None, tools=tools)
    assert guard.max_tier == "local" and guard.report.kinds == ["secret"]
    assert any("tools.0" in n for n in guard.notes)
    named = privacy_guard([{"role": "user", "content": "hi", "name": EMAIL}], "local_only", None)
    assert named.max_tier == "local"


def test_redact_rewrites_tool_definitions_and_names_but_not_identifiers() -> None:
    messages = [{"role": "user", "content": "Pay the usual people.", "name": EMAIL}]
    tools = [pay_tool(f"Use key {KEY}", enum=[EMAIL, "someone else"])]
    redactor = guard_for(messages, tools)
    out = redactor.apply(ChatParams(messages=messages, tools=tools))
    assert KEY not in sent(out) and EMAIL not in sent(out)
    fn = out.tools[0]["function"]
    assert fn["name"] == "pay" and fn["description"] == "Use key [SECRET_1]"
    assert fn["parameters"]["properties"]["who"]["enum"] == ["[EMAIL_1]", "someone else"]
    assert fn["parameters"]["properties"]["who"]["type"] == "string"
    assert out.messages[0]["name"] == "[EMAIL_1]"
    assert tools[0]["function"]["description"] == f"Use key {KEY}"  # input untouched
    assert redactor.restore("[SECRET_1]") == KEY


def test_tool_definitions_are_redacted_even_when_the_check_did_not_see_them() -> None:
    """A caller that runs the check on the messages alone still gets the tools redacted at send time."""
    messages = [{"role": "user", "content": "Pay the usual people."}]
    tools = [pay_tool("Helper.", enum=["x"])]
    tools[0]["function"]["parameters"]["properties"]["key"] = {"type": "string", "default": KEY}
    out = guard_for(messages).apply(ChatParams(messages=messages, tools=tools))
    assert KEY not in sent(out) and out.tools[0]["function"]["parameters"]["properties"]["key"]["default"] \
        == "[SECRET_1]"


def test_a_json_schema_response_format_is_scanned_and_redacted() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": {
        "type": "object", "properties": {"to": {"type": "string", "enum": [EMAIL, "nobody"]}}}}}
    messages = [{"role": "user", "content": "Reply."}]
    rep = detect(messages, None, fmt)
    assert [(d.kind, d.message, d.field) for d in rep.detections] == [("contact", None, "response_format")]
    assert detect(messages, None, {"type": "json_object"}).sensitive is False
    out = guard_for(messages).apply(ChatParams(messages=messages, response_format=fmt))
    assert out.response_format is not None and EMAIL not in json.dumps(out.response_format)
    props = out.response_format["json_schema"]["schema"]["properties"]
    assert props["to"] == {"type": "string", "enum": ["[EMAIL_1]", "nobody"]}
    assert fmt["json_schema"]["schema"]["properties"]["to"]["enum"][0] == EMAIL  # input untouched


# ------------------------------------------------------------------ 4. wider separators


@pytest.mark.parametrize("text, kind, value", [
    ("charge card 4539 - 1488 - 0343 - 6467 today", "payment_card", "4539 - 1488 - 0343 - 6467"),
    ("charge card 4539  1488  0343  6467 today", "payment_card", "4539  1488  0343  6467"),
    ("charge card 4539.1488.0343.6467.", "payment_card", "4539.1488.0343.6467"),
    ("charge card 4539_1488_0343_6467 today", "payment_card", "4539_1488_0343_6467"),
    ("charge card 4539-1488-0343-6467 today", "payment_card", "4539-1488-0343-6467"),
    ("Amex 3715 - 501234 - 56787 please", "payment_card", "3715 - 501234 - 56787"),
    ("my IBAN is DE44-5001-0517-5407-3249-31, thanks", "iban", "DE44-5001-0517-5407-3249-31"),
    ("my IBAN is DE44.5001.0517.5407.3249.31", "iban", "DE44.5001.0517.5407.3249.31"),
    ("my IBAN is DE44  5001  0517  5407  3249  31 BIC COBADEFFXXX", "iban", "DE44  5001  0517  5407  3249  31"),
    ("NI AB813702C - bank GB94 MIDL 2941 6702 8153 70", "iban", "GB94 MIDL 2941 6702 8153 70"),
])
def test_cards_and_ibans_with_wider_separators(text: str, kind: str, value: str) -> None:
    rep = detect(text)
    assert [(d.kind, text[d.start:d.end]) for d in rep.detections if d.kind == kind] == [(kind, value)]


@pytest.mark.parametrize("text", [
    "upgrade from 4539.1488.0343.6467.1 to the next build",  # a dotted version, longer than a card
    "hosts 45.33.32.156 45.33.32.157 45.33.32.158 45.33.32.159 are down",  # dotted IPs: no group of 4
    "the log has 2024.0115.1432.0001 and 2024.0115.1432.0002",  # timestamps: no brand, or Luhn fails
    "call 06.12.34.56.78 or 07.98.76.54.32",  # dotted French phones: groups of 2
    "card 4539.1488.0343.6468",  # Luhn fails
    "card 4539 - 1488 - 0343-6467",  # separators that change midway are not one number
    "IBAN DE44-5001-0517-5407-3249-32",  # mod-97 fails
])
def test_wider_separators_do_not_make_lookalikes_sensitive(text: str) -> None:
    assert not {"payment_card", "iban"} & set(detect(text).kinds)
