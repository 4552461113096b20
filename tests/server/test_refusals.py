"""Requests a model refuses for their own sake (a part it cannot read, a prompt over its context window) are the
client's to fix: answered 400 with OpenAI's code, recorded with that status, and never held against the model."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import MoaiServer, start_moai, stop

from moai import local_models
from moai.telemetry.adapt import LiveStats
from moai.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

IMAGE = [{"role": "user", "content": [{"type": "text", "text": "what"},
                                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
# ~6000 tokens in 6000 characters: the length estimate before routing (4 characters a token) lets it through to a
# remote model; a local model's own tokenizer counts it
TOO_LONG = [{"role": "user", "content": "7 " * 3000}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoaiServer]:
    local_models.pull("smollm2-135m")
    cfg = """
models:
  smol: {provider: local, package: smollm2-135m, privacy: local, context: 2048}
  smol_b: {provider: local, package: smollm2-135m, privacy: local, context: 2048}
mixes:
  default: {strategy: route, max_tokens: 4}
"""
    s = start_moai(cfg, Path(tmp_path_factory.mktemp("refusals")))
    try:
        yield s
    finally:
        stop(s.proc)


def post(url: str, messages: list[dict[str, Any]], model: str = "moai/default", stream: bool = False) -> httpx.Response:
    return httpx.post(url + "/chat/completions", timeout=60,
                      json={"model": model, "messages": messages, "max_tokens": 4, "stream": stream})


def error_of(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    return err


def recorded(db: Path, request_id: str) -> tuple[int, list[str]]:
    """The stored HTTP status of a request and the statuses of its calls."""
    with sqlite3.connect(db) as conn:
        ((status,),) = conn.execute("select http_status from requests where id=?", (request_id,)).fetchall()
        calls = [s for (s,) in conn.execute("select status from calls where request_id=?", (request_id,))]
    return status, calls


def test_refused_requests_open_no_circuit_and_count_as_no_error(server: MoaiServer) -> None:
    for _ in range(4):  # more than the breaker's threshold of failures in a row
        r = post(server.url, IMAGE)
        assert error_of(r)["code"] == "unsupported_request"
        status, calls = recorded(server.db, r.headers["x-moai-request-id"])
        assert status == 400 and calls == ["refused", "refused"]  # both models tried, neither failed
    health = httpx.get(server.base + "/healthz", timeout=10).json()
    assert health["breakers"] == {"smol": "closed", "smol_b": "closed"} and health["open_circuits"] == []
    ready = httpx.get(server.base + "/readyz", timeout=10)
    assert ready.status_code == 200 and sorted(ready.json()["usable"]) == ["smol", "smol_b"]
    # stored and counted as refusals, as those caught before routing are, not as failed requests
    with sqlite3.connect(server.db) as conn:
        assert conn.execute("select status from requests where id=?",
                            (r.headers["x-moai-request-id"],)).fetchall() == [("refused",)]
    metrics = httpx.get(server.base + "/metrics", timeout=10).text
    assert 'moai_requests_total{mix="default",model="none",status="refused"}' in metrics
    assert 'status="error"' not in metrics.split("moai_requests_total")[1].split("# HELP")[0]
    live = httpx.get(server.base + "/moai/stats", timeout=10).json()["models"]
    assert all(m["error_rate"] == 0 for m in live.values())
    resumed = LiveStats()  # what a restart or another replica reads back from the database
    resumed.refresh(TelemetryStore(f"sqlite:///{server.db}"))
    assert all(s["error_rate"] == 0 and s["open"] == 0 for s in resumed.snapshot().values())


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_prompt_over_the_context_window_is_a_400(server: MoaiServer, stream: bool) -> None:
    r = post(server.url, TOO_LONG, model="smol", stream=stream)
    err = error_of(r)
    assert (err["code"], err["param"]) == ("context_length_exceeded", "messages")
    assert "by smol's tokenizer" in err["message"]  # counted before routing: no model was called
    assert recorded(server.db, r.headers["x-moai-request-id"]) == (400, [])
    assert httpx.get(server.base + "/healthz", timeout=10).json()["breakers"]["smol"] == "closed"


def test_a_peers_context_length_exceeded_stays_a_400(moai_over_llama: MoaiServer) -> None:
    """llama.cpp's own OpenAI-compatible server refuses the prompt with 400 context_length_exceeded."""
    r = post(moai_over_llama.url, TOO_LONG)
    err = error_of(r)
    assert (err["code"], err["param"]) == ("context_length_exceeded", "messages")
    assert recorded(moai_over_llama.db, r.headers["x-moai-request-id"]) == (400, ["refused"])
    assert httpx.get(moai_over_llama.base + "/healthz", timeout=10).json()["open_circuits"] == []
    # streamed, that server answers 200 and closes the stream without a word: a failure, not an empty answer
    r = post(moai_over_llama.url, TOO_LONG, stream=True)
    assert r.status_code == 502 and "ended unfinished" in r.json()["error"]["message"]
