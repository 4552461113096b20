"""Requests at the edges of what OpenAI's clients send and what a config may name: names outside ASCII, a picture
with no text, null for a default, HEAD and 405, a request id on every answer, and a bare mix name retrieved."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.app import create_app
from moai.server.auth import create_key
from moai.telemetry.store import TelemetryStore

MIX, MODEL = "默认", "模型"
MIX_HEADER, MODEL_HEADER = "%E9%BB%98%E8%AE%A4", "%E6%A8%A1%E5%9E%8B"  # UTF-8, percent-encoded
USER = [{"role": "user", "content": "Say hi"}]
PICTURE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


@dataclass
class Gateway:
    client: TestClient
    script: Script
    db: Path
    auth: dict[str, dict[str, str]]  # a key's name: its Authorization header


@contextmanager
def gateway(tmp: Path, settings: str = "", keys: dict[str, list[str] | None] | None = None) -> Iterator[Gateway]:
    """moai's app over one stub upstream, which two models (one named in Chinese) and three mixes call; with
    ``keys`` (name: allowed names), those keys exist from the start."""
    script = Script(reply="hello there")
    with StubServer(script) as stub:
        config = parse_config(f"""
models:
  {MODEL}: {{provider: openai_compat, endpoint: "{stub.url}", privacy: private, max_retries: 0}}
  m: {{provider: openai_compat, endpoint: "{stub.url}", privacy: private, max_retries: 0}}
