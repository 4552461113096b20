"""Property tests for the OpenAI request parser through the ASGI app: any body gives a 200 (a valid completion or
stream) or a 4xx with OpenAI's error envelope — never a 5xx, never invalid JSON. ``MOAI_FUZZ_EXAMPLES`` scales it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.server.app import create_app

EXAMPLES = int(os.environ.get("MOAI_FUZZ_EXAMPLES", "0")) or 120
STATUSES: dict[int, int] = {}  # printed at the end (pytest -s): how deep the generated requests got
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON = st.recursive(JSON_SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                      max_size=4), max_leaves=20)
NUMBERS = st.integers() | st.floats() | st.integers(-2, 40000) | st.floats(-1, 3)
ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "wizard", ""])
TEXT = st.text(max_size=40) | st.sampled_from(["hi", " ", "What is 2+2?"])
PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]) | JSON}, optional={"text": TEXT | JSON})
MESSAGE = st.fixed_dictionaries(
    {"role": ROLES | JSON, "content": TEXT | st.lists(PART, max_size=3) | JSON},
    optional={"name": TEXT | JSON, "tool_call_id": TEXT | JSON, "tool_calls": st.lists(JSON, max_size=2) | JSON},
)
MOAI = st.fixed_dictionaries({}, optional={
    "models": st.lists(st.sampled_from(["m", "n", "x"]) | JSON, max_size=3) | JSON,
    "exclude": st.lists(st.sampled_from(["m", "n"]), max_size=2) | JSON,
    "max_cost_usd": NUMBERS | JSON,
    "weights": st.dictionaries(st.sampled_from(["quality", "cost", "latency", "carbon", "speed"]), NUMBERS | JSON,
                               max_size=4) | JSON,
    "privacy": st.sampled_from(["local", "private", "cloud", "secret"]) | JSON,
    "cache": st.booleans() | JSON,
    "other": JSON,
})
REQUEST = st.fixed_dictionaries(
    {"model": st.sampled_from(["moai/default", "moai/both", "default", "m", "moai/nope", "", "moai/"]) | JSON,
     "messages": st.lists(MESSAGE, max_size=4) | JSON},
    optional={
        "stream": st.booleans() | JSON,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | JSON}) | JSON,
        "max_tokens": NUMBERS | JSON, "max_completion_tokens": NUMBERS | JSON,
        "temperature": NUMBERS | JSON, "top_p": NUMBERS | JSON, "n": NUMBERS | JSON, "seed": NUMBERS | JSON,
        "stop": TEXT | st.lists(TEXT, max_size=6) | JSON,
        "tools": st.lists(JSON, max_size=2) | JSON, "tool_choice": TEXT | JSON,
        "response_format": JSON, "user": TEXT | JSON, "moai": MOAI | JSON, "logprobs": JSON,
    },
)

# valid in shape, with edge values (bounds, NaN, inf, unicode, tools): these reach routing and the model call
EDGE_FLOATS = st.floats(-0.5, 2.5) | st.sampled_from([0.0, 1.0, 2.0, float("nan"), float("inf"), 1e-300])
GOOD_MESSAGES = st.lists(st.fixed_dictionaries({
    "role": st.sampled_from(["user", "system", "developer"]),
    "content": st.text(min_size=1, max_size=60).filter(str.strip)
    | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(min_size=1).filter(str.strip)}),
               min_size=1, max_size=2),
}), min_size=1, max_size=3).map(lambda ms: [*ms, {"role": "user", "content": "hi"}])
MOSTLY_VALID = st.fixed_dictionaries(
    {"model": st.sampled_from(["moai/default", "moai/both", "default", "both", "m", "n"]), "messages": GOOD_MESSAGES},
    optional={
        "stream": st.booleans(), "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "max_tokens": st.integers(-1, 40000) | st.none(), "max_completion_tokens": st.integers(0, 33000),
        "temperature": EDGE_FLOATS, "top_p": EDGE_FLOATS, "n": st.integers(0, 2), "seed": st.integers(),
        "stop": st.text(max_size=4) | st.lists(st.text(max_size=4), max_size=5),
        "tools": st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
            {"name": st.text(min_size=1, max_size=8)})}), max_size=2),
        "user": st.text(max_size=10), "response_format": st.just({"type": "json_object"}),
        "moai": st.fixed_dictionaries({}, optional={
            "models": st.lists(st.sampled_from(["m", "n"]), max_size=2, unique=True),
            "exclude": st.lists(st.sampled_from(["m", "n"]), max_size=1),
            "max_cost_usd": st.floats(0, 1) | st.sampled_from([1e-12, float("inf"), float("nan")]),
            "weights": st.dictionaries(st.sampled_from(["quality", "cost", "latency", "carbon"]),
                                       st.floats(0, 1e6) | st.sampled_from([1e6, 1e308, float("nan")]), max_size=4),
            "privacy": st.sampled_from(["local", "private", "cloud"]),
            "cache": st.booleans(),
        }),
    },
)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """moai's app in-process over two fast stub models on loopback (no telemetry database: parsing is the point)."""
    with StubServer(Script(reply="ok")) as a, StubServer(Script(reply="ok too")) as b:
        config = parse_config(f"""
models:
  m: {{provider: openai_compat, endpoint: "{a.url}", privacy: private, max_retries: 0, params_b: 7}}
  n: {{provider: openai_compat, endpoint: "{b.url}", privacy: cloud, max_retries: 0, params_b: 70,
      price: {{input_per_mtok: 1, output_per_mtok: 2}}, context: 8192}}
mixes:
  default: {{models: [m]}}
  both: {{models: [m, n], fallbacks: gate, weights: {{quality: 1, cost: 1, latency: 0.1}}}}
""")
        with TestClient(create_app(config), raise_server_exceptions=False) as c:
            yield c
    print(f"\nrequest fuzzing: responses by status: {dict(sorted(STATUSES.items()))}")


