"""`moai serve` as a process: how it stops (signals, the graceful timeout, exit status) and the options it refuses.

Orchestrators send SIGTERM and SIGKILL after a grace period, terminals send SIGHUP, and Docker and Kubernetes show
any non-zero exit as a failure: the server must stop in bounded time, record what it stopped, and exit 0.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import one_line_error
from servers import MoaiServer, spawn, wait_http
from stub_openai import Script, StubServer, free_port
from typer.testing import CliRunner

from moai.cli import app

USER = [{"role": "user", "content": "Say something."}]


def _serve(tmp: Path, upstream: str, *options: str) -> MoaiServer:
    """``moai serve`` over one stub model, with extra serve options (start_moai takes none)."""
    cfg = tmp / "mix.yaml"
    cfg.write_text(f'models:\n  m: {{provider: openai_compat, endpoint: "{upstream}", model: stub, privacy: private, '
                   f'max_retries: 0, timeout_s: 60, params_b: 7}}\nmixes:\n  default: {{}}\n')
    db, port, log = tmp / "moai.db", free_port(), tmp / "moai.log"
    proc = spawn([sys.executable, "-m", "moai.cli", "serve", "--config", str(cfg), "--port", str(port),
                  "--database-url", f"sqlite:///{db}", *options], log)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, log=log)
    return MoaiServer(f"http://127.0.0.1:{port}/v1", db, proc)


def _in_background(fn: Any) -> dict[str, Any]:
    """Run ``fn(out)`` in a thread; ``out`` fills as it goes (``out["error"]`` if it raised)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            fn(out)
        except Exception as e:  # noqa: BLE001 - reported through out
            out["error"] = repr(e)
        finally:
            out["done"] = True

    threading.Thread(target=run, daemon=True).start()
    return out


def _until(cond: Any, timeout: float = 15) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.02)


def _status(db: Path, request_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("select status, http_status from requests where id=?", (request_id,)).fetchall()


def _finish(server: MoaiServer, within: float) -> int:
    """The exit status, once the process has ended within ``within`` seconds (it is killed otherwise)."""
    try:
        return server.proc.wait(timeout=within)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


@pytest.mark.integration
def test_sigterm_stops_a_stream_still_running_at_the_graceful_timeout_records_it_and_exits_0(tmp_path: Path) -> None:
    """A trickling stream held the shutdown open for minutes, past any grace period (then SIGKILL: no record)."""
    words = " ".join(f"w{i}" for i in range(100))  # 50 s at 0.5 s a word
    with StubServer(Script(reply=words, word_delay_s=0.5)) as stub:
        server = _serve(tmp_path, stub.url, "--timeout-graceful-shutdown", "1")

        def stream(out: dict[str, Any]) -> None:
            out["events"] = events = []
            body = {"model": "moai/default", "messages": USER, "stream": True}
            with httpx.stream("POST", server.url + "/chat/completions", json=body, timeout=60) as r:
                out["status"] = r.status_code
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        data = line.removeprefix("data: ")
                        events.append(data if data == "[DONE]" else json.loads(data))

        out = _in_background(stream)
        _until(lambda: len(out.get("events", [])) >= 2 or "done" in out)  # answering: role chunk, first word
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert _finish(server, within=15) == 0
        assert time.monotonic() - sent < 8  # the 1 s drain, the stop and the telemetry flush
        _until(lambda: "done" in out)
    assert "error" not in out, out
    events = out["events"]
    assert out["status"] == 200 and events[-1] == "[DONE]", events[-3:]
    assert events[-2]["error"]["code"] == "server_shutting_down", events[-2]
    assert _status(server.db, events[0]["id"]) == [("cancelled", 503)]  # as its client was told, not 499
    assert "Traceback" not in (tmp_path / "moai.log").read_text()


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_let_the_request_in_flight_finish_and_exit_0(tmp_path: Path, sig: int) -> None:
    """SIGHUP killed the server at once (nothing answered, nothing recorded); a drained SIGTERM exited 143."""
    with StubServer(Script(reply="slow but complete", delay_s=1.5)) as stub:
        server = _serve(tmp_path, stub.url)
        out = _in_background(lambda o: o.update(r=httpx.post(
            server.url + "/chat/completions", json={"model": "moai/default", "messages": USER}, timeout=30)))
        _until(lambda: stub.script.calls > 0 or "done" in out)
        server.proc.send_signal(sig)
        assert _finish(server, within=20) == 0
        _until(lambda: "done" in out)
    assert "error" not in out, out
    r = out["r"]
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "slow but complete", r.text
    assert _status(server.db, r.json()["id"]) == [("ok", 200)]
    assert "Traceback" not in (tmp_path / "moai.log").read_text()


@pytest.mark.integration
def test_a_second_ctrl_c_answers_the_request_in_flight_in_openai_format_and_records_it(tmp_path: Path) -> None:
    """A forced quit answered "500 Internal Server Error" in plain text and logged tracebacks."""
    with StubServer(Script(reply="never sent", delay_s=4)) as stub:
        server = _serve(tmp_path, stub.url)
        out = _in_background(lambda o: o.update(r=httpx.post(
            server.url + "/chat/completions", json={"model": "moai/default", "messages": USER}, timeout=60)))
        _until(lambda: stub.script.calls > 0 or "done" in out)
        server.proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGINT)
        assert _finish(server, within=15) == 0
        _until(lambda: "done" in out)
    assert "error" not in out, out
    r = out["r"]
    assert r.status_code == 503 and r.json()["error"]["code"] == "server_shutting_down", r.text
    with sqlite3.connect(server.db) as conn:  # the only request, stopped before any answer
        recorded = conn.execute("select id, status, http_status, error from requests").fetchall()
    assert recorded == [(r.headers["x-request-id"], "cancelled", 503, "server shutting down")]
    assert r.headers["x-moai-request-id"] == r.headers["x-request-id"]
    assert "Traceback" not in (tmp_path / "moai.log").read_text()


