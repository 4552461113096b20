"""Graceful shutdown: on SIGTERM the server stops accepting, lets in-flight requests finish, flushes telemetry."""

from __future__ import annotations

import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_support import card, chat, chat_stream, rows, stream_text
from servers import start_moai
from stub_openai import Script, StubServer

pytestmark = pytest.mark.integration


def _in_flight(fn: Any, *args: Any, **kw: Any) -> Future[Any]:
    pool = ThreadPoolExecutor(1)
    fut = pool.submit(fn, *args, **kw)
    pool.shutdown(wait=False)
    return fut


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_sigterm_lets_in_flight_requests_finish_and_flushes_telemetry(tmp_path: Path, stream: bool) -> None:
    with StubServer(Script(reply="slow but complete", delay_s=2.0)) as slow:
        server = start_moai(f"models:\n  slow: {card(slow.url)}\nmixes:\n  default: {{}}\n", tmp_path)
        try:
            fut = _in_flight(chat_stream, server.url) if stream else _in_flight(chat, server.url)
            deadline = time.time() + 10
            while slow.script.calls == 0 and time.time() < deadline:  # the request has reached the model
                time.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(httpx.TransportError):  # no new work is accepted while draining
                httpx.get(server.base + "/healthz", timeout=2)
            if stream:
                status, events = fut.result(timeout=30)
                assert status == 200 and events[-1] == "[DONE]"
                assert stream_text(events) == "slow but complete"
                request_id = events[0]["id"]
            else:
                r = fut.result(timeout=30)
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["message"]["content"] == "slow but complete"
                request_id = r.json()["id"]
            # uvicorn re-raises the signal once drained, so the exit is "killed by SIGTERM", after a clean shutdown
            assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
            assert "Traceback" not in (tmp_path / "moai.log").read_text()
        finally:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()
    assert rows(server.db, "select status, model from requests where id=?", request_id) == [("ok", "slow")]
    assert rows(server.db, "select count(*) from calls where request_id=?", request_id) == [(1,)]
