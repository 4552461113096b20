"""Limits through the real server: body size (413, declared or chunked), message count, max_tokens bounds,
malformed numbers, and the per-request timeout; each refusal is OpenAI's error envelope and the server keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from reliability_support import USER, AppServer, assert_openai_error, card, chat, chat_stream, rows, stream_text
from servers import MoaiServer, start_moai, stop
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.server.app import create_app
from moai.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

LIMIT = 40_000


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with StubServer(Script(reply="fine")) as s:
        yield s


@pytest.fixture(scope="module")
def server(stub: StubServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoaiServer]:
    text = f"""
models:
  m: {card(stub.url, context=1_000_000)}
mixes:
  default: {{models: [m]}}
settings:
  max_body_bytes: {LIMIT}
"""
    s = start_moai(text, Path(tmp_path_factory.mktemp("limits")))
    try:
        yield s
    finally:
        stop(s.proc)


def post_raw(server: MoaiServer, content: bytes | Iterator[bytes], path: str = "/chat/completions") -> httpx.Response:
    return httpx.post(server.url + path, content=content, headers={"content-type": "application/json"}, timeout=30)


def padded(size: int) -> bytes:
    """A valid request body of exactly ``size`` bytes (the padding is an ignored extra field)."""
    head = {"model": "moai/default", "messages": USER, "pad": ""}
    base = len(json.dumps(head).encode())
    return json.dumps({**head, "pad": "x" * (size - base)}).encode()


def test_body_over_the_limit_is_413(server: MoaiServer) -> None:
    err = assert_openai_error(post_raw(server, padded(LIMIT + 1)), 413)
    assert err["code"] == "request_too_large" and str(LIMIT) in err["message"]
    assert post_raw(server, padded(LIMIT)).status_code == 200  # exactly at the limit is fine


def test_chunked_body_over_the_limit_is_413_without_a_content_length(server: MoaiServer) -> None:
    """A client that streams its body (no Content-Length) is cut off once it passes the limit."""
    sent = []

    def chunks() -> Iterator[bytes]:
        for _ in range(10_000):  # up to 10 MB, far past the limit
            sent.append(1)
            yield b" " * 1000

    err = assert_openai_error(post_raw(server, chunks()), 413)
    assert err["code"] == "request_too_large"


def test_feedback_body_is_limited_too(server: MoaiServer) -> None:
    assert_openai_error(post_raw(server, b'{"id": "x", "score": 1, "comment": "' + b"x" * LIMIT + b'"}',
                                 "/feedback"), 413)


@pytest.mark.parametrize("count,status", [(1024, 200), (1025, 400)])
def test_message_count_limit(server: MoaiServer, count: int, status: int) -> None:
    messages = [{"role": "user", "content": "hi"}] * count
    r = httpx.post(server.url + "/chat/completions", json={"model": "moai/default", "messages": messages}, timeout=30)
    if status == 200:
        assert r.status_code == 200, r.text
    else:
        assert assert_openai_error(r, 400)["param"] == "messages"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [0, -1, (1 << 20) + 1, 10**30, 1.5, "many", [1]])
def test_max_tokens_out_of_bounds_is_400(server: MoaiServer, field: str, value: object) -> None:
    err = assert_openai_error(chat(server.url, **{field: value}), 400)
    assert err["param"] == field and err["type"] == "invalid_request_error"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_at_the_bounds_is_passed_through(server: MoaiServer, stub: StubServer, field: str) -> None:
    """Under the name the client used: OpenAI's reasoning models refuse max_tokens."""
    for value in (1, 32768):
        assert chat(server.url, **{field: value}).status_code == 200
        assert stub.script.seen[-1][field] == value
        other = "max_tokens" if field == "max_completion_tokens" else "max_completion_tokens"
        assert other not in stub.script.seen[-1]


