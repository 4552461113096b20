"""What an operator relies on: a long prompt does not stall other clients, a caller without a key is refused
before its body is read, a client hanging up mid-upload is no error, upstream failures are logged with their
cause but told to clients without internal addresses, database warnings are one line without row data."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from starlette.requests import ClientDisconnect
from stub_openai import free_port

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server import app as server_app
from moai.server.app import create_app, without_addresses
from moai.server.auth import create_key
from moai.telemetry.database import driver_reason
from moai.telemetry.store import TelemetryStore

CONFIG = """
models:
  m: {{provider: openai_compat, endpoint: "http://127.0.0.1:{port}/v1", privacy: private, max_retries: 0}}
mixes:
  default: {{strategy: route, models: [m]}}
"""


def config(port: int = 9) -> Any:
    return parse_config(CONFIG.format(port=port))


def test_a_long_prompt_is_prepared_off_the_event_loop() -> None:
    """While one request's preparation (its sensitive-data scan) runs, /healthz still answers at once."""
    mixture = Mixture(config())
    entered, released, finished = threading.Event(), threading.Event(), threading.Event()
    real = mixture.prepare

    def slow_prepare(body: Any, **kw: Any) -> Any:
        entered.set()
        released.wait(5)  # on the event loop this would hold every other request for 5 s
        finished.set()
        return real(body, **kw)

    mixture.prepare = slow_prepare  # type: ignore[method-assign]
    app = create_app(config(), mixture=mixture)
    big = {"model": "moai/default", "messages": [{"role": "user", "content": "hello world " * 30_000}]}

    async def main() -> tuple[int, bool]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            chat = asyncio.create_task(client.post("/v1/chat/completions", json=big))
            while not entered.is_set():
                await asyncio.sleep(0.01)
            health = await client.get("/healthz")
            answered_while_busy = not finished.is_set()
            released.set()
            await chat
            return health.status_code, answered_while_busy

    status, answered_while_busy = asyncio.run(main())
    assert status == 200 and answered_while_busy