@pytest.mark.parametrize(("option", "needles"), [
    (["--log-level", "bogus"], ["--log-level", "critical, error, warning, info, debug, trace", "bogus"]),
    (["--host", ""], ["--host", "empty"]),
])
def test_a_bad_log_level_or_an_empty_host_is_one_line_before_anything_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: list[str], needles: list[str]) -> None:
    """A bad level crashed with a KeyError after the banner; an empty host listened on every interface."""
    from cli_support import record_serving

    served = record_serving(monkeypatch)  # a regression fails below instead of serving for ever
    monkeypatch.delenv("MOAI_CONFIG", raising=False)
    db = tmp_path / "moai.db"
    r = CliRunner().invoke(app, ["serve", "--port", str(free_port()), "--database-url", f"sqlite:///{db}", *option])
    one_line_error(r, *needles)
    assert "serving" not in r.output and not db.exists() and served == []


@pytest.mark.integration
def test_a_client_that_leaves_while_the_server_drains_is_recorded_as_gone_not_as_stopped(tmp_path: Path) -> None:
    """The drain's 503 is for requests the shutdown stops (their clients are told so); a client that gave up by
    itself meanwhile was told nothing, and its request is the 499 it would be on a running server."""
    with StubServer(Script(reply="too late", delay_s=4)) as stub:
        server = _serve(tmp_path, stub.url, "--timeout-graceful-shutdown", "20")
        out = _in_background(lambda o: o.update(r=httpx.post(
            server.url + "/chat/completions", json={"model": "moai/default", "messages": USER}, timeout=1.5)))
        _until(lambda: stub.script.calls > 0 or "done" in out)
        server.proc.send_signal(signal.SIGTERM)  # draining: the request in flight may finish
        _until(lambda: "done" in out)  # the client times out and closes its connection meanwhile
        assert _finish(server, within=20) == 0
    assert "ReadTimeout" in out.get("error", ""), out
    with sqlite3.connect(server.db) as conn:
        recorded = conn.execute("select status, http_status, error from requests").fetchall()
    assert recorded == [("cancelled", 499, "client disconnected")]


@pytest.mark.integration
def test_a_client_that_leaves_a_stream_while_the_server_drains_is_recorded_as_gone(tmp_path: Path) -> None:
    """Mid-answer, as above: the client reads two chunks, the server starts draining, the client hangs up."""
    words = " ".join(f"w{i}" for i in range(100))  # 50 s at 0.5 s a word
    with StubServer(Script(reply=words, word_delay_s=0.5)) as stub:
        server = _serve(tmp_path, stub.url, "--timeout-graceful-shutdown", "30")
        draining = threading.Event()

        def stream(out: dict[str, Any]) -> None:
            out["events"] = 0
            body = {"model": "moai/default", "messages": USER, "stream": True}
            with httpx.stream("POST", server.url + "/chat/completions", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    out["events"] += line.startswith("data: ")
                    if out["events"] >= 2:
                        draining.wait(10)
                        time.sleep(0.5)
                        return  # hangs up mid-answer

        out = _in_background(stream)
        _until(lambda: out.get("events", 0) >= 2 or "done" in out)
        server.proc.send_signal(signal.SIGTERM)
        draining.set()
        _until(lambda: "done" in out)
        assert _finish(server, within=20) == 0  # the stream it was waiting for has ended: no 30 s wait
    assert "error" not in out, out
    with sqlite3.connect(server.db) as conn:
        recorded = conn.execute("select status, http_status, error from requests").fetchall()
    assert recorded == [("cancelled", 499, "client disconnected")]
