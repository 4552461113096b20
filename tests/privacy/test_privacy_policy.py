"""The sensitive-data policy through the real server: which providers get called, redaction, refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from servers import MoaiServer, start_moai, stop
from stub_openai import Script, StubServer
from typer.testing import CliRunner

from moai.cli import app

pytestmark = pytest.mark.integration

CARD = "Please check my card 4539 1488 0343 6467 and email me at jane.roe@fastmail.com"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MoaiServer, dict[str, Script]]]:
    scripts = {"cloud": Script(reply="Done, I wrote to [EMAIL_1] about card [CARD_1]."),
               "onprem": Script(reply="on-prem answer"), "laptop": Script(reply="local answer"),
               # a trusted model that writes the user's values back in another form
               "reformat": Script(reply="Card 4539148803436467 belongs to JEAN.DUPONT@ORANGE.FR"),
               # a cloud model that answers with a tool call quoting the placeholders it was given
               "caller": Script(tool_call=("send_email", '{"to": "[EMAIL_1]", "body": "card [CARD_1]"}')),
               # a trusted model whose answer discloses a diagnosis the user never sent
               "discloser": Script(reply="Intake notes: Jane Roe was diagnosed with HIV last year and takes "
                                         "antiretroviral therapy.")}
    with StubServer(scripts["cloud"]) as cloud, StubServer(scripts["onprem"]) as onprem, \
            StubServer(scripts["laptop"]) as laptop, StubServer(scripts["reformat"]) as reformat, \
            StubServer(scripts["caller"]) as caller, StubServer(scripts["discloser"]) as discloser:
        cfg = f"""
models:
  cloud-big: {{provider: openai_compat, endpoint: "{cloud.url}", privacy: cloud, params_b: 400, max_retries: 0}}
  cloud-tools: {{provider: openai_compat, endpoint: "{cloud.url}", privacy: cloud, params_b: 400, max_retries: 0,
                 supports_tools: true}}
  onprem: {{provider: openai_compat, endpoint: "{onprem.url}", privacy: private, params_b: 30, max_retries: 0}}
  reformat: {{provider: openai_compat, endpoint: "{reformat.url}", privacy: private, params_b: 30, max_retries: 0}}
  laptop: {{provider: openai_compat, endpoint: "{laptop.url}", privacy: local, params_b: 1, max_retries: 0}}
  discloser: {{provider: openai_compat, endpoint: "{discloser.url}", privacy: private, params_b: 30, max_retries: 0}}
  cloud-caller: {{provider: openai_compat, endpoint: "{caller.url}", privacy: cloud, params_b: 400, max_retries: 0,
                  supports_tools: true}}
mixes:
  local_only: {{strategy: route, models: [cloud-big, laptop], constraints: {{sensitive_data: local_only}}}}
  private_ok: {{strategy: route, models: [cloud-big, onprem], constraints: {{sensitive_data: private_ok}}}}
  cloud_only_strict: {{strategy: route, models: [cloud-big], constraints: {{sensitive_data: local_only}}}}
  redact: {{strategy: route, models: [cloud-big], constraints: {{sensitive_data: redact}}}}
  open: {{strategy: route, models: [cloud-big, laptop], constraints: {{sensitive_data: allow}}}}
  team: {{strategy: moa, proposers: [cloud-big, onprem, laptop], aggregator: cloud-big,
          constraints: {{sensitive_data: private_ok}}}}
  redact_team: {{strategy: moa, proposers: [reformat, cloud-big], aggregator: cloud-big,
                 constraints: {{sensitive_data: redact}}}}
  redact_chain: {{strategy: chain, steps: [{{model: reformat}}, {{model: cloud-big}}],
                  constraints: {{sensitive_data: redact}}}}
  health_team: {{strategy: moa, proposers: [discloser, cloud-big], aggregator: cloud-big,
                 constraints: {{sensitive_data: redact}}}}
  health_chain: {{strategy: chain, steps: [{{model: discloser}}, {{model: cloud-big}}],
                  constraints: {{sensitive_data: local_only}}}}
  redact_tools: {{strategy: route, models: [cloud-tools], constraints: {{sensitive_data: redact}}}}
  strict_tools: {{strategy: route, models: [cloud-tools], constraints: {{sensitive_data: local_only}}}}
  redact_caller: {{strategy: route, models: [cloud-caller], constraints: {{sensitive_data: redact}}}}
