"""A model that calls a function the client never offered has failed that try: the next model of the mix answers
(or, in a collaboration, the plan's rescue), streamed or not, and the failure counts against the model's health.
The client that sent no tools never gets a tool call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_support import AppServer, card, chat, chat_stream, stream_summary, stream_text
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.server.app import create_app
from moai.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

UNOFFERED = ("zzz", '{"x": 1}')


def serve(tmp: Path, scripts: dict[str, Script], mixes: str, stack: ExitStack) -> AppServer:
    """Stubs for ``scripts`` (cheapest first, in order) and moai over them."""
    models = ""
    for i, (name, script) in enumerate(scripts.items()):
        url = stack.enter_context(StubServer(script)).url
        models += f"  {name}: {card(url, price=float(i), supports_tools='true')}\n"
    config = parse_config(f"models:\n{models}mixes:\n{mixes}")
    return stack.enter_context(AppServer(create_app(config, TelemetryStore(f"sqlite:///{tmp / 'moai.db'}"))))


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


def answer(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


@pytest.mark.parametrize("tools", [None, [tool("other")]], ids=["no-tools", "other-tool"])
def test_the_next_model_answers_and_the_caller_counts_as_failing(tmp_path: Path, stack: ExitStack,
                                                                 tools: list[dict[str, Any]] | None) -> None:
    caller, backup = Script(tool_call=UNOFFERED), Script(reply="from backup")
    mixes = "  default: {models: [caller, backup], fallbacks: gate, weights: {quality: 0, cost: 1}}\n"
    server = serve(tmp_path, {"caller": caller, "backup": backup}, mixes, stack)
    extra = {"tools": tools} if tools else {}
    for _ in range(2):
        choice = answer(chat(server.url, **extra))
        assert choice["message"]["content"] == "from backup" and "tool_calls" not in choice["message"]
        assert choice["finish_reason"] == "stop"
    status, events = chat_stream(server.url, **extra)
    assert status == 200 and stream_text(events) == "from backup"
    assert not any(e["choices"][0]["delta"].get("tool_calls") for e in events if isinstance(e, dict)
                   and e.get("choices"))
    assert stream_summary(events)["model"] == "backup"
    assert caller.calls == 3
    # three failures in a row: its circuit is open, as for any other failure of the model
    assert httpx.get(server.base + "/healthz", timeout=10).json()["breakers"]["caller"] == "open"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_aggregator_calling_a_function_leaves_the_answer_to_the_rescue(tmp_path: Path, stack: ExitStack,
                                                                         stream: bool) -> None:
    scripts = {"p1": Script(reply="proposal one"), "p2": Script(reply="proposal two"),
               "agg": Script(tool_call=UNOFFERED)}
    mixes = "  default: {strategy: moa, layers: 1, proposers: [p1, p2], aggregator: agg, fallbacks: []}\n"
    server = serve(tmp_path, scripts, mixes, stack)
    if stream:
        status, events = chat_stream(server.url)
        assert status == 200 and stream_text(events) in ("proposal one", "proposal two")
        finishes = [e["choices"][0].get("finish_reason") for e in events if isinstance(e, dict) and e.get("choices")]
        assert "tool_calls" not in finishes and "stop" in finishes
        reasons = stream_summary(events)["reason"]
    else:
        r = chat(server.url)
        choice = answer(r)
        assert choice["message"]["content"] in ("proposal one", "proposal two")
        assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"
        reasons = r.json()["moai"]["reason"]
    assert any("aggregator failed" in why and "'zzz'" in why for why in reasons), reasons