@pytest.mark.parametrize("body", [
    b"[" * 15_000 + b"]" * 15_000,  # nesting deeper than the JSON parser's recursion limit
    b'{"model": "moai/default", "max_tokens": ' + b"9" * 5000 + b"}",  # past Python's int-digits limit
    b'{"model": "moai/default", "messages": [{"role": "user", "content": "hi"}], "moai": {"weights": '
    b'{"quality": NaN}}}',
    b'{"model": "moai/default", "messages": [{"role": "user", "content": "hi"}], "moai": {"weights": '
    b'{"quality": 1e308, "cost": 1e308}}}',
    b'{"model": "moai/default", "messages": [{"role": "user", "content": "hi"}], "moai": {"weights": '
    b'{"cost": -1}}}',
    b"\xff\xfe\x00garbage",
], ids=["deep-nesting", "huge-int", "nan-weight", "huge-weights", "negative-weight", "bad-utf8"])
def test_malformed_numbers_and_nesting_are_400_not_500(server: MoaiServer, body: bytes) -> None:
    """Each of these was a 500 before: the parser's RecursionError/ValueError, or NaN in the response JSON."""
    assert_openai_error(post_raw(server, body), 400)
    assert chat(server.url).status_code == 200


def test_feedback_score_must_be_finite(server: MoaiServer) -> None:
    answered = chat(server.url).json()["id"]
    r = post_raw(server, json.dumps({"id": answered, "score": 1}).encode().replace(b"1}", b"NaN}"), "/feedback")
    assert assert_openai_error(r, 400)["param"] == "score"
    r = httpx.post(server.url + "/feedback", json={"id": answered, "score": 1}, timeout=10)
    assert r.status_code == 200 and r.json()["request_id"] == answered


# ---------------------------------------------------------------- per-request timeout


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppServer, Path]]:
    """moai with a 0.5 s per-request timeout over a model that takes 3 s (its own time-out is longer), and one
    that starts at once but then streams a word every 0.2 s."""
    tmp = Path(tmp_path_factory.mktemp("timeout"))
    with (StubServer(Script(reply="too slow", delay_s=3.0)) as slow,
          StubServer(Script(reply="one two three four five six seven", word_delay_s=0.2)) as dribbling):
        config = parse_config(f"models:\n  slow: {card(slow.url, timeout_s=30)}\n"
                              f"  dribbling: {card(dribbling.url, timeout_s=30)}\n"
                              "mixes:\n  default: {models: [slow]}\n  dribble: {models: [dribbling]}\n")
        db = tmp / "moai.db"
        app = create_app(config, TelemetryStore(f"sqlite:///{db}"), request_timeout_s=0.5)
        with AppServer(app) as server:
            yield server, db


def test_request_past_the_timeout_is_504_and_recorded(timed: tuple[AppServer, Path]) -> None:
    server, db = timed
    r = chat(server.url)
    err = assert_openai_error(r, 504)
    assert err["code"] == "request_timeout"
    request_id = r.headers["x-moai-request-id"]
    assert rows(db, "select status, http_status from requests where id=?", request_id) == [("error", 504)]


def test_stream_timing_out_before_its_first_token_is_a_504(timed: tuple[AppServer, Path]) -> None:
    server, db = timed
    r = chat(server.url, stream=True)
    assert assert_openai_error(r, 504)["code"] == "request_timeout"
    request_id = r.headers["x-moai-request-id"]
    assert rows(db, "select status, http_status from requests where id=?", request_id) == [("error", 504)]


def test_stream_past_the_timeout_ends_with_an_error_event(timed: tuple[AppServer, Path]) -> None:
    server, db = timed
    status, events = chat_stream(server.url, "moai/dribble")
    assert status == 200 and events[-1] == "[DONE]"
    assert stream_text(events).startswith("one")  # what was sent before the timeout stays sent
    err = events[-2]["error"]
    assert err["code"] == "request_timeout" and set(err) == {"message", "type", "param", "code"}
    assert rows(db, "select status, http_status from requests where id=?", events[0]["id"]) == [("error", 504)]