"""
        server = start_moai(cfg, Path(tmp_path_factory.mktemp("privacy")))
        try:
            yield server, scripts
        finally:
            stop(server.proc)


def ask(server: MoaiServer, mix: str, text: str, **extra: object):  # type: ignore[no-untyped-def]
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    return c.chat.completions.create(model=f"moai/{mix}", messages=[{"role": "user", "content": text}],
                                     extra_body=extra or None)


def calls(scripts: dict[str, Script]) -> dict[str, int]:
    return {k: s.calls for k, s in scripts.items()}


def test_local_only_never_calls_a_cloud_model(servers) -> None:  # type: ignore[no-untyped-def]
    server, scripts = servers
    before = calls(scripts)
    resp = ask(server, "local_only", CARD)
    after = calls(scripts)
    assert after["cloud"] == before["cloud"] and after["laptop"] == before["laptop"] + 1
    moai = resp.model_extra["moai"]
    assert moai["model"] == "laptop"
    assert moai["privacy"]["sensitive"] and {"payment_card", "contact"} <= set(moai["privacy"]["kinds"])
    assert any("local_only" in r for r in moai["reason"])


def test_a_disclosure_only_the_learned_model_sees_stays_local(servers) -> None:  # type: ignore[no-untyped-def]
    """No lexicon word, no marker: the rules alone would let this go to the cloud (checked in
    tests/gate/test_privacy_learned.py); the learned second opinion keeps it on the laptop, and `redact`
    cannot hide it with a placeholder, so that mix keeps it off the cloud too."""
    server, scripts = servers
    text = ("Since the accident my brother can't feel his legs and the wheelchair doesn't fit in our car, "
            "what are my options?")
    before = calls(scripts)
    resp = ask(server, "local_only", text)
    after = calls(scripts)
    assert after["cloud"] == before["cloud"] and after["laptop"] == before["laptop"] + 1
    privacy = resp.model_extra["moai"]["privacy"]
    assert privacy["kinds"] == ["health"] and not privacy["redactable"]
    assert any("learned classifier" in r for r in resp.model_extra["moai"]["reason"])
    with pytest.raises(openai.UnprocessableEntityError):  # redact mix: cloud only, nothing private to fall to
        ask(server, "redact", text)
    assert calls(scripts)["cloud"] == before["cloud"]


def test_benign_query_may_use_the_cloud(servers) -> None:  # type: ignore[no-untyped-def]
    server, scripts = servers
    resp = ask(server, "local_only", "Explain how the Luhn checksum works, step by step, with an example.")
    assert not resp.model_extra["moai"]["privacy"]["sensitive"]
    assert "cloud-big" not in resp.model_extra["moai"]["decision"]["excluded"]


def test_private_ok_uses_private_models_even_in_collaboration(servers) -> None:  # type: ignore[no-untyped-def]
    server, scripts = servers
    before = calls(scripts)
    resp = ask(server, "team", CARD)
    after = calls(scripts)
    assert after["cloud"] == before["cloud"]  # neither as proposer nor as aggregator
    assert set(resp.model_extra["moai"]["models_used"]) <= {"onprem", "laptop"}


def test_refused_when_no_trusted_model(servers) -> None:  # type: ignore[no-untyped-def]
    server, scripts = servers
    before = calls(scripts)
    with pytest.raises(openai.UnprocessableEntityError) as e:
        ask(server, "cloud_only_strict", CARD)
    assert e.value.body["code"] == "no_trusted_model"
    assert calls(scripts) == before


def test_redaction_round_trip(servers) -> None:  # type: ignore[no-untyped-def]
    server, scripts = servers
    resp = ask(server, "redact", CARD)
    sent = scripts["cloud"].seen[-1]["messages"][-1]["content"]
    assert "4539" not in sent and "jane.roe@fastmail.com" not in sent
    assert "[CARD_1]" in sent and "[EMAIL_1]" in sent
    answer = resp.choices[0].message.content
    assert "jane.roe@fastmail.com" in answer and "4539 1488 0343 6467" in answer


def test_redaction_round_trip_streaming(servers) -> None:  # type: ignore[no-untyped-def]
    server, _ = servers
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    chunks = list(c.chat.completions.create(model="moai/redact", messages=[{"role": "user", "content": CARD}],
                                            stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert "jane.roe@fastmail.com" in text and "[EMAIL_1]" not in text


def cloud_saw(scripts: dict[str, Script], since: int) -> str:
    """Every request body the cloud stub received after its first `since` ones, as one lower-cased text."""
    return json.dumps(scripts["cloud"].seen[since:], ensure_ascii=False).lower()


KEY = "sk-proj-Ab3xQ9LmN7pR2sT5vW8yZ1cD4eF6gH0jK2lM4nP6qR8sT0uV"
TOOLS = [{"type": "function", "function": {
    "name": "lookup", "description": f"Looks a customer up. Authenticate with {KEY}.",
    "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": "search text"}}}}}]


def test_redaction_covers_tool_call_arguments(servers) -> None:  # type: ignore[no-untyped-def]
    server, scripts = servers
    since = len(scripts["cloud"].seen)
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    resp = c.chat.completions.create(model="moai/redact", messages=[
        {"role": "user", "content": "pay"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "pay", "arguments": json.dumps({"card": "4539148803436467"})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}])
    saw = cloud_saw(scripts, since)
    assert "4539148803436467" not in saw
    args = scripts["cloud"].seen[-1]["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(args) == {"card": "[CARD_1]"}
    assert "4539148803436467" in resp.choices[0].message.content  # the answer's [CARD_1], restored


@pytest.mark.parametrize("mix", ["redact_team", "redact_chain"])
def test_redaction_catches_a_trusted_models_reformatted_copy(servers, mix: str) -> None:  # type: ignore[no-untyped-def]
    """The private model answers with the card's digits run together and the email in capitals; the cloud
    model that reads that answer (aggregator, next link) must see placeholders, the same ones."""
    server, scripts = servers
    since, private_before = len(scripts["cloud"].seen), scripts["reformat"].calls
    resp = ask(server, mix, "Write to jean.dupont@orange.fr about card 4539 1488 0343 6467")
    assert scripts["reformat"].calls == private_before + 1
    saw = cloud_saw(scripts, since)
    assert "4539148803436467" not in saw and "4539 1488" not in saw and "jean.dupont" not in saw
    quoted = [b for b in scripts["cloud"].seen[since:] if "belongs to" in json.dumps(b)]
    assert quoted and "card [card_1] belongs to [email_1]" in json.dumps(quoted[-1]).lower()
    answer = resp.choices[0].message.content
    assert "jean.dupont@orange.fr" in answer and "4539 1488 0343 6467" in answer


@pytest.mark.parametrize("mix", ["health_team", "health_chain"])
def test_a_disclosure_written_mid_plan_never_reaches_the_cloud(servers, mix: str) -> None:  # type: ignore[no-untyped-def]
    """A benign question, but the trusted proposer (or first link) answers with a diagnosis: the cloud aggregator
    (next link) is not sent it. The step moves on to the gate's next model, a trusted one, so the request succeeds
    and the cloud saw nothing."""
    server, scripts = servers
    since, before = len(scripts["cloud"].seen), calls(scripts)
    resp = ask(server, mix, "Summarise the intake notes in one line.")
    assert "hiv" not in cloud_saw(scripts, since) and "antiretroviral" not in cloud_saw(scripts, since)
    moai = resp.model_extra["moai"]
    assert calls(scripts)["discloser"] == before["discloser"] + 1
    assert moai["model"] in {"onprem", "laptop", "reformat", "discloser"}
    held = [a for s in moai["trace"] for a in s.get("attempts", []) if "not sent" in (a.get("error") or "")]
    assert held and held[0]["model"] == "cloud-big" and held[0]["status"] == 422


def test_redaction_covers_tool_definitions_and_names(servers) -> None:  # type: ignore[no-untyped-def]
    server, scripts = servers
    since = len(scripts["cloud"].seen)
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    user = {"role": "user", "content": "Find the customer.", "name": "b.keller1961@web.de"}
    c.chat.completions.create(model="moai/redact_tools", tools=TOOLS, messages=[user])  # type: ignore[arg-type]
    saw = cloud_saw(scripts, since)
    assert KEY.lower() not in saw and "b.keller1961" not in saw
    body = scripts["cloud"].seen[-1]
    assert body["tools"][0]["function"]["description"] == "Looks a customer up. Authenticate with [SECRET_1]."
    assert body["tools"][0]["function"]["name"] == "lookup" and body["messages"][-1]["name"] == "[EMAIL_1]"


SCHEMA = {"type": "json_schema", "json_schema": {"name": "customer", "schema": {
    "type": "object", "description": f"A customer record; the lookup key is {KEY}.",
    "properties": {"email": {"type": "string", "default": "b.keller1961@web.de"}}, "required": ["email"]}}}


@pytest.mark.parametrize("mix, extra, message", [
    ("cloud_only_strict", {}, {"role": "user", "content": "hello", "name": "b.keller1961@web.de"}),
    ("strict_tools", {"tools": TOOLS}, {"role": "user", "content": "Find the customer."}),
    ("cloud_only_strict", {"response_format": SCHEMA}, {"role": "user", "content": "Describe a customer."}),
], ids=["name", "tool_definitions", "response_format"])
def test_local_only_refuses_what_it_cannot_send(servers, mix: str, extra: dict[str, object],  # type: ignore[no-untyped-def]
                                                message: dict[str, str]) -> None:
    """A participant's name, a tool definition or a response schema carrying sensitive data: 422, no call made."""
    server, scripts = servers
    before = calls(scripts)
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as e:
        c.chat.completions.create(model=f"moai/{mix}", messages=[message], **extra)  # type: ignore[arg-type]
    assert e.value.body["code"] == "no_trusted_model" and calls(scripts) == before


