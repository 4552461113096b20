"""What reaches the upstream model, and the OpenAI response details a client reads: the completion limit under the
name the client used (or none), logit_bias, parallel_tool_calls, reasoning_effort, x-request-id, unknown paths."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from stub_openai import Script, StubServer

from moai.catalog import ModelCard
from moai.config import parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.providers.base import ChatParams
from moai.providers.openai_compat import OpenAICompatProvider
from moai.server.app import create_app
from moai.server.auth import create_key
from moai.telemetry.store import TelemetryStore

USER = [{"role": "user", "content": "hello"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


@contextmanager
def serve(tmp: Path, mixes: str) -> Iterator[tuple[TestClient, Script]]:
    script = Script(reply="hi there")
    with StubServer(script) as stub:
        config = parse_config(f"""
models:
  m: {{provider: openai_compat, endpoint: "{stub.url}", privacy: private, max_retries: 0, supports_tools: true}}
mixes:
{mixes}""")
        mixture = Mixture(config, store=TelemetryStore(f"sqlite:///{tmp / 'moai.db'}"), chooser=RuleChooser())
        with TestClient(create_app(config, mixture.store, mixture=mixture)) as client:
            yield client, script


def post(client: TestClient, headers: dict[str, str] | None = None, **body: Any) -> Any:
    r = client.post("/v1/chat/completions", json={"model": "moai/default", "messages": USER, **body}, headers=headers)
    assert r.status_code == 200, r.text
    return r


def test_the_completion_limit_goes_under_the_clients_name_or_not_at_all(tmp_path: Path) -> None:
    with serve(tmp_path, "  default: {strategy: route}\n  capped: {strategy: route, max_tokens: 300}\n") as (c, s):
        post(c)  # no limit asked for, none in the mix: none is sent (not moai's default of 512)
        assert "max_tokens" not in s.seen[-1] and "max_completion_tokens" not in s.seen[-1]
        post(c, max_completion_tokens=40)
        assert s.seen[-1]["max_completion_tokens"] == 40 and "max_tokens" not in s.seen[-1]
        post(c, max_tokens=30)
        assert s.seen[-1]["max_tokens"] == 30 and "max_completion_tokens" not in s.seen[-1]
        post(c, model="moai/capped")  # the mix's instructions set a cap: it applies
        assert s.seen[-1]["max_tokens"] == 300


def test_logit_bias_parallel_tool_calls_and_reasoning_effort_are_passed_on(tmp_path: Path) -> None:
    with serve(tmp_path, "  default: {strategy: route}\n") as (c, s):
        post(c, logit_bias={"50256": -100}, reasoning_effort="low")
        assert s.seen[-1]["logit_bias"] == {"50256": -100} and s.seen[-1]["reasoning_effort"] == "low"
        assert "parallel_tool_calls" not in s.seen[-1]
        post(c, tools=TOOLS, parallel_tool_calls=False)
        assert s.seen[-1]["parallel_tool_calls"] is False and s.seen[-1]["tools"] == TOOLS
        post(c, parallel_tool_calls=False)  # without tools OpenAI refuses it: not sent
        assert "parallel_tool_calls" not in s.seen[-1]


def test_x_request_id_names_the_completion_and_unknown_endpoints_say_what_is_served(tmp_path: Path) -> None:
    with serve(tmp_path, "  default: {strategy: route}\n") as (c, _s):
        r = post(c)
        assert r.headers["x-request-id"] == r.json()["id"] == r.headers["x-moai-request-id"]
        for path in ("/v1/embeddings", "/v1/completions"):
            missing = c.post(path, json={"model": "moai/default", "input": "x"})
            err = missing.json()["error"]
            assert missing.status_code == 404 and err["type"] == "not_found_error"
            assert path in err["message"] and "/v1/chat/completions" in err["message"]


def test_a_cost_or_latency_cap_sends_the_limit_it_was_worked_out_for(tmp_path: Path) -> None:
    """A cap is checked at the mix's max_tokens (512 by default): an answer left unlimited could cost many times it."""
    mixes = ("  default: {strategy: route}\n  cheap: {strategy: route, constraints: {max_cost_usd: 5}}\n"
             "  quick: {strategy: route, constraints: {max_latency_s: 60}}\n")
    with serve(tmp_path, mixes) as (c, s):
        post(c, model="moai/cheap")
        assert s.seen[-1]["max_tokens"] == 512
        post(c, model="moai/quick")
        assert s.seen[-1]["max_tokens"] == 512
        post(c, model="moai/cheap", max_completion_tokens=40)  # the client's own limit, under its name
        assert s.seen[-1]["max_completion_tokens"] == 40 and "max_tokens" not in s.seen[-1]


