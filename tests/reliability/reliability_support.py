"""Helpers shared by the reliability tests: config snippets, SSE parsing and telemetry look-ups."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx

USER = [{"role": "user", "content": "Say something."}]


def card(url: str, privacy: str = "private", price: float = 0.0, timeout_s: float = 10.0, **extra: Any) -> str:
    """One model card (flow-style YAML) for an OpenAI-compatible endpoint, without SDK retries.

    ``price`` orders the rule-based gate when a mix weighs only cost: the cheapest model is chosen first.
    """
    fields = {"provider": "openai_compat", "endpoint": json.dumps(url), "model": "stub", "privacy": privacy,
              "max_retries": 0, "timeout_s": timeout_s, "params_b": 7,
              "price": f"{{input_per_mtok: {price}, output_per_mtok: {price}}}", **extra}
    return "{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}"


def chat(base_url: str, model: str = "moai/default", stream: bool = False, timeout: float = 30,
         **body: Any) -> httpx.Response:
    """POST one chat completion (non-streamed) and return the raw response."""
    payload = {"model": model, "messages": USER, "stream": stream, **body}
    return httpx.post(base_url + "/chat/completions", json=payload, timeout=timeout)


def chat_stream(base_url: str, model: str = "moai/default", timeout: float = 30,
                **body: Any) -> tuple[int, list[Any]]:
    """Stream one chat completion; return the status and the decoded ``data:`` events ("[DONE]" kept as text)."""
    payload = {"model": model, "messages": USER, "stream": True, **body}
    events: list[Any] = []
    with httpx.stream("POST", base_url + "/chat/completions", json=payload, timeout=timeout) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, [r.json()]
        for line in r.iter_lines():
            if not line:
                continue
            assert line.startswith("data: "), line
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return r.status_code, events


def stream_text(events: list[Any]) -> str:
    """The concatenated content deltas of a decoded SSE stream."""
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events if isinstance(e, dict) and e.get("choices")
    )


def stream_summary(events: list[Any]) -> dict[str, Any]:
    """The ``moai`` summary carried by the finish chunk of a stream."""
    found = [e["moai"] for e in events if isinstance(e, dict) and "moai" in e]
    assert len(found) == 1, events
    return found[0]


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the telemetry database (SQLite) directly, as an operator would."""
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def assert_openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    """The response has ``status`` and OpenAI's error envelope; return the inner error object."""
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    return err


class AppServer:
    """moai's ASGI app served by uvicorn on loopback in a background thread (for tests that tune internals,
    such as the breaker cool-down, that the config cannot set yet)."""

    def __init__(self, app: Any) -> None:
        import threading

        import uvicorn
        from stub_openai import free_port

        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> AppServer:
        import time

        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("moai app did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