mixes:
  {MIX}: {{strategy: route, models: [{MODEL}]}}
  default: {{strategy: route, models: [m]}}
  other: {{strategy: route, models: [m]}}
{settings}""", "mix.yaml")
        db = tmp / "moai.db"
        store = TelemetryStore(f"sqlite:///{db}")
        auth = {name: {"authorization": f"Bearer {create_key(store, name, allowed)[1]}"}
                for name, allowed in (keys or {}).items()}
        app = create_app(config, store, mixture=Mixture(config, store=store))
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Gateway(client, script, db, auth)


def stored(db: Path, request_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("select mix, status, http_status from requests where id=?", (request_id,)).fetchall()


def events(client: TestClient, body: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return r, [json.loads(line) for line in lines[:-1]]


def test_a_mix_and_model_named_outside_ascii_answer_with_encoded_headers(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        r = gw.client.post("/v1/chat/completions", json={"model": f"moai/{MIX}", "messages": USER})
        assert r.status_code == 200, r.text
        assert (r.headers["x-moai-mix"], r.headers["x-moai-model"]) == (MIX_HEADER, MODEL_HEADER)
        assert r.json()["model"] == f"moai/{MIX}" and r.json()["choices"][0]["message"]["content"] == "hello there"
        assert stored(gw.db, r.headers["x-request-id"]) == [(MIX, "ok", 200)]

        r, chunks = events(gw.client, {"model": f"moai/{MIX}", "messages": USER, "stream": True})
        assert r.status_code == 200
        assert (r.headers["x-moai-mix"], r.headers["x-moai-model"]) == (MIX_HEADER, MODEL_HEADER)
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "hello there"
        assert {c["model"] for c in chunks} == {f"moai/{MIX}"}
        assert stored(gw.db, r.headers["x-request-id"]) == [(MIX, "ok", 200)]

        r = gw.client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER})  # the model itself
        assert r.status_code == 200, r.text
        assert (r.headers["x-moai-mix"], r.headers["x-moai-model"]) == (MODEL_HEADER, MODEL_HEADER)
        assert gw.script.calls == 3


def test_header_values_outside_printable_ascii_are_percent_encoded() -> None:
    from moai.server.headers import header_value

    assert header_value("qwen2.5-7b@host:8000/v1") == "qwen2.5-7b@host:8000/v1"
    assert header_value(f"moai/{MIX}") == f"moai/{MIX_HEADER}"
    assert header_value("café\x7f") == "caf%C3%A9%7F"


def test_a_picture_alone_is_content(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        r = gw.client.post("/v1/chat/completions", json={"model": "default",
                                                         "messages": [{"role": "user", "content": [PICTURE]}]})
        assert r.status_code == 200, r.text
        assert gw.script.seen[-1]["messages"][-1]["content"] == [PICTURE]
        for empty in ("", "  ", [], [{"type": "text", "text": " "}]):
            r = gw.client.post("/v1/chat/completions", json={"model": "default",
                                                             "messages": [{"role": "user", "content": empty}]})
            assert r.status_code == 400, empty
            assert r.json()["error"]["message"].endswith("a user message needs non-empty content")
        assert gw.script.calls == 1


def test_null_means_the_default(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        r = gw.client.post("/v1/chat/completions", json={"model": "default", "messages": USER, "n": None,
                                                         "stream": None, "stream_options": None})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json") and len(r.json()["choices"]) == 1

        r, chunks = events(gw.client, {"model": "default", "messages": USER, "stream": True,
                                       "stream_options": {"include_usage": None}})
        assert r.status_code == 200
        assert all(c.get("choices") for c in chunks)  # no usage chunk: include_usage's default is false
        for field, value in (("stream", "yes"), ("n", "1"), ("n", 2)):
            r = gw.client.post("/v1/chat/completions", json={"model": "default", "messages": USER, field: value})
            assert (r.status_code, r.json()["error"]["param"]) == (400, field)
        r = gw.client.post("/v1/chat/completions", json={"model": "default", "messages": USER,
                                                         "stream_options": {"include_usage": "yes"}})
        assert (r.status_code, r.json()["error"]["param"]) == (400, "stream_options.include_usage")


def test_head_is_answered_like_get(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        for path in ("/healthz", "/readyz", "/v1/models", "/v1/models/moai/default", "/v1/models/m"):
            got, head = gw.client.get(path), gw.client.head(path)
            assert (got.status_code, head.status_code) == (200, 200), path
            assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]
            assert head.headers["content-length"] == str(len(got.content))


def test_a_405_says_what_is_allowed(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        for method, path, allowed in (("GET", "/v1/chat/completions", "POST"), ("HEAD", "/v1/feedback", "POST"),
                                      ("DELETE", "/v1/models", "GET")):
            r = gw.client.request(method, path)
            assert r.status_code == 405, (method, path)
            assert allowed in r.headers["allow"] and r.headers["x-request-id"].startswith("req-")
            if method != "HEAD":
                assert r.json()["error"]["type"] == "invalid_request_error"


def test_every_chat_answer_has_a_request_id(tmp_path: Path) -> None:
    with gateway(tmp_path, "settings: {max_body_bytes: 2000}", keys={"k": None}) as gw:
        auth = gw.auth["k"]
        answers = {
            400: gw.client.post("/v1/chat/completions", json={"model": "default"}, headers=auth),
            404: gw.client.post("/v1/chat/completions", json={"model": "nope", "messages": USER}, headers=auth),
            413: gw.client.post("/v1/chat/completions", headers=auth,
                                json={"model": "default", "messages": [{"role": "user", "content": "x" * 3000}]}),
            401: gw.client.post("/v1/chat/completions", json={"model": "default", "messages": USER}),
        }
        for status, r in answers.items():
            assert r.status_code == status, r.text
            assert r.headers["x-request-id"].startswith("req-"), status
        assert answers[400].headers["x-request-id"] != answers[404].headers["x-request-id"]

        r = gw.client.post("/v1/chat/completions", json={"model": "default", "messages": USER}, headers=auth)
        assert r.status_code == 200 and r.headers["x-request-id"] == r.json()["id"]


def test_an_internal_error_has_a_request_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with gateway(tmp_path) as gw:
        def broken(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("keys unreadable")

        monkeypatch.setattr(gw.client.app.state.keeper, "admit", broken)  # type: ignore[attr-defined]
        r = gw.client.post("/v1/chat/completions", json={"model": "default", "messages": USER})
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert r.headers["x-request-id"].startswith("req-")


def test_a_model_is_retrieved_by_any_name_chat_takes(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        for asked, listed in (("default", "moai/default"), ("moai/default", "moai/default"), (MIX, f"moai/{MIX}"),
                              ("m", "m"), (MODEL, MODEL)):
            r = gw.client.get(f"/v1/models/{asked}")
            assert r.status_code == 200, asked
            assert r.json()["id"] == listed
            chat = gw.client.post("/v1/chat/completions", json={"model": asked, "messages": USER})
            assert chat.status_code == 200, asked
        for unknown in ("nope", "moai/m", "moai/nope"):  # chat takes none of these either
            assert gw.client.get(f"/v1/models/{unknown}").status_code == 404
            chat = gw.client.post("/v1/chat/completions", json={"model": unknown, "messages": USER})
            assert chat.status_code == 404


def test_a_key_retrieves_only_what_it_may_call(tmp_path: Path) -> None:
    with gateway(tmp_path, keys={"default-only": ["default"]}) as gw:
        auth = gw.auth["default-only"]
        assert gw.client.get("/v1/models/default", headers=auth).json()["id"] == "moai/default"
        for name in ("other", "m"):
            assert gw.client.get(f"/v1/models/{name}", headers=auth).status_code == 404
            chat = gw.client.post("/v1/chat/completions", json={"model": name, "messages": USER}, headers=auth)
            assert chat.status_code == 403


def test_an_internal_error_is_answered_by_the_route_and_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Raised on to the server, an exception is answered 500 all the same, but the server then closes the client's
    kept-alive connection: its next request fails to connect."""
    with gateway(tmp_path) as gw:
        def broken(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("keys unreadable")

        monkeypatch.setattr(gw.client.app.state.keeper, "admit", broken)  # type: ignore[attr-defined]
        with TestClient(gw.client.app) as raising:  # re-raises whatever reaches the server
            r = raising.post("/v1/chat/completions", json={"model": "default", "messages": USER})
    assert r.status_code == 500 and r.json()["error"]["message"] == "internal error: RuntimeError"
    assert any(rec.exc_info and "keys unreadable" in str(rec.exc_info[1]) for rec in caplog.records)
