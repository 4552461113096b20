"""What no scan reads never reaches an untrusted model: fields outside OpenAI's message format are not sent on,
parts no scan can read (images, files, audio) keep a request on trusted models under any policy but `allow`, and
`settings.sensitive_data` holds for models called by name too."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from stub_openai import StubServer

from moai.config import parse_config
from moai.server.app import create_app

CARD = "4539 1488 0343 6467"


def mix_config(trusted: str, cloud: str, policy: str = "private_ok", settings: str = "") -> Any:
    return parse_config(f"""
models:
  trusted: {{provider: openai_compat, endpoint: "{trusted}", privacy: private, max_retries: 0, params_b: 1}}
  cloudy: {{provider: openai_compat, endpoint: "{cloud}", privacy: cloud, max_retries: 0, params_b: 400}}
mixes:
  default: {{strategy: route, models: [cloudy, trusted], constraints: {{sensitive_data: {policy}}}}}
{settings}
""")


def sent(stub: StubServer) -> str:
    return repr(stub.script.seen)


def post(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/v1/chat/completions", json={"model": "moai/default", **body})


def test_fields_outside_the_message_format_are_not_sent_on() -> None:
    with StubServer() as trusted, StubServer() as cloud:  # noqa: SIM117 - the app needs their urls
        with TestClient(create_app(mix_config(trusted.url, cloud.url, "redact"))) as client:
            r = post(client, {"messages": [
                {"role": "user", "content": "summarise my notes", "notes": f"card {CARD}"},
                {"role": "assistant", "content": "ok", "refusal": f"card {CARD}"},
                {"role": "user", "content": [{"type": "text", "text": "go on", "annotation": f"card {CARD}"}]}]})
    assert r.status_code == 200
    assert CARD not in sent(trusted) + sent(cloud) and "'notes':" not in sent(trusted) + sent(cloud)


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    {"type": "file", "file": {"file_data": "data:text/plain;base64,NDUzOSAxNDg4IDAzNDMgNjQ2Nw=="}},
])
@pytest.mark.parametrize("policy", ["private_ok", "redact"])
def test_a_part_no_scan_can_read_stays_on_trusted_models(part: dict[str, Any], policy: str) -> None:
    with StubServer() as trusted, StubServer() as cloud:  # noqa: SIM117 - the app needs their urls
        with TestClient(create_app(mix_config(trusted.url, cloud.url, policy))) as client:
            r = post(client, {"moai": {"weights": {"quality": 1}},
                              "messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                                                         part]}]})
    assert r.status_code == 200 and r.headers["x-moai-model"] == "trusted"
    assert cloud.script.calls == 0
    assert any("cannot be scanned" in line for line in r.json()["moai"]["reason"])


def test_an_image_may_go_anywhere_under_allow() -> None:
    with StubServer() as trusted, StubServer() as cloud:  # noqa: SIM117 - the app needs their urls
        with TestClient(create_app(mix_config(trusted.url, cloud.url, "allow"))) as client:
            r = post(client, {"moai": {"models": ["cloudy"]}, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})
    assert r.status_code == 200 and cloud.script.calls == 1


def test_the_deployments_policy_holds_for_a_model_called_by_name() -> None:
    with StubServer() as trusted, StubServer() as cloud:  # noqa: SIM117 - the app needs their urls
        cfg = mix_config(trusted.url, cloud.url, "allow", "settings: {sensitive_data: private_ok}")
        with TestClient(create_app(cfg)) as client:
            direct = client.post("/v1/chat/completions", json={"model": "cloudy", "messages": [
                {"role": "user", "content": f"my card is {CARD} exp 12/29"}]})
            mixed = post(client, {"messages": [{"role": "user", "content": f"my card is {CARD} exp 12/29"}]})
    assert direct.status_code == 422 and direct.json()["error"]["code"] == "no_trusted_model"
    assert mixed.status_code == 200 and mixed.headers["x-moai-model"] == "trusted"  # the mix's allow is raised
    assert cloud.script.calls == 0
