"""OpenAI's usage details (cached, reasoning, audio, prediction tokens) and ``system_fingerprint`` reach the client
as the upstream sent them: through a routed request, summed over the calls of a mix, streamed with include_usage,
mapped from Anthropic's cache reads, and read by the official client and the Python API alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from starlette.testclient import TestClient
from stub_anthropic import Script as AScript
from stub_anthropic import StubAnthropic
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.server.app import create_app
from moai.telemetry.store import TelemetryStore

USER = [{"role": "user", "content": "hello"}]
A_DETAILS = {"prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 3, "accepted_prediction_tokens": 0,
                                           "rejected_prediction_tokens": 1}}
B_DETAILS = {"completion_tokens_details": {"reasoning_tokens": 5, "audio_tokens": None}}  # null: not a count
MIXES = """
  default: {strategy: route, models: [a]}
  plain: {strategy: route, models: [c]}
  b: {strategy: route, models: [b]}
  team: {strategy: moa, proposers: [a, b, c], aggregator: a}
  team_c: {strategy: moa, proposers: [a, b], aggregator: c}
  fan: {strategy: fanout, proposers: [a, c], judge: c}
  claude: {strategy: route, models: [claude]}
  deployed: {strategy: route, models: [d]}
"""


@contextmanager
def gateway(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Mixture]]:
    """moai's app over three OpenAI-compatible stubs (``a`` and ``b`` report details, ``c`` none) and Anthropic's;
    also a Mixture for the Python API over the same config."""
    monkeypatch.setenv("MOAI_TEST_ANTHROPIC_KEY", "sk-ant-test")
    with ExitStack() as stack:
        a = stack.enter_context(StubServer(Script(reply="alpha says hi", usage_extra=A_DETAILS,
                                                  system_fingerprint="fp_a")))
        b = stack.enter_context(StubServer(Script(reply="beta", usage_extra=B_DETAILS, system_fingerprint="fp_b")))
        c = stack.enter_context(StubServer(Script(reply="gamma here")))
        claude = stack.enter_context(StubAnthropic(AScript(reply="from claude", input_tokens=11,
                                                           cache_read_input_tokens=30)))
        config = parse_config(f"""
models:
  a: {{provider: openai_compat, endpoint: "{a.url}", privacy: private, max_retries: 0}}
  b: {{provider: openai_compat, endpoint: "{b.url}", privacy: private, max_retries: 0}}
  c: {{provider: openai_compat, endpoint: "{c.url}", privacy: private, max_retries: 0}}
  d: {{provider: openai_compat, privacy: private, max_retries: 0, deployments: [{{endpoint: "{a.url}"}}]}}
  claude: {{provider: anthropic, endpoint: "{claude.url}", model: claude-test, privacy: private, max_retries: 0,
           api_key_env: MOAI_TEST_ANTHROPIC_KEY}}
mixes:
{MIXES}""")
        mixture = Mixture(config, store=TelemetryStore(f"sqlite:///{tmp / 'moai.db'}"), chooser=RuleChooser())
        api = Mixture(config, store=TelemetryStore(f"sqlite:///{tmp / 'api.db'}"), chooser=RuleChooser())
        with TestClient(create_app(config, mixture.store, mixture=mixture)) as client:
            yield client, api


def post(client: TestClient, model: str) -> dict[str, Any]:
    r = client.post("/v1/chat/completions", json={"model": model, "messages": USER})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def stream(client: TestClient, model: str, include_usage: bool = True) -> list[dict[str, Any]]:
    body = {"model": model, "messages": USER, "stream": True, "stream_options": {"include_usage": include_usage}}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]


def sdk(client: TestClient) -> openai.OpenAI:
    """The official client, talking to the app in process."""
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0)


def ok_calls(body: dict[str, Any], model: str) -> int:
    return sum(1 for t in body["moai"]["trace"] if t["status"] == "ok" and t["model"] == model)


def test_a_routed_answer_carries_the_upstreams_details_and_fingerprint(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with gateway(tmp_path, monkeypatch) as (client, _api):
        body = post(client, "moai/default")
        assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10, **A_DETAILS}
        assert body["system_fingerprint"] == "fp_a"
        # a detail sent as null is no count: left out, not invented as 0
        assert post(client, "moai/b")["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}

        resp = sdk(client).chat.completions.create(model="moai/default", messages=USER)  # type: ignore[arg-type]
        assert resp.usage is not None and resp.usage.completion_tokens_details is not None
        assert resp.usage.completion_tokens_details.reasoning_tokens == 3
        assert resp.usage.prompt_tokens_details is not None and resp.usage.prompt_tokens_details.cached_tokens == 2
        assert resp.system_fingerprint == "fp_a"


def test_a_model_with_deployments_passes_them_on_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its plain answers are its deployments' streams, drained."""
    with gateway(tmp_path, monkeypatch) as (client, _api):
        body = post(client, "moai/deployed")
        assert body["usage"]["completion_tokens_details"] == A_DETAILS["completion_tokens_details"]
        assert body["system_fingerprint"] == "fp_a"


