"""``logit_bias``, ``reasoning_effort`` and ``parallel_tool_calls`` reach every step that writes an answer (proposers,
aggregator, chain links, revisions), as a route's one call gets them; critic and judge run with moai's options."""

from __future__ import annotations

from contextlib import ExitStack
from types import SimpleNamespace
from typing import Any

import pytest
from stub_openai import Script, StubServer
from test_role_prompts import Fixed

from moai.config import parse_config
from moai.mixture import Mixture
from moai.providers.base import ChatParams
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.prompts import CRITIC, JUDGE, aggregate_messages, judge_messages, review_messages
from moai.strategies.roles import with_messages

OPTIONS: dict[str, Any] = {"logit_bias": {"50256": -100}, "reasoning_effort": "low"}
QUESTION = [{"role": "user", "content": "q"}]


def test_answer_writing_calls_keep_the_options_and_review_calls_do_not() -> None:
    params = ChatParams(messages=QUESTION, parallel_tool_calls=False, **OPTIONS)
    ctx: Any = SimpleNamespace(params=params, mix=SimpleNamespace(max_tokens=64))
    built = with_messages(ctx, aggregate_messages(QUESTION, ["a", "b"]))
    assert built.logit_bias == {"50256": -100} and built.reasoning_effort == "low"
    assert built.parallel_tool_calls is False
    for review in (review_messages(CRITIC, QUESTION, "a"), judge_messages(QUESTION, ["a", "b"])):
        built = with_messages(ctx, review)
        assert built.logit_bias is None and built.reasoning_effort is None and built.parallel_tool_calls is None


def reviewed(body: dict[str, Any]) -> bool:
    """A critic's or judge's call: its instruction is moai's own."""
    text = str(body["messages"])
    return CRITIC[:40] in text or JUDGE[:40] in text


@pytest.mark.parametrize("mix", [
    "{strategy: moa, layers: 2, proposers: [a, b], aggregator: c}",
    "{strategy: fanout, proposers: [a, b], aggregator: c}",
    "{strategy: fanout, proposers: [a, b], judge: c}",
    "{strategy: chain, steps: [{model: a, instruction: Draft.}, {model: b, instruction: Improve.}]}",
    "{strategy: critique, writer: a, critic: b, rounds: 1}",
])
async def test_every_answer_writing_call_sends_the_users_options(mix: str) -> None:
    scripts = {"a": Script(reply="VERDICT: REVISE it is wrong"), "b": Script(reply="VERDICT: REVISE it is wrong"),
               "c": Script(reply="BEST: 1")}
    with ExitStack() as stack:
        lines = ["models:"]
        for name, script in scripts.items():
            url = stack.enter_context(StubServer(script)).url
            lines.append(f"  {name}: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 0}}")
        m = Mixture(parse_config("\n".join(lines) + f"\nmixes:\n  m: {mix}\n"), chooser=Fixed(list(scripts)))
        body = ChatCompletionRequest.model_validate({"model": "moai/m", "messages": QUESTION, **OPTIONS})
        try:
            await m.run(m.prepare(body))
        finally:
            await m.aclose()
    calls = [b for s in scripts.values() for b in s.seen]
    writers = [b for b in calls if not reviewed(b)]
    reviewers = [b for b in calls if reviewed(b)]
    assert len(writers) >= 2, calls
    for b in writers:
        assert b.get("logit_bias") == {"50256": -100} and b.get("reasoning_effort") == "low", b
    for b in reviewers:
        assert "logit_bias" not in b and "reasoning_effort" not in b, b
