"""Property tests for ``POST /v1/messages`` (and ``/v1/messages/count_tokens``) through the ASGI app: any body gives
a 200 (a message object, or a stream of Anthropic's events ending in ``message_stop`` or ``error``) or a 4xx with
Anthropic's error envelope — never a 5xx, never invalid JSON. ``MOAI_FUZZ_EXAMPLES`` scales it."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient
from test_fuzz_request import FUZZ, JSON, NUMBERS, TEXT, client, strict_json  # noqa: F401 - client: the fixture

STATUSES: dict[int, int] = {}
ERROR_TYPES = {"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
               "request_too_large", "rate_limit_error", "api_error", "timeout_error", "overloaded_error"}
TERMINAL = {"message_stop", "error"}

SOURCE = st.fixed_dictionaries({"type": st.sampled_from(["base64", "url", "file", "text"]) | JSON},
                               optional={"media_type": TEXT | JSON, "data": TEXT | JSON, "url": TEXT | JSON})
BLOCK = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "document", "tool_use", "tool_result", "thinking",
                              "redacted_thinking", "server_tool_use"]) | JSON},
    optional={"text": TEXT | JSON, "source": SOURCE | JSON, "id": TEXT | JSON, "name": TEXT | JSON,
              "input": st.dictionaries(st.text(max_size=5), JSON, max_size=2) | JSON, "tool_use_id": TEXT | JSON,
              "content": TEXT | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image"]) | JSON},
                                                               optional={"text": TEXT | JSON}), max_size=2) | JSON,
              "is_error": st.booleans() | JSON, "cache_control": JSON, "title": TEXT | JSON})
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", ""]) | JSON,
                                 "content": TEXT | st.lists(BLOCK, max_size=3) | JSON})
TOOL = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["custom", "web_search_20250305", "bash_20250124"]) | JSON, "name": TEXT | JSON,
    "description": TEXT | JSON, "input_schema": st.just({"type": "object"}) | JSON, "strict": st.booleans() | JSON})
TOOL_CHOICE = st.fixed_dictionaries({"type": st.sampled_from(["auto", "any", "tool", "none", "required"]) | JSON},
                                    optional={"name": TEXT | JSON, "disable_parallel_tool_use": st.booleans() | JSON})
REQUEST = st.fixed_dictionaries(
    {"model": st.sampled_from(["moai/default", "moai/both", "m", "moai/nope", ""]) | JSON,
     "messages": st.lists(MESSAGE, max_size=4) | JSON},
    optional={
        "max_tokens": NUMBERS | JSON, "system": TEXT | st.lists(BLOCK, max_size=2) | JSON,
        "stream": st.booleans() | JSON, "temperature": NUMBERS | JSON, "top_p": NUMBERS | JSON,
        "top_k": NUMBERS | JSON, "stop_sequences": st.lists(TEXT, max_size=3) | JSON,
        "tools": st.lists(TOOL, max_size=2) | JSON, "tool_choice": TOOL_CHOICE | JSON,
        "metadata": st.fixed_dictionaries({}, optional={"user_id": TEXT | JSON}) | JSON,
        "thinking": st.fixed_dictionaries({"type": st.sampled_from(["enabled", "disabled", "adaptive"]) | JSON},
                                          optional={"budget_tokens": NUMBERS | JSON}) | JSON,
        "service_tier": st.sampled_from(["auto", "standard_only"]) | JSON, "stop": JSON, "moai": JSON,
    },
)
MOSTLY_VALID = st.fixed_dictionaries(
    {"model": st.sampled_from(["moai/default", "moai/both", "m", "n"]),
     "max_tokens": st.integers(-1, 5000),
     "messages": st.lists(st.fixed_dictionaries({
         "role": st.just("user"),
         "content": st.text(min_size=1, max_size=40).filter(str.strip)
         | st.lists(st.fixed_dictionaries({"type": st.just("text"),
                                           "text": st.text(min_size=1, max_size=20).filter(str.strip)}),
                    min_size=1, max_size=2)}), min_size=1, max_size=3)},
    optional={"system": st.text(max_size=30), "stream": st.booleans(), "temperature": st.floats(-0.5, 2.5),
              "top_p": st.floats(-0.5, 1.5), "top_k": st.integers(-2, 50),
              "stop_sequences": st.lists(st.text(min_size=1, max_size=5), max_size=3),
              "metadata": st.fixed_dictionaries({"user_id": st.text(max_size=10)}),
              "tool_choice": st.sampled_from([{"type": "auto"}, {"type": "none"}]),
              "thinking": st.just({"type": "enabled", "budget_tokens": 1024}),
              "service_tier": st.sampled_from(["auto", "standard_only"])},
)


def check_response(status: int, text: str, content_type: str) -> None:
    STATUSES[status] = STATUSES.get(status, 0) + 1
    assert status < 500, text
    if status >= 400:
        body = strict_json(text)
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
        assert body["error"]["type"] in ERROR_TYPES and isinstance(body["error"]["message"], str)
        assert body["error"]["message"]
        return
    assert status == 200, text
    if content_type.startswith("text/event-stream"):
        events = []
        for chunk in text.strip().split("\n\n"):
            name, data = chunk.split("\n")
            events.append((name.removeprefix("event: "), strict_json(data.removeprefix("data: "))))
        assert all(name == data["type"] for name, data in events)
        assert events[0][0] == "message_start" and events[-1][0] in TERMINAL, events[-1]
        assert sum(name in TERMINAL for name, _ in events) == 1
        return
    body = strict_json(text)
    assert body["type"] == "message" and body["id"].startswith("msg_") and body["content"], body
    assert body["stop_reason"] in ("end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal")
    assert all(math.isfinite(body["usage"][k]) for k in ("input_tokens", "output_tokens"))


def post(client: TestClient, content: bytes, path: str = "/v1/messages") -> None:  # noqa: F811 - the fixture
    r = client.post(path, content=content, headers={"content-type": "application/json"})
    check_response(r.status_code, r.text, r.headers.get("content-type", ""))
    assert r.headers["request-id"] == r.headers["x-request-id"]


@FUZZ
@given(REQUEST)
def test_near_valid_messages_requests_never_5xx(client: TestClient, body: dict[str, Any]) -> None:  # noqa: F811
    post(client, json.dumps(body).encode())


@FUZZ
@given(MOSTLY_VALID)
def test_mostly_valid_messages_requests_are_answered_whole(client: TestClient,  # noqa: F811
                                                           body: dict[str, Any]) -> None:
    post(client, json.dumps(body).encode())


@FUZZ
@given(JSON)
def test_any_json_to_messages_never_5xx(client: TestClient, body: Any) -> None:  # noqa: F811
    post(client, json.dumps(body).encode())


@FUZZ
@given(REQUEST)
def test_any_token_count_never_5xx(client: TestClient, body: dict[str, Any]) -> None:  # noqa: F811
    r = client.post("/v1/messages/count_tokens", content=json.dumps(body).encode(),
                    headers={"content-type": "application/json"})
    assert r.status_code in (200, 400, 404), r.text
    if r.status_code == 200:
        assert r.json()["input_tokens"] > 0
    else:
        check_response(r.status_code, r.text, "")


def test_the_generators_reach_the_models(client: TestClient) -> None:  # noqa: F811
    """Sanity: a well-formed request through the same client is answered by a model, streamed and not."""
    ok = {"model": "moai/both", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    r = client.post("/v1/messages", json=ok)
    assert r.status_code == 200 and r.json()["content"][0]["text"] in ("ok", "ok too")
    r = client.post("/v1/messages", json={**ok, "stream": True})
    check_response(r.status_code, r.text, r.headers["content-type"])
    deltas = [json.loads(ln[6:]) for ln in r.text.split("\n") if ln.startswith("data: ")]
    assert "".join(e["delta"].get("text", "") for e in deltas if e["type"] == "content_block_delta") in ("ok",
                                                                                                       "ok too")
