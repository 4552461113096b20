"""Property tests for ``POST /v1/responses`` through the ASGI app: any body gives a 200 (a response object, or a
stream of typed events ending in a terminal event) or a 4xx with OpenAI's error envelope — never a 5xx, never
invalid JSON. ``MOAI_FUZZ_EXAMPLES`` scales it."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient
from test_fuzz_request import FUZZ, JSON, NUMBERS, TEXT, client, refused_well, strict_json  # noqa: F401 - client: the fixture

STATUSES: dict[int, int] = {}
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}

CONTENT_PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "output_text", "input_image", "input_file", "refusal"]) | JSON},
    optional={"text": TEXT | JSON, "image_url": st.just("data:image/png;base64,AAAA") | JSON,
              "detail": st.sampled_from(["low", "high", "auto", "ultra"]) | JSON, "file_data": JSON,
              "filename": TEXT | JSON})
ITEM = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer", "assistant", "tool"]) | JSON,
                           "content": TEXT | st.lists(CONTENT_PART, max_size=3) | JSON},
                          optional={"type": st.just("message") | JSON, "id": TEXT | JSON, "status": TEXT | JSON}),
    st.fixed_dictionaries({"type": st.just("function_call")},
                          optional={"call_id": TEXT | JSON, "name": TEXT | JSON, "arguments": TEXT | JSON}),
    st.fixed_dictionaries({"type": st.just("function_call_output")},
                          optional={"call_id": TEXT | JSON, "output": TEXT | st.lists(CONTENT_PART, max_size=2)}),
    st.fixed_dictionaries({"type": st.sampled_from(["reasoning", "item_reference", "web_search_call"]) | JSON},
                          optional={"id": TEXT | JSON, "summary": JSON}),
    JSON,
)
TOOL = st.fixed_dictionaries({"type": st.sampled_from(["function", "web_search", "file_search"]) | JSON},
                             optional={"name": TEXT | JSON, "description": TEXT | JSON, "parameters": JSON,
                                       "strict": st.booleans() | JSON})
REQUEST = st.fixed_dictionaries(
    {"model": st.sampled_from(["moai/default", "moai/both", "m", "moai/nope", ""]) | JSON,
     "input": TEXT | st.lists(ITEM, max_size=4) | JSON},
    optional={
        "instructions": TEXT | JSON, "stream": st.booleans() | JSON, "stream_options": JSON,
        "max_output_tokens": NUMBERS | JSON, "temperature": NUMBERS | JSON, "top_p": NUMBERS | JSON,
        "tools": st.lists(TOOL, max_size=2) | JSON,
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | JSON,
        "parallel_tool_calls": st.booleans() | JSON,
        "text": st.fixed_dictionaries({}, optional={"format": JSON, "verbosity": TEXT | JSON}) | JSON,
        "reasoning": st.fixed_dictionaries({}, optional={"effort": TEXT | JSON, "summary": JSON}) | JSON,
        "include": st.lists(st.sampled_from(["reasoning.encrypted_content", "message.output_text.logprobs"]) | JSON,
                            max_size=2) | JSON,
        "metadata": JSON, "store": st.booleans() | JSON, "truncation": TEXT | JSON, "user": TEXT | JSON,
        "previous_response_id": TEXT | JSON, "top_k": NUMBERS | JSON, "moai": JSON,
    },
)
MOSTLY_VALID = st.fixed_dictionaries(
    {"model": st.sampled_from(["moai/default", "moai/both", "m", "n"]),
     "input": st.text(min_size=1, max_size=40).filter(str.strip)
     | st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer"]),
                                        "content": st.text(min_size=1, max_size=40).filter(str.strip)}),
                min_size=1, max_size=3)},
    optional={"instructions": st.text(max_size=30), "stream": st.booleans(),
              "max_output_tokens": st.integers(-1, 5000), "temperature": st.floats(-0.5, 2.5),
              "top_p": st.floats(-0.5, 1.5), "store": st.booleans(), "metadata": st.dictionaries(
                  st.text(max_size=8), st.text(max_size=8), max_size=3),
              "text": st.just({"format": {"type": "json_object"}}), "truncation": st.sampled_from(["auto", "disabled"]),
              "tool_choice": st.sampled_from(["auto", "none"]), "reasoning": st.just({"effort": "low"})},
)


def check_response(status: int, text: str, content_type: str) -> None:
    if refused_well(status, text, STATUSES):
        return
    if content_type.startswith("text/event-stream"):
        events = [strict_json(ln.removeprefix("data: ")) for ln in text.split("\n") if ln.startswith("data: ")]
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert events[0]["type"] == "response.created" and events[-1]["type"] in TERMINAL, events[-1]
        assert sum(e["type"] in TERMINAL for e in events) == 1
        return
    body = strict_json(text)
    assert body["object"] == "response" and body["status"] in ("completed", "incomplete"), body
    assert body["output"] and all(isinstance(item["type"], str) for item in body["output"])
    assert all(math.isfinite(body["usage"][k]) for k in ("input_tokens", "output_tokens", "total_tokens"))


def post(client: TestClient, content: bytes) -> None:  # noqa: F811 - the fixture, passed in
    r = client.post("/v1/responses", content=content, headers={"content-type": "application/json"})
    check_response(r.status_code, r.text, r.headers.get("content-type", ""))


@FUZZ
@given(REQUEST)
def test_near_valid_responses_requests_never_5xx(client: TestClient, body: dict[str, Any]) -> None:  # noqa: F811
    post(client, json.dumps(body).encode())


@FUZZ
@given(MOSTLY_VALID)
def test_mostly_valid_responses_requests_are_answered_whole(client: TestClient,  # noqa: F811
                                                            body: dict[str, Any]) -> None:
    post(client, json.dumps(body).encode())


@FUZZ
@given(JSON)
def test_any_json_to_responses_never_5xx(client: TestClient, body: Any) -> None:  # noqa: F811
    post(client, json.dumps(body).encode())


def test_the_generators_reach_the_models(client: TestClient) -> None:  # noqa: F811
    """Sanity: a well-formed request through the same client is answered by a model, streamed and not."""
    ok = {"model": "moai/both", "input": "hi"}
    r = client.post("/v1/responses", json=ok)
    assert r.status_code == 200 and r.json()["output"][0]["content"][0]["text"] in ("ok", "ok too")
    r = client.post("/v1/responses", json={**ok, "stream": True})
    check_response(r.status_code, r.text, r.headers["content-type"])
    deltas = [json.loads(ln[6:]) for ln in r.text.split("\n") if ln.startswith("data: ")]
    assert "".join(e.get("delta", "") for e in deltas if e["type"] == "response.output_text.delta") in ("ok",
                                                                                                       "ok too")
