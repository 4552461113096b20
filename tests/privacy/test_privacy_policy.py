"""The sensitive-data policy through the real server: which providers get called, redaction, refusals."""

from __future__ import annotations

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
               "onprem": Script(reply="on-prem answer"), "laptop": Script(reply="local answer")}
    with StubServer(scripts["cloud"]) as cloud, StubServer(scripts["onprem"]) as onprem, \
            StubServer(scripts["laptop"]) as laptop:
        cfg = f"""
models:
  cloud-big: {{provider: openai_compat, endpoint: "{cloud.url}", privacy: cloud, params_b: 400, max_retries: 0}}
  onprem: {{provider: openai_compat, endpoint: "{onprem.url}", privacy: private, params_b: 30, max_retries: 0}}
  laptop: {{provider: openai_compat, endpoint: "{laptop.url}", privacy: local, params_b: 1, max_retries: 0}}
mixes:
  local_only: {{strategy: route, models: [cloud-big, laptop], constraints: {{sensitive_data: local_only}}}}
  private_ok: {{strategy: route, models: [cloud-big, onprem], constraints: {{sensitive_data: private_ok}}}}
  cloud_only_strict: {{strategy: route, models: [cloud-big], constraints: {{sensitive_data: local_only}}}}
  redact: {{strategy: route, models: [cloud-big], constraints: {{sensitive_data: redact}}}}
  open: {{strategy: route, models: [cloud-big, laptop], constraints: {{sensitive_data: allow}}}}
  team: {{strategy: moa, proposers: [cloud-big, onprem, laptop], aggregator: cloud-big,
          constraints: {{sensitive_data: private_ok}}}}
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
    import json

    out = json.loads(r.output)
    assert set(out) >= {"model", "strategy", "sensitive", "kinds", "reasons", "scores"}
    assert out["sensitive"] is True and out["kinds"] == ["iban"] and out["strategy"] == "route"
    assert out["model"] in out["scores"]
    r = runner.invoke(app, ["route", "--json", "--mix", "nope", "hi"])
    assert r.exit_code == 2 and "does not exist" in r.output
