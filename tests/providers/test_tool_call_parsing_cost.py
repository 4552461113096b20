"""Tool-call parsing stays linear in the model's output, and a stream's call index is checked."""

from __future__ import annotations

import random
import re
import time

import pytest

from moai.providers.base import ProviderServerError
from moai.providers.tool_calls import _candidates, merge_tool_call_deltas, parse_tool_calls

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@pytest.mark.parametrize("text", [
    "<tool_call>" + " " * 2000 + "x",  # an opening tag, long blank run, never closed
    "```" + " " * 2000 + "x",  # an opening fence, long blank run, never closed
    "<tool_call>" * 5000,  # opening tags only
])
def test_parse_tool_calls_is_linear_on_unclosed_markup(text):
    assert _timed(parse_tool_calls, text, TOOLS) < 0.5
    assert parse_tool_calls(text, TOOLS) is None


# how the calls were read before: the results must not change
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _reference(text: str) -> list[str]:
    tagged = _TAGGED.findall(text)
    if tagged:
        return tagged
    body = text.strip()
    fenced = _FENCE.match(body)
    return [fenced.group(1) if fenced else body]


def test_candidates_match_the_reference_reading():
    rng = random.Random(11)
    tokens = ["<tool_call>", "</tool_call>", "```", "json", "jso", " ", "\n", "\t", "\u00a0", "\u2003", "\x1c",
              '{"name": "get_weather"}', "x", "`", "<", "/"]
    for _ in range(20000):
        text = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 12)))
        assert _candidates(text) == _reference(text), text
    fixed = ['<tool_call>\n{"name":"f"}\n</tool_call>', "<tool_call> a </tool_call><tool_call>b</tool_call>",
             "<tool_call> </tool_call>", '```json\n{"a":1}\n```', "```\n[1]\n```", "```json```", "``````",
             "```jso```", "`````", "```a````", "  ```json {} ```  \n"]
    for text in fixed:
        assert _candidates(text) == _reference(text), text


def test_parse_tool_calls_reads_tagged_and_fenced_calls():
    tagged = parse_tool_calls('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
                              TOOLS)
    fenced = parse_tool_calls('```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```', TOOLS)
    for calls in (tagged, fenced):
        assert calls is not None and len(calls) == 1
        assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}


def test_merging_many_small_pieces_one_at_a_time_is_linear():
    calls: list[dict] = []
    piece = {"index": 0, "function": {"arguments": "abcd"}}
    start = time.perf_counter()
    for _ in range(250_000):
        merge_tool_call_deltas(calls, [piece])
    assert time.perf_counter() - start < 1.0
    assert calls[0]["function"]["arguments"] == "abcd" * 250_000


def test_merging_many_small_pieces_in_one_batch_is_linear():
    calls: list[dict] = []
    deltas = [{"index": 0, "id": "call_1", "function": {"name": "get_weather"}}]
    deltas += [{"index": 0, "function": {"arguments": "a"}}] * 512_000
    assert _timed(merge_tool_call_deltas, calls, deltas) < 1.5
    assert calls == [{"index": 0, "id": "call_1", "type": "function",
                      "function": {"name": "get_weather", "arguments": "a" * 512_000}}]


def test_merging_keeps_calls_apart_by_index():
    calls: list[dict] = []
    merge_tool_call_deltas(calls, [{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x"'}},
                                   {"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}])
    merge_tool_call_deltas(calls, [{"index": 0, "function": {"arguments": ": 1}"}}])
    assert [(c["id"], c["function"]) for c in calls] == [
        ("a", {"name": "f", "arguments": '{"x": 1}'}), ("b", {"name": "g", "arguments": "{}"})]


@pytest.mark.parametrize("index", [200_000, 2, -1, "1", None, 1.0, True])
def test_a_bad_index_is_a_malformed_response(index):
    calls: list[dict] = []
    merge_tool_call_deltas(calls, [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}])
    with pytest.raises(ProviderServerError, match="malformed response"):
        merge_tool_call_deltas(calls, [{"index": 0, "function": {"arguments": "}"}},
                                       {"index": index, "function": {"arguments": "x"}}])
    # nothing was added for the bad piece; the good one before it is kept
    assert calls == [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]


@pytest.mark.parametrize("delta", [{"index": 0, "function": {"arguments": {"x": 1}}},
                                   {"index": 0, "function": "f"}, "piece"])
def test_a_piece_that_is_not_a_call_is_a_malformed_response(delta):
    with pytest.raises(ProviderServerError, match="malformed response"):
        merge_tool_call_deltas([], [delta])