def test_absent_details_and_fingerprint_stay_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with gateway(tmp_path, monkeypatch) as (client, _api):
        body = post(client, "moai/plain")
        assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
        assert "system_fingerprint" not in body
        chunks = stream(client, "moai/plain")
        assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
        assert all("system_fingerprint" not in ch for ch in chunks)


def test_a_stream_with_include_usage_ends_with_the_details_and_every_chunk_names_the_fingerprint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with gateway(tmp_path, monkeypatch) as (client, _api):
        chunks = stream(client, "moai/default")
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3,
                                                                       "total_tokens": 10, **A_DETAILS}
        assert all(ch.get("system_fingerprint") == "fp_a" for ch in chunks)  # the role chunk included
        assert all(ch["usage"] is None for ch in chunks[:-1])

        got = list(sdk(client).chat.completions.create(model="moai/default", messages=USER,  # type: ignore[arg-type]
                                                       stream=True, stream_options={"include_usage": True}))
        last = got[-1]
        assert last.usage is not None and last.usage.completion_tokens_details is not None
        assert last.usage.completion_tokens_details.reasoning_tokens == 3
        assert {ch.system_fingerprint for ch in got} == {"fp_a"}


def test_a_mix_sums_each_detail_over_the_calls_that_reported_it(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with gateway(tmp_path, monkeypatch) as (client, _api):
        body = post(client, "moai/team")  # proposers a, b, c; a aggregates
        n_a, n_b = ok_calls(body, "a"), ok_calls(body, "b")
        assert n_a == 2 and n_b == 1 and ok_calls(body, "c") == 1
        usage = body["usage"]
        assert usage["completion_tokens"] == sum(t["tokens"]["output"] for t in body["moai"]["trace"])
        assert usage["completion_tokens_details"] == {"reasoning_tokens": 3 * n_a + 5 * n_b,
                                                      "accepted_prediction_tokens": 0,
                                                      "rejected_prediction_tokens": 1 * n_a}
        assert usage["prompt_tokens_details"] == {"cached_tokens": 2 * n_a, "audio_tokens": 0}
        assert body["system_fingerprint"] == "fp_a"  # the aggregator's: it wrote the answer

        chunks = stream(client, "moai/team")
        assert chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3 * n_a + 5 * n_b
        assert {ch.get("system_fingerprint") for ch in chunks} == {"fp_a"}

        # an answer written by a model that sent no fingerprint has none, whoever else took part
        other = post(client, "moai/team_c")
        assert "system_fingerprint" not in other
        assert other["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3 + 5
        assert "accepted_prediction_tokens" in other["usage"]["completion_tokens_details"]


def test_a_picked_answer_keeps_its_writers_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with gateway(tmp_path, monkeypatch) as (client, _api):
        body = post(client, "moai/fan")  # a and c propose, c judges: the answer passes through unchanged
        assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3 * ok_calls(body, "a")
        assert body.get("system_fingerprint") == {"a": "fp_a", "c": None}[body["moai"]["model"]]


def test_anthropic_cache_reads_are_cached_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with gateway(tmp_path, monkeypatch) as (client, _api):
        body = post(client, "moai/claude")
        assert body["usage"]["prompt_tokens"] == 11 + 30  # every token the model read
        assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 30}
        assert "completion_tokens_details" not in body["usage"]
        chunks = stream(client, "moai/claude")
        assert chunks[-1]["usage"]["prompt_tokens"] == 41
        assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 30}


def test_the_python_api_returns_the_same_details_and_fingerprint(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with gateway(tmp_path, monkeypatch) as (_client, api):
        resp = api.chat.completions.create(model="moai/default", messages=USER)
        assert isinstance(resp, openai.types.chat.ChatCompletion)
        assert resp.usage is not None and resp.usage.completion_tokens_details is not None
        assert resp.usage.completion_tokens_details.reasoning_tokens == 3
        assert resp.usage.prompt_tokens_details is not None and resp.usage.prompt_tokens_details.cached_tokens == 2
        assert resp.system_fingerprint == "fp_a"

        chunks = list(api.chat.completions.create(model="moai/default", messages=USER, stream=True,
                                                  stream_options={"include_usage": True}))
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens_details is not None
        assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 3
        assert {ch.system_fingerprint for ch in chunks} == {"fp_a"}

        plain = api.chat.completions.create(model="moai/plain", messages=USER)
        assert plain.usage is not None and plain.usage.completion_tokens_details is None
        assert plain.system_fingerprint is None