def test_redaction_covers_a_json_schema_response_format(servers) -> None:  # type: ignore[no-untyped-def]
    """A schema's descriptions and defaults reach the model as surely as the messages do."""
    server, scripts = servers
    since = len(scripts["cloud"].seen)
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    c.chat.completions.create(model="moai/redact", response_format=SCHEMA,  # type: ignore[arg-type]
                              messages=[{"role": "user", "content": "Describe a customer."}])
    saw = cloud_saw(scripts, since)
    assert KEY.lower() not in saw and "b.keller1961" not in saw
    fmt = scripts["cloud"].seen[-1]["response_format"]
    schema = fmt["json_schema"]["schema"]
    assert schema["description"] == "A customer record; the lookup key is [SECRET_1]."
    assert schema["properties"]["email"] == {"type": "string", "default": "[EMAIL_1]"}
    assert fmt["json_schema"]["name"] == "customer" and schema["required"] == ["email"]


def test_a_request_can_raise_but_not_lower_its_privacy(servers) -> None:  # type: ignore[no-untyped-def]
    server, scripts = servers
    before = calls(scripts)
    raised = ask(server, "open", CARD, moai={"sensitive_data": "local_only"})
    assert raised.model_extra["moai"]["model"] == "laptop"
    lowered = ask(server, "local_only", CARD, moai={"sensitive_data": "allow", "privacy": "cloud"})
    assert lowered.model_extra["moai"]["model"] == "laptop"
    assert any("kept local_only" in r for r in lowered.model_extra["moai"]["reason"])
    assert calls(scripts)["cloud"] == before["cloud"]


