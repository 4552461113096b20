"""Connections that never finish a request's headers (opened and left idle, or trickled a byte at a time) are
closed after ``--timeout-headers``: they would otherwise hold places among ``--limit-concurrency`` for good, and a
few of them turned every request away with 503, ``/readyz`` included."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
from servers import start_moai, stop
from stub_openai import StubServer

pytestmark = pytest.mark.integration


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (recv reads the end) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_idle_and_trickling_connections_are_closed_and_free_their_places(tmp_path: Path) -> None:
    with StubServer() as up:
        srv = start_moai(f"""
models:
  m: {{provider: openai_compat, endpoint: "{up.url}", privacy: private, max_retries: 0}}
mixes:
  default: {{strategy: route, models: [m]}}
""", tmp_path, args=("--timeout-headers", "1", "--limit-concurrency", "4"))
        try:
            port = int(srv.base.rsplit(":", 1)[1])
            idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
            time.sleep(0.3)
            assert httpx.get(srv.base + "/readyz").status_code == 503  # every place is held
            trickler = socket.create_connection(("127.0.0.1", port))
            started = time.monotonic()
            assert all(closed_within(s, 3.0) for s in idle)
            for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\n":  # headers never finished in time
                try:
                    trickler.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.1)
            assert closed_within(trickler, 3.0) and time.monotonic() - started < 6.0
            assert httpx.get(srv.base + "/readyz").status_code == 200  # the places are free again
            body = {"model": "moai/default", "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(srv.url + "/chat/completions", json=body).status_code == 200
            for s in [*idle, trickler]:
                s.close()
        finally:
            stop(srv.proc)
