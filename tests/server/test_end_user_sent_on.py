"""A chat request's end user (OpenAI's ``user`` and ``safety_identifier``) reaches the upstream, which uses it to
monitor abuse: as given to OpenAI, as ``metadata.user_id`` to Anthropic; on every call of a mix, and beside a
redacted request. A value moai's privacy scan flags (an email address) is kept from cloud models. Other
OpenAI-compatible servers get neither (some refuse fields they do not know)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from stub_anthropic import StubAnthropic
from stub_openai import StubServer

from moai.api import shutdown
from moai.config import parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.server.app import create_app

pytestmark = pytest.mark.integration

EMAIL_USER = "alice.smith@acme-corp.com"


class Upstreams:
    def __init__(self, cloud: StubServer, own: StubServer, compat: StubServer, claude: StubAnthropic,
                 client: TestClient, vllm: StubServer) -> None:
        self.cloud, self.own, self.compat, self.claude, self.client = cloud, own, compat, claude, client
        self.vllm = vllm

    def ask(self, mix: str, text: str = "Hi!", **fields: Any) -> Any:
        body = {"model": f"moai/{mix}", "messages": [{"role": "user", "content": text}], **fields}
        return self.client.post("/v1/chat/completions", json=body)


@pytest.fixture(scope="module")
def up() -> Iterator[Upstreams]:
    with (StubServer() as cloud, StubServer() as own, StubServer() as compat, StubServer() as vllm,
          StubAnthropic() as claude):
        config = parse_config(f"""
models:
  gpt: {{provider: openai, endpoint: "{cloud.url}", model: stub, privacy: cloud, max_retries: 0}}
  own: {{provider: openai, endpoint: "{own.url}", privacy: private, max_retries: 0}}
  compat: {{provider: openai_compat, endpoint: "{compat.url}", privacy: private, max_retries: 0}}
  vllm: {{provider: openai_compat, endpoint: "{vllm.url}", privacy: private, max_retries: 0, send_end_user: true}}
  claude: {{provider: anthropic, endpoint: "{claude.url}", model: claude-test, privacy: cloud, max_retries: 0}}
mixes:
  cloud: {{strategy: route, models: [gpt], constraints: {{sensitive_data: redact}}}}
  own: {{strategy: route, models: [own]}}
  compat: {{strategy: route, models: [compat]}}
  vllm: {{strategy: route, models: [vllm]}}
  claude: {{strategy: route, models: [claude]}}
  panel: {{strategy: moa, proposers: [gpt, own], aggregator: gpt}}
""")
        m = Mixture(config, chooser=RuleChooser())
        try:
            with TestClient(create_app(m.config, mixture=m)) as client:
                yield Upstreams(cloud, own, compat, claude, client, vllm)
        finally:
            shutdown(m)


def _last(stub: Any) -> dict[str, Any]:
    return stub.script.seen[-1]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_gets_user_and_safety_identifier(up: Upstreams, stream: bool) -> None:
    r = up.ask("cloud", user="u-42", safety_identifier="sid-9f3c", stream=stream)
    assert r.status_code == 200
    sent = _last(up.cloud)
    assert (sent["user"], sent["safety_identifier"]) == ("u-42", "sid-9f3c")
    assert up.ask("cloud").status_code == 200
    assert "user" not in _last(up.cloud) and "safety_identifier" not in _last(up.cloud)


def test_every_call_of_a_mix_names_the_user(up: Upstreams) -> None:
    before_cloud, before_own = len(up.cloud.script.seen), len(up.own.script.seen)
    assert up.ask("panel", user="u-7").status_code == 200
    calls = up.cloud.script.seen[before_cloud:] + up.own.script.seen[before_own:]
    assert len(calls) == 3 and [c.get("user") for c in calls] == ["u-7"] * 3


def test_a_user_the_privacy_scan_flags_reaches_trusted_models_only(up: Upstreams) -> None:
    assert up.ask("cloud", user=EMAIL_USER).status_code == 200
    assert "user" not in _last(up.cloud)
    assert up.ask("own", user=EMAIL_USER).status_code == 200
    assert _last(up.own)["user"] == EMAIL_USER


def test_a_redacted_request_still_names_its_user(up: Upstreams) -> None:
    r = up.ask("cloud", text="Draft a reply to bob.jones@acme-corp.com about the invoice.", user="u-42")
    assert r.status_code == 200
    sent = _last(up.cloud)
    assert "bob.jones@acme-corp.com" not in str(sent["messages"]) and "[EMAIL_1]" in str(sent["messages"])
    assert sent["user"] == "u-42"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_gets_the_user_as_metadata_user_id(up: Upstreams, stream: bool) -> None:
    assert up.ask("claude", user="u-42", stream=stream).status_code == 200
    assert _last(up.claude)["metadata"] == {"user_id": "u-42"}
    # OpenAI's field made for abuse monitoring, when given, is the one it gets
    assert up.ask("claude", user="u-42", safety_identifier="sid-9f3c", stream=stream).status_code == 200
    assert _last(up.claude)["metadata"] == {"user_id": "sid-9f3c"}
    assert up.ask("claude", user=EMAIL_USER, stream=stream).status_code == 200
    assert "metadata" not in _last(up.claude)


def test_a_safety_identifier_that_is_not_a_string_is_refused(up: Upstreams) -> None:
    r = up.ask("cloud", safety_identifier=42)
    assert r.status_code == 400 and "safety_identifier" in r.text


def test_another_openai_compatible_server_gets_neither(up: Upstreams) -> None:
    """Mistral's API, for one, refuses a request with a field it does not know (422)."""
    assert up.ask("compat", user="u-42", safety_identifier="sid-9f3c").status_code == 200
    assert "user" not in _last(up.compat) and "safety_identifier" not in _last(up.compat)


def test_a_server_whose_card_says_it_takes_them_gets_them(up: Upstreams) -> None:
    """vLLM's OpenAI server takes ``user``: its card says so (``send_end_user: true``)."""
    assert up.ask("vllm", user="u-42", safety_identifier="sid-9f3c").status_code == 200
    assert (_last(up.vllm)["user"], _last(up.vllm)["safety_identifier"]) == ("u-42", "sid-9f3c")