def test_route_cli_prints_the_decision(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["route", "--json", "My IBAN is DE44 5001 0517 5407 3249 31, pay my rent"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out) >= {"model", "strategy", "sensitive", "kinds", "reasons", "scores"}
    assert out["sensitive"] is True and out["kinds"] == ["iban"] and out["strategy"] == "route"
    assert out["model"] in out["scores"]
    r = runner.invoke(app, ["route", "--json", "--mix", "nope", "hi"])
    assert r.exit_code == 2 and "unknown mix or model 'nope'" in r.output


SEND = [{"type": "function", "function": {"name": "send_email", "parameters": {
    "type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}}}}}]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_from_a_cloud_model_get_the_values_back(servers, stream: bool) -> None:  # type: ignore[no-untyped-def]
    """The cloud model saw placeholders and called a tool with them: the caller gets the real values, in valid
    JSON, also when a stream splits a placeholder across two pieces of the arguments."""
    server, scripts = servers
    since = len(scripts["caller"].seen)
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    kw = {"model": "moai/redact_caller", "tools": SEND,
          "messages": [{"role": "user", "content": "Email jean.dupont@orange.fr about card 4539 1488 0343 6467"}]}
    if stream:
        with c.chat.completions.stream(**kw) as s:
            for _ in s:
                pass
            calls_out = s.get_final_completion().choices[0].message.tool_calls
    else:
        calls_out = c.chat.completions.create(**kw).choices[0].message.tool_calls
    assert calls_out and calls_out[0].function.name == "send_email"
    args = json.loads(calls_out[0].function.arguments)
    assert args == {"to": "jean.dupont@orange.fr", "body": "card 4539 1488 0343 6467"}
    saw = json.dumps(scripts["caller"].seen[since:]).lower()
    assert "jean.dupont" not in saw and "4539" not in saw and "[email_1]" in saw
