"""Bodies a hostile client sends: nested hundreds of levels deep (a few KB that blew the recursion limit: a 500 and
a traceback in the log per request), or trickled a byte at a time (a connection held for as long as it liked)."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))

from reliability_support import AppServer  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from stub_openai import Script, StubServer  # noqa: E402

from moai.config import parse_config  # noqa: E402
from moai.server import connection  # noqa: E402
from moai.server.app import create_app  # noqa: E402
from moai.telemetry.store import TelemetryStore  # noqa: E402

pytestmark = pytest.mark.integration
HI = [{"role": "user", "content": "hi"}]


def app(url: str, tmp_path: Path) -> object:
    config = parse_config(f"""
models:
  m: {{provider: openai_compat, endpoint: "{url}", privacy: private, max_retries: 0}}
mixes:
  default: {{strategy: route, models: [m]}}
""")
    return create_app(config, TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}"))


@pytest.mark.parametrize("depth", [70, 500, 900])
def test_deep_nesting_is_a_400_without_a_traceback(tmp_path: Path, depth: int, caplog: pytest.LogCaptureFixture
                                                   ) -> None:
    nested: object = "x"
    for _ in range(depth):
        nested = [nested]
    body = {"model": "moai/default", "messages": HI,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"deep": nested}}}]}
    with StubServer(Script()) as stub, TestClient(app(stub.url, tmp_path)) as client:  # type: ignore[arg-type]
        r = client.post("/v1/chat/completions", content=json.dumps(body))
        assert r.status_code == 400, r.text
        assert "nested more than 64 levels" in r.json()["error"]["message"]
        assert stub.script.calls == 0
        assert client.post("/v1/chat/completions", json={"model": "moai/default", "messages": HI}).status_code == 200
    assert not [rec for rec in caplog.records if rec.exc_info]


def test_a_body_trickled_past_the_limit_is_answered_408_and_closed(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "BODY_READ_TIMEOUT_S", 1.0)
    with StubServer(Script()) as stub, AppServer(app(stub.url, tmp_path)) as srv:
        body = json.dumps({"model": "moai/default", "messages": HI}).encode()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         + f"content-length: {len(body)}\r\n\r\n".encode())
            started = time.monotonic()
            reply = b""
            for byte in body:  # one byte every 0.2 s: the whole body would take ~10 s
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                sock.settimeout(0.2)
                try:
                    reply += sock.recv(65536)
                except TimeoutError:
                    continue
                if reply:
                    break
            sock.settimeout(5)
            while b"\r\n\r\n" not in reply:
                reply += sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b"request_body_timeout" in reply
        assert b"connection: close" in reply.lower()
        assert time.monotonic() - started < 3.0
        assert stub.script.calls == 0
