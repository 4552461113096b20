"""A proposer that answers with no text (a refusal, an empty message) gives MoA and fan-out
nothing to build on: it is left out as a failed proposer is, with a ``moai.reason`` line and an ``error`` on its
trace entry, and when no proposer wrote text nothing is aggregated or judged: the request fails as it does when
every proposer failed, rather than an aggregation of an empty list (or an empty pick) passing for an answer."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi import FastAPI, Request
from stub_openai import Script, StubServer
from test_role_prompts import Fixed

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.outcome import Execution, PlanFailed


def scripted(name: str, answers: list[str]) -> tuple[FastAPI, list[dict[str, Any]]]:
    """An upstream whose n-th call answers as ``answers[n]`` (the last repeats): "empty" (no text at all),
    "refuse" (a refusal, OpenAI's ``message.refusal``), or anything else as that text."""
    app, seen = FastAPI(), []

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        seen.append(await request.json())
        how = answers[min(len(seen), len(answers)) - 1]
        message: dict[str, Any] = {"role": "assistant", "content": f"{name}: {how}"}
        if how == "empty":
            message = {"role": "assistant", "content": ""}
        elif how == "refuse":
            message = {"role": "assistant", "content": None, "refusal": "I will not"}
        return {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": name,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}

    return app, seen


def card(name: str, url: str) -> str:
    return f"  {name}: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 0}}"


async def run(proposals: dict[str, list[str]], mix: str, stream: bool = False) -> tuple[
        Execution | PlanFailed, dict[str, Any] | None, dict[str, list[dict[str, Any]]], Script]:
    """Runs ``mix`` over proposers answering as ``proposals`` says, an aggregator "agg" and a judge "jdg" that
    picks answer 1; returns the outcome, its ``moai`` summary (None when it failed), what each proposer was sent,
    and the aggregator's script."""
    agg, jdg = Script(reply="synthesis"), Script(reply="1")
    seen: dict[str, list[dict[str, Any]]] = {}
    with ExitStack() as stack:
        lines = ["models:"]
        for name, answers in proposals.items():
            app, seen[name] = scripted(name, answers)
            lines.append(card(name, stack.enter_context(StubServer(app=app)).url))
        lines.append(card("agg", stack.enter_context(StubServer(agg)).url))
        lines.append(card("jdg", stack.enter_context(StubServer(jdg)).url))
        config = parse_config("\n".join(lines) + f"\nmixes:\n  m: {mix}\n")
        m = Mixture(config, chooser=Fixed([*proposals, "agg", "jdg"]))
        body = ChatCompletionRequest.model_validate({"model": "moai/m", "stream": stream,
                                                     "messages": [{"role": "user", "content": "q"}]})
        prep = m.prepare(body)
        try:
            items = [i async for i in m.stream(prep, live=stream)]
            ex = items[-1]
            assert isinstance(ex, Execution)
            return ex, m.summary(prep, ex), seen, agg
        except PlanFailed as e:
            return e, None, seen, agg
        finally:
            await m.aclose()


MOA = "{strategy: moa, layers: 1, proposers: [p, q, r], aggregator: agg, fallbacks: []}"
FANOUT = "{strategy: fanout, proposers: [p, q, r], aggregator: agg, fallbacks: []}"
JUDGED = "{strategy: fanout, proposers: [p, q, r], judge: jdg, fallbacks: []}"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mix", [MOA, FANOUT, JUDGED])
async def test_no_proposer_with_text_fails_the_request_without_aggregating(mix: str, stream: bool) -> None:
    out, _, seen, agg = await run({"p": ["refuse"], "q": ["empty"], "r": ["empty"]}, mix, stream)
    assert all(len(s) == 1 for s in seen.values())  # every proposer answered, none with text
    assert isinstance(out, PlanFailed), type(out).__name__  # not a synthesis of nothing, nor an empty pick
    assert out.status == 502
    assert agg.calls == 0
    assert "no proposer answered with text" in str(out)
    assert "p1.1 (p): a refusal" in str(out) and "p1.3 (r): an empty answer" in str(out)


@pytest.mark.parametrize("mix", [MOA, FANOUT])
async def test_a_proposer_without_text_is_left_out_and_said_so(mix: str) -> None:
    out, summary, _, agg = await run({"p": ["refuse"], "q": ["an answer"], "r": ["empty"]}, mix)
    assert isinstance(out, Execution) and out.answer.text == "synthesis"
    assert summary is not None
    prompt = json.dumps(agg.seen[0]["messages"])
    assert "q: an answer" in prompt
    trace = {t["step"]: t for t in summary["trace"]}
    assert trace["p1.1"]["status"] == "ok" and "no text (a refusal)" in trace["p1.1"]["error"]
    assert trace["p1.3"]["status"] == "ok" and "no text (an empty answer)" in trace["p1.3"]["error"]
    assert "error" not in trace["p1.2"]
    reasons = summary["reason"]
    assert any(r.startswith("moa: p1.1 (p) answered with no text (a refusal)") or
               r.startswith("fanout: p1.1 (p) answered with no text (a refusal)") for r in reasons), reasons
    assert any("p1.3 (r) answered with no text (an empty answer)" in r for r in reasons), reasons


async def test_a_judged_fanout_passes_on_the_one_answer_with_text_and_says_why() -> None:
    out, summary, _, _ = await run({"p": ["refuse"], "q": ["an answer"], "r": ["empty"]}, JUDGED)
    assert isinstance(out, Execution) and out.answer.text == "q: an answer"
    assert summary is not None
    assert any("p1.1 (p) answered with no text (a refusal)" in r for r in summary["reason"]), summary["reason"]
    trace = {t["step"]: t for t in summary["trace"]}
    assert "no text" in trace["p1.3"]["error"]


async def test_a_layer_without_text_leaves_the_next_layer_nothing_to_read() -> None:
    mix = "{strategy: moa, layers: 2, proposers: [p, q], aggregator: agg, fallbacks: []}"
    out, _, seen, agg = await run({"p": ["refuse"], "q": ["empty"]}, mix)
    assert isinstance(out, PlanFailed) and out.status == 502
    assert [len(s) for s in seen.values()] == [1, 1]  # layer 2 made no call on an empty list of answers
    assert agg.calls == 0


async def test_a_later_layer_without_text_passes_the_aggregator_the_layer_before() -> None:
    mix = "{strategy: moa, layers: 2, proposers: [p, q], aggregator: agg, fallbacks: []}"
    out, summary, _, agg = await run({"p": ["first", "refuse"], "q": ["first", "empty"]}, mix)
    assert isinstance(out, Execution) and out.answer.text == "synthesis"
    assert summary is not None
    prompt = json.dumps(agg.seen[0]["messages"])
    assert "p: first" in prompt and "q: first" in prompt
    assert ("moa: every proposer of layer 2 failed or answered with no text; the aggregator read layer 1's answers"
            in summary["reason"]), summary["reason"]
