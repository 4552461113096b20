"""A MoA layer whose every proposer failed is passed over, not the end of the request: the next layer and the
aggregator read the newest layer that answered, and a failed aggregation falls back to that layer's best answer."""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from stub_openai import Script, StubServer
from test_role_prompts import Fixed

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.outcome import Execution


def failing_on(name: str, calls: set[int], seen: list[dict[str, Any]]) -> FastAPI:
    """An upstream that answers "<name> call <n>", except on the ``calls``-th calls, which fail with a 500."""
    app = FastAPI()

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        seen.append(await request.json())
        if len(seen) in calls:
            return JSONResponse({"error": {"message": "scripted failure", "type": "server_error"}}, status_code=500)
        return {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"{name} call {len(seen)}"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}

    return app


def card(name: str, url: str) -> str:
    return f"  {name}: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 0}}"


async def run(stack: ExitStack, layers: int, fail_calls: set[int], aggregator: Script) -> tuple[
        Execution, list[str], dict[str, list[dict[str, Any]]]]:
    """A MoA of ``layers`` layers over proposers p and q, each failing on its ``fail_calls``-th call (its layer)."""
    seen: dict[str, list[dict[str, Any]]] = {"p": [], "q": []}
    lines = ["models:"]
    for name in ("p", "q"):
        lines.append(card(name, stack.enter_context(StubServer(app=failing_on(name, fail_calls, seen[name]))).url))
    lines.append(card("agg", stack.enter_context(StubServer(aggregator)).url))
    mix = f"{{strategy: moa, layers: {layers}, proposers: [p, q], aggregator: agg, fallbacks: []}}"
    m = Mixture(parse_config("\n".join(lines) + f"\nmixes:\n  m: {mix}\n"), chooser=Fixed(["q", "p", "agg"]))
    body = ChatCompletionRequest.model_validate({"model": "moai/m", "messages": [{"role": "user", "content": "q"}]})
    prep = m.prepare(body)
    try:
        ex = await m.run(prep)
    finally:
        await m.aclose()
    return ex, m.summary(prep, ex)["reason"], seen


def system_prompt(body: dict[str, Any]) -> str:
    return str(body["messages"][0]["content"])


async def test_the_aggregator_reads_layer_one_when_every_layer_two_proposer_failed() -> None:
    with ExitStack() as stack:
        agg = Script(reply="synthesis")
        ex, reasons, _ = await run(stack, 2, {2}, agg)
    assert ex.answer.step == "aggregate" and ex.answer.text == "synthesis"
    assert agg.calls == 1
    shown = system_prompt(agg.seen[0])
    assert "p call 1" in shown and "q call 1" in shown
    assert "moa: every proposer of layer 2 failed; the aggregator read layer 1's answers" in reasons


async def test_a_failed_aggregator_is_rescued_by_the_newest_layer_that_answered() -> None:
    with ExitStack() as stack:
        ex, reasons, _ = await run(stack, 2, {2}, Script(fail_times=10**6))
    assert ex.answer.step == "p1.2" and ex.answer.text == "q call 1"  # the gate ranks q first
    assert any("answered with p1.2's answer" in r for r in reasons), reasons


async def test_a_later_layer_reads_the_newest_layer_that_answered() -> None:
    with ExitStack() as stack:
        agg = Script(reply="synthesis")
        ex, reasons, seen = await run(stack, 3, {2}, agg)
    assert ex.answer.text == "synthesis"
    for name in ("p", "q"):  # layer 3 ran, on layer 1's answers
        assert len(seen[name]) == 3
        assert "p call 1" in system_prompt(seen[name][2]) and "q call 1" in system_prompt(seen[name][2])
    shown = system_prompt(agg.seen[0])
    assert "p call 3" in shown and "q call 3" in shown and "call 1" not in shown
    assert "moa: every proposer of layer 2 failed; layer 3 read layer 1's answers" in reasons
