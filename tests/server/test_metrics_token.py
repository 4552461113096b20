"""GET /metrics shows each model's whole traffic: ``settings.metrics_token_env`` names a variable holding a bearer
token that it then requires (an OpenAI-style 401 otherwise); without the setting it stays open to scrapers."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from moai.config import ConfigError, parse_config
from moai.server.app import create_app

ENV = "MOAI_TEST_METRICS_TOKEN"
TOKEN = "scrape-Zq81-token"


def config(settings: str = "") -> str:
    return f"""
{settings}
models:
  m: {{provider: openai_compat, endpoint: "http://127.0.0.1:9", privacy: private, max_retries: 0}}
mixes:
  default: {{strategy: route, models: [m]}}
"""


def client_for(settings: str) -> TestClient:
    return TestClient(create_app(parse_config(config(settings))))


def test_metrics_require_the_token_once_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, TOKEN)
    with client_for(f"settings: {{metrics_token_env: {ENV}}}") as client:
        missing = client.get("/metrics")
        wrong = client.get("/metrics", headers={"authorization": "Bearer nope"})
        right = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        health = client.get("/healthz")
    assert (missing.status_code, wrong.status_code, right.status_code, health.status_code) == (401, 401, 200, 200)
    for refused, code in ((missing, "missing_api_key"), (wrong, "invalid_api_key")):
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("authentication_error", code)
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "moai_requests" not in refused.text
    assert "moai_requests" in right.text


def test_a_token_variable_left_empty_closes_metrics(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with client_for(f"settings: {{metrics_token_env: {ENV}}}") as client:
        closed = client.get("/metrics", headers={"authorization": "Bearer "})
    assert closed.status_code == 503 and closed.json()["error"]["code"] == "metrics_token_unset"
    assert ENV in caplog.text


def test_metrics_stay_open_without_the_setting() -> None:
    with client_for("") as client:
        assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("value", ["moai-sk-mk_1234-abcdef", "", "1ABC", "${MOAI_TOKEN}"])
def test_the_setting_takes_a_variable_name_not_a_token(value: str) -> None:
    with pytest.raises(ConfigError, match="environment variable's name") as e:
        parse_config(config(f"settings: {{metrics_token_env: {value!r}}}"))
    if len(value) > 12:
        assert value not in str(e.value)


@pytest.mark.parametrize("sent_as", ["utf-8", "latin-1"])
def test_a_token_that_is_not_ascii_is_refused_at_start(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture, sent_as: str) -> None:
    """A header carries no encoding: a non-ASCII token could never be matched, so it closes /metrics with a 503
    that says why (logged at start, naming the variable, not the value) instead of 401s no scraper can pass."""
    monkeypatch.setenv(ENV, "t\u00f6k-secret")
    with client_for(f"settings: {{metrics_token_env: {ENV}}}") as client:
        refused = client.get("/metrics", headers={"authorization": "Bearer t\u00f6k-secret".encode(sent_as)})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "metrics_token_invalid"
    assert "moai_requests" not in refused.text
    assert ENV in caplog.text and "ASCII" in caplog.text and "t\u00f6k" not in caplog.text


@pytest.mark.parametrize("header", ["Bearer\t" + TOKEN, "bearer \t " + TOKEN, "BEARER   " + TOKEN + " "])
def test_any_spaces_or_tabs_may_follow_the_scheme(monkeypatch: pytest.MonkeyPatch, header: str) -> None:
    monkeypatch.setenv(ENV, TOKEN)
    with client_for(f"settings: {{metrics_token_env: {ENV}}}") as client:
        right = client.get("/metrics", headers={"authorization": header})
        wrong = client.get("/metrics", headers={"authorization": header.replace(TOKEN, "nope")})
    assert right.status_code == 200 and "moai_requests" in right.text
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_api_key")