def test_a_caller_without_a_key_is_refused_before_its_body_is_read(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")
    create_key(store, "team")
    with TestClient(create_app(config(), store)) as client:
        body = b'{"model": "moai/default", "messages": [' + b" " * (6 << 20) + b"]}"  # over the 4 MiB limit
        r = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


def test_a_client_hanging_up_mid_upload_is_answered_quietly() -> None:
    class Gone:
        headers: dict[str, str] = {}

        async def stream(self) -> Any:
            yield b'{"model": '
            raise ClientDisconnect()

    r = asyncio.run(server_app.read_body(Gone(), 1 << 20))  # type: ignore[arg-type]
    assert not isinstance(r, bytes) and r.status_code == 499


@pytest.mark.parametrize(("text", "hidden", "kept"), [
    ("answer failed: m: connection failed: Cannot connect to host 127.0.0.1:18101 ssl:default "
     "[Connect call failed ('127.0.0.1', 18101)]", ["127.0.0.1", "18101"], ["answer failed: m: connection failed"]),
    ("m: HTTP 500 from http://10.0.0.5:8000/v1/chat/completions: boom", ["10.0.0.5", "8000"], ["HTTP 500", "boom"]),
    ("m: Cannot connect to host vllm.internal:8000 ssl:default", ["vllm.internal"], ["Cannot connect"]),
    ("m: host [fd00::1]:8080 refused", ["fd00::1", "8080"], ["refused"]),
    ("qwen2.5:7b: timed out after 30 s", [], ["qwen2.5:7b: timed out after 30 s"]),
    ("gpt-4o: HTTP 429: retry after 20 s", [], ["gpt-4o: HTTP 429: retry after 20 s"]),
])
def test_upstream_addresses_are_not_told_to_clients(text: str, hidden: list[str], kept: list[str]) -> None:
    out = without_addresses(text)
    assert not [h for h in hidden if h in out] and all(k in out for k in kept), out


def test_an_upstream_failure_is_logged_with_its_cause(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    with TestClient(create_app(config(port))) as client, caplog.at_level(logging.WARNING, logger="moai.server"):
        r = client.post("/v1/chat/completions",
                        json={"model": "moai/default", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_failed"
    assert str(port) not in r.json()["error"]["message"]
    logged = [rec.getMessage() for rec in caplog.records if "no model could answer" in rec.getMessage()]
    assert len(logged) == 1 and str(port) in logged[0] and r.headers["x-request-id"] in logged[0]


def test_database_errors_are_told_in_one_line_without_row_values() -> None:
    e = OperationalError("INSERT INTO requests (id, decision) VALUES (?, ?)", ("chatcmpl-1", '{"model": "x"}'),
                         Exception("database is locked\nsecond line"))
    reason = driver_reason(e)
    assert reason == "database is locked"
    assert "INSERT" in str(e) and "chatcmpl-1" in str(e)  # what SQLAlchemy's own text would have put in the log


def test_a_prompt_no_model_can_read_is_refused_before_it_is_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    import moai.mixture

    def scan(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("scanned a prompt no model could read")

    monkeypatch.setattr(moai.mixture, "privacy_guard", scan)
    with TestClient(create_app(config())) as client:
        r = client.post("/v1/chat/completions", json={"model": "moai/default", "messages": [
            {"role": "user", "content": "word " * 400_000}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_requests_turned_away_before_any_mix_are_counted_by_code(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    store = TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")
    _, secret = create_key(store, "team")
    auth = {"authorization": f"Bearer {secret}"}
    hi = [{"role": "user", "content": "hi"}]
    with TestClient(create_app(config(), store)) as client:
        client.post("/v1/chat/completions", json={"model": "moai/default", "messages": hi})
        client.post("/v1/chat/completions", json={"model": "moai/default", "messages": hi},
                    headers={"authorization": "Bearer nope"})
        for name in ("retired-model-1", "retired-model-2"):  # each unknown name: the same series
            client.post("/v1/chat/completions", json={"model": name, "messages": hi}, headers=auth)
        client.post("/v1/chat/completions", content=b"{not json", headers=auth)
        text = client.get("/metrics").text
    counted = {(s.labels["status"], s.labels["code"]): s.value for f in text_string_to_metric_families(text)
               if f.name == "moai_rejected_requests" for s in f.samples if s.name.endswith("_total")}
    assert counted == {("401", "missing_api_key"): 1, ("401", "invalid_api_key"): 1,
                       ("404", "model_not_found"): 2, ("400", "invalid_json"): 1}


def test_an_upstream_echoing_its_key_and_hosts_does_not_hand_them_to_clients(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from stub_openai import ECHOED_SECRET as SECRET
    from stub_openai import StubServer, echoing_upstream

    monkeypatch.setenv("ECHO_KEY", SECRET)
    with StubServer(app=echoing_upstream()) as up:
        cfg = parse_config(f"""
models:
  echo: {{provider: openai_compat, endpoint: "{up.url}", api_key_env: ECHO_KEY, privacy: private, max_retries: 0}}
mixes:
  default: {{strategy: route, models: [echo]}}
""")
        with TestClient(create_app(cfg)) as client:
            r = client.post("/v1/chat/completions", json={"model": "moai/default", "messages": [
                {"role": "user", "content": "hi"}]})
    message = r.json()["error"]["message"]
    assert r.status_code == 400 and "Bad request" in message
    assert SECRET not in message and "internal.corp" not in message and "10.9.8.7" not in message


@pytest.mark.parametrize(("text", "hidden"), [
    ("Connect call failed ('fd00::1234', 80, 0, 0)", "fd00::1234"),
    ("host fd00::1234 unreachable", "fd00::1234"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    ("token sk-proj-abcdefghijkl rejected", "sk-proj-abcdefghijkl"),
    # what the sensitive-data scan calls a secret, echoed in an upstream's error
    ("upstream says: password=hunter2hunter2", "hunter2hunter2"),
    ("invalid token=abc123secretvalue", "abc123secretvalue"),
    ('bad request {"api_key": "abcdef123456"}', "abcdef123456"),
    ("key ghp_abcdefghijklmnopqrstuvwxyz0123456789 leaked", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "dozjgNry"),
])
def test_addresses_and_credentials_are_scrubbed(text: str, hidden: str) -> None:
    from moai.server.app import public

    assert hidden not in public(text, config())


@pytest.mark.parametrize("text", ["at 12:30:45 the queue was full", "std::vector<int> overflow", "version 1.2.3.4.5",
                                  "max_tokens: 100000 is too large", "prompt has 5000 tokens: over the limit"])
def test_times_and_code_are_not_taken_for_addresses(text: str) -> None:
    from moai.server.app import public

    assert public(text, config()) == text


def test_monitoring_shows_a_keys_models_only(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")
    two = parse_config("""
models:
  a: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}
  b: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}
mixes:
  default: {strategy: route, models: [a]}
  other: {strategy: route, models: [b]}
""")
    _, narrow = create_key(store, "narrow", mixes=["default"])
    with TestClient(create_app(two, store)) as client:
        assert client.get("/moai/stats").status_code == 401
        seen = client.get("/moai/stats", headers={"authorization": f"Bearer {narrow}"}).json()["models"]
        probe = client.get("/healthz").json()
        keyed = client.get("/healthz", headers={"authorization": f"Bearer {narrow}"}).json()
        ready = client.get("/readyz")
        ready_keyed = client.get("/readyz", headers={"authorization": f"Bearer {narrow}"}).json()
    assert set(seen) <= {"a"}
    assert "breakers" not in probe and probe["models"] == 2 and probe["status"] == "ok"
    assert keyed["breakers"] == {"a": "closed"}
    assert ready.status_code == 200 and ready.json()["usable"] == [] and ready_keyed["usable"] == ["a"]
    assert ready.json()["usable_count"] == 1  # a keyless probe gets how many, not which


def test_too_many_tools_or_biases_are_refused_at_once() -> None:
    tools = [{"type": "function", "function": {"name": f"f{i}", "parameters": {"type": "object"}}}
             for i in range(129)]
    with TestClient(create_app(config())) as client:
        r = client.post("/v1/chat/completions", json={"model": "moai/default", "tools": tools,
                                                      "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 400 and "129 tools" in r.json()["error"]["message"]
        bias = {str(i): 1 for i in range(2000)}
        r = client.post("/v1/chat/completions", json={"model": "moai/default", "logit_bias": bias,
                                                      "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 400 and "2000 token biases" in r.json()["error"]["message"]


def test_an_error_no_model_answered_names_no_model() -> None:
    """x-moai-model names the model that answered: a 502 had the gate's pick there, which had failed."""
    with TestClient(create_app(config(free_port()))) as client:
        r = client.post("/v1/chat/completions",
                        json={"model": "moai/default", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 502 and "x-moai-model" not in r.headers and r.headers["x-moai-mix"] == "default"


def test_a_models_created_time_is_the_same_on_every_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenAI's ``created`` is a fixed date per model; it was the time of each request."""
    import time as clock

    with TestClient(create_app(config())) as client:
        first = {m["id"]: m["created"] for m in client.get("/v1/models").json()["data"]}
        later = clock.time() + 5
        monkeypatch.setattr(clock, "time", lambda: later)
        again = {m["id"]: m["created"] for m in client.get("/v1/models").json()["data"]}
        one = client.get("/v1/models/moai/default").json()
    assert first == again and one["created"] == first["moai/default"]