def strict_json(text: str) -> Any:
    """Parse as a strict client would: NaN and Infinity are not JSON."""
    def refuse(token: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {token} in {text[:200]!r}")
    return json.loads(text, parse_constant=refuse)


def refused_well(status: int, text: str, seen: dict[int, int]) -> bool:
    """Counts ``status`` in ``seen``; never a 5xx; whether it was a refusal, then with OpenAI's error envelope."""
    seen[status] = seen.get(status, 0) + 1
    assert status < 500, text
    if status < 400:
        assert status == 200, text
        return False
    err = strict_json(text)["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    return True


def check_response(status: int, text: str, content_type: str) -> None:
    if refused_well(status, text, STATUSES):
        return
    if content_type.startswith("text/event-stream"):
        lines = [ln for ln in text.split("\n") if ln]
        assert lines[-1] == "data: [DONE]", lines[-3:]
        events = [strict_json(ln.removeprefix("data: ")) for ln in lines[:-1]]
        assert not any("error" in e for e in events), events
        assert all(e["object"] == "chat.completion.chunk" for e in events)
    else:
        body = strict_json(text)
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
        for v in (body["moai"]["cost_usd"], body["usage"]["total_tokens"]):
            assert math.isfinite(v)


def post(client: TestClient, content: bytes) -> None:
    r = client.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    check_response(r.status_code, r.text, r.headers.get("content-type", ""))


@FUZZ
@given(REQUEST)
def test_near_valid_requests_never_5xx(client: TestClient, body: dict[str, Any]) -> None:
    post(client, json.dumps(body).encode())  # json.dumps writes NaN/Infinity, which Python's parser accepts


@FUZZ
@given(MOSTLY_VALID)
def test_mostly_valid_requests_never_5xx(client: TestClient, body: dict[str, Any]) -> None:
    post(client, json.dumps(body).encode())


@FUZZ
@given(JSON)
def test_any_json_never_5xx(client: TestClient, body: Any) -> None:
    post(client, json.dumps(body).encode())


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_never_5xx(client: TestClient, body: bytes) -> None:
    post(client, body)


@FUZZ
@given(st.fixed_dictionaries({"id": TEXT | JSON, "score": NUMBERS | JSON}, optional={"comment": TEXT | JSON}) | JSON)
def test_any_feedback_never_5xx(client: TestClient, body: Any) -> None:
    r = client.post("/v1/feedback", content=json.dumps(body).encode())
    check_response(r.status_code, r.text, "")


def test_the_generators_reach_the_models(client: TestClient) -> None:
    """Sanity: a well-formed request through the same client is answered by a model, streamed and not."""
    ok = {"model": "moai/both", "messages": [{"role": "user", "content": "hi"}]}
    r = client.post("/v1/chat/completions", json=ok)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] in ("ok", "ok too")
    r = client.post("/v1/chat/completions", json={**ok, "stream": True})
    check_response(r.status_code, r.text, r.headers["content-type"])