def test_a_key_with_a_budget_sends_the_limit_its_hold_assumed(tmp_path: Path) -> None:
    with serve(tmp_path, "  default: {strategy: route}\n") as (c, s):
        store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
        _, budgeted = create_key(store, "budgeted", budget_day=100.0)
        _, open_key = create_key(store, "open")
        post(c, headers={"Authorization": f"Bearer {open_key}"})
        assert "max_tokens" not in s.seen[-1] and "max_completion_tokens" not in s.seen[-1]
        post(c, headers={"Authorization": f"Bearer {budgeted}"})
        assert s.seen[-1]["max_tokens"] == 512


@pytest.mark.parametrize("provider,expected", [("openai", "max_completion_tokens"), ("openai_compat", "max_tokens")])
def test_openai_itself_gets_max_completion_tokens(provider: str, expected: str) -> None:
    """OpenAI's reasoning models refuse max_tokens; other OpenAI-compatible servers (vLLM, llama.cpp) take it."""
    card = ModelCard(name="x", provider=provider, endpoint="http://127.0.0.1:9/v1", privacy="cloud")
    body = OpenAICompatProvider(card)._payload(ChatParams(messages=USER, max_tokens=64), stream=False)
    assert body[expected] == 64 and len({"max_tokens", "max_completion_tokens"} & set(body)) == 1


def test_a_models_refusal_reaches_the_client_as_refusal(tmp_path: Path) -> None:
    """Structured-output clients (the SDK's parse()) tell a refusal from an empty answer by message.refusal."""
    import openai

    with StubServer(Script(reply="I can't help with that.", refuse=True)) as stub:
        config = parse_config(f"""
models:
  m: {{provider: openai_compat, endpoint: "{stub.url}", privacy: private, max_retries: 0}}
mixes:
  default: {{strategy: route}}
""")
        mixture = Mixture(config, store=TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}"), chooser=RuleChooser())
        with TestClient(create_app(config, mixture.store, mixture=mixture)) as client:
            r = client.post("/v1/chat/completions", json={"model": "moai/default", "messages": USER})
            message = r.json()["choices"][0]["message"]
            assert r.status_code == 200 and message["refusal"] == "I can't help with that."
            assert message["content"] is None
            with client.stream("POST", "/v1/chat/completions",
                               json={"model": "moai/default", "messages": USER, "stream": True}) as s:
                text = "".join(s.iter_text())
            pieces = [json.loads(line[6:])["choices"][0]["delta"] for line in text.splitlines()
                      if line.startswith("data: {") and json.loads(line[6:])["choices"]]
            assert "".join(d.get("refusal") or "" for d in pieces) == "I can't help with that."
            assert not "".join(d.get("content") or "" for d in pieces)
        # the Python API (openai's own types) too
        api = Mixture(config, store=TelemetryStore(f"sqlite:///{tmp_path / 'api.db'}"), chooser=RuleChooser())
        resp = api.chat.completions.create(model="moai/default", messages=USER)
        assert isinstance(resp, openai.types.chat.ChatCompletion)
        assert resp.choices[0].message.refusal == "I can't help with that."


def test_with_include_usage_every_chunk_but_the_last_says_usage_null(tmp_path: Path) -> None:
    with serve(tmp_path, "  default: {strategy: route}\n") as (c, _s):
        body = {"model": "moai/default", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        assert all("usage" in ch and ch["usage"] is None for ch in chunks[:-1])
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
        with c.stream("POST", "/v1/chat/completions", json={**body, "stream_options": None}) as r:
            plain = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        assert all("usage" not in ch for ch in plain)  # not asked for: no usage key at all, as at OpenAI


def test_cors_only_for_the_origins_the_settings_name(tmp_path: Path) -> None:
    from moai.config import ConfigError

    origin = {"origin": "https://chat.example.com", "access-control-request-method": "POST",
              "access-control-request-headers": "authorization,content-type"}
    with serve(tmp_path, "  default: {strategy: route}\nsettings: {cors_origins: ['https://chat.example.com']}\n") \
            as (c, _s):
        pre = c.options("/v1/chat/completions", headers=origin)
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://chat.example.com"
        r = c.post("/v1/chat/completions", json={"model": "moai/default", "messages": USER},
                   headers={"origin": "https://chat.example.com"})
        assert r.headers["access-control-allow-origin"] == "https://chat.example.com"
        assert "x-request-id" in r.headers["access-control-expose-headers"]
        other = c.options("/v1/chat/completions", headers={**origin, "origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    with serve(tmp_path, "  default: {strategy: route}\n") as (c, _s):  # none named: no CORS at all
        assert "access-control-allow-origin" not in c.options("/v1/chat/completions", headers=origin).headers
    with pytest.raises(ConfigError, match="is not an origin"):
        parse_config("models: {m: {provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1'}}\n"
                     "mixes: {default: {strategy: route}}\nsettings: {cors_origins: ['chat.example.com/x']}\n")
