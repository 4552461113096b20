"""Collaboration plans keep answering when a model fails, comes back empty or is known dead, and waste no calls:
cascades escalate past failures and pass tool calls through, chains and critiques fall back and rescue, an open
circuit keeps a proposer out, and a gate-scored cascade skips the models it could never accept."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from typing import Any

import pytest
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.gate.decision import RouteDecision
from moai.mixture import Mixture
from moai.providers.base import Delta
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.outcome import Execution

WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                              "parameters": {"type": "object",
                                                             "properties": {"city": {"type": "string"}}}}}]


class Fixed:
    """Ranks models in a fixed order with given expected qualities (stands in for the gate)."""

    name = "fixed"

    def __init__(self, order: list[str], quality: dict[str, float] | None = None) -> None:
        self.order, self.q = order, quality or {}

    def decide(self, messages, cards, weights, live=None):  # type: ignore[no-untyped-def]
        names = [n for n in self.order if n in {c.name for c in cards}]
        return RouteDecision(model=names[0], ranking=names, probabilities={n: 1 / len(names) for n in names},
                             quality={n: self.q.get(n, 0.5) for n in names})


def setup(stack: ExitStack, scripts: dict[str, Script], mixes: str, tools: bool = False) -> str:
    lines = ["models:"]
    for name, script in scripts.items():
        url = stack.enter_context(StubServer(script)).url
        lines.append(f"  {name}: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 0, "
                     f"supports_tools: {str(tools).lower()}, price: {{input_per_mtok: 1, output_per_mtok: 1}}}}")
    return "\n".join(lines) + "\nmixes:\n" + mixes


async def ask(m: Mixture, stream: bool = False, tools: list[dict[str, Any]] | None = None,
              ) -> tuple[Execution, dict[str, Any], list[Delta]]:
    body: dict[str, Any] = {"model": "moai/m", "stream": stream, "messages": [{"role": "user", "content": "q"}]}
    if tools:
        body["tools"] = tools
    prep = m.prepare(ChatCompletionRequest.model_validate(body))
    items = [i async for i in m.stream(prep, live=stream)]
    ex = items[-1]
    assert isinstance(ex, Execution)
    return ex, m.summary(prep, ex), [i for i in items if isinstance(i, Delta)]


async def run(cfg: str, chooser: Fixed, stream: bool = False, tools: list[dict[str, Any]] | None = None,
              ) -> tuple[Execution, dict[str, Any], list[Delta]]:
    m = Mixture(parse_config(cfg), chooser=chooser)
    try:
        return await ask(m, stream, tools)
    finally:
        await m.aclose()


def text(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


def status(summary: dict[str, Any]) -> dict[str, str]:
    return {t["step"]: t["status"] for t in summary["trace"]}


# ---------------------------------------------------------------- 1. a failed try escalates


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("scorer", ["gate", "judge"])
async def test_cascade_escalates_past_a_failed_model(stream: bool, scorer: str) -> None:
    judge = ", scorer: judge, judge: j" if scorer == "judge" else ""
    mix = f"  m: {{strategy: cascade, cascade: [a, b, big], threshold: 0.6{judge}}}\n"
    with ExitStack() as st:
        scripts = {"a": Script(fail_times=99), "b": Script(reply="from b"), "big": Script(reply="from big"),
                   "j": Script(reply="9")}
        ex, summary, deltas = await run(setup(st, scripts, mix), Fixed(["big", "b", "a", "j"], {"a": 0.9, "b": 0.9}),
                                        stream)
    assert ex.answer.text == text(deltas) == "from b"
    assert scripts["a"].calls == 1 and scripts["b"].calls == 1 and scripts["big"].calls == 0
    assert status(summary)["try1"] == "failed"


@pytest.mark.parametrize("stream", [False, True])
async def test_cascade_reaches_its_last_model_when_every_earlier_one_fails(stream: bool) -> None:
    mix = "  m: {strategy: cascade, cascade: [a, b, big], threshold: 0.6}\n"
    with ExitStack() as st:
        scripts = {"a": Script(fail_times=99), "b": Script(fail_times=99, fail_status=503),
                   "big": Script(reply="from big")}
        ex, _, deltas = await run(setup(st, scripts, mix), Fixed(["big", "b", "a"], {"a": 0.9, "b": 0.9}), stream)
    assert ex.answer.text == text(deltas) == "from big" and ex.answer.model == "big"


# ---------------------------------------------------------------- 2. chain and critique steps fall back and rescue


@pytest.mark.parametrize("dead", ["a", "b", "c"])
async def test_a_failed_chain_step_falls_back_to_the_gates_next_model(dead: str) -> None:
    mix = ("  m: {strategy: chain, steps: [{model: a, instruction: Draft}, {model: b, instruction: Fix}, "
           "{model: c, instruction: Polish}]}\n")
    with ExitStack() as st:
        scripts = {n: Script(reply=f"from {n}") for n in ("a", "b", "c", "spare")}
        scripts[dead] = Script(fail_times=99)
        ex, summary, _ = await run(setup(st, scripts, mix), Fixed(["spare", "a", "b", "c"]))
    step = {"a": "step1", "b": "step2", "c": "step3"}[dead]
    (trace,) = [t for t in summary["trace"] if t["step"] == step]
    assert trace["status"] == "ok" and trace["model"] == "spare"
    assert [a["model"] for a in trace["attempts"]] == [dead, "spare"]
    assert ex.answer.text == ("from spare" if dead == "c" else "from c")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_failed_last_chain_step_returns_the_previous_answer(stream: bool) -> None:
    mix = ("  m: {strategy: chain, fallbacks: [], steps: [{model: a, instruction: Draft}, "
           "{model: b, instruction: Fix}, {model: c, instruction: Polish}]}\n")
    with ExitStack() as st:
        scripts = {"a": Script(reply="draft"), "b": Script(reply="fixed draft"), "c": Script(fail_times=99)}
        ex, summary, deltas = await run(setup(st, scripts, mix), Fixed(["a", "b", "c"]), stream)
    assert ex.answer.text == text(deltas) == "fixed draft" and ex.answer.model == "b"
    assert any("failed" in r and "step2" in r for r in summary["reason"])


@pytest.mark.parametrize(("failing", "note"), [
    ("b", "chain: step2 failed; step3 refined step1's answer"),
    ("a", "chain: step1 failed"),
])
async def test_a_chain_passes_over_a_link_whose_every_model_failed(failing: str, note: str) -> None:
    """A middle (or first) link that fails with no fallback left is passed over, not the whole chain (a 502)."""
    mix = ("  m: {strategy: chain, fallbacks: [], steps: [{model: a, instruction: Draft}, "
           "{model: b, instruction: Fix}, {model: c, instruction: Polish}]}\n")
    with ExitStack() as st:
        scripts = {"a": Script(reply="draft"), "b": Script(reply="fixed"), "c": Script(reply="polished")}
        scripts[failing] = Script(fail_times=99)
        ex, summary, _ = await run(setup(st, scripts, mix), Fixed(["a", "b", "c"]))
        refined = scripts["c"].seen[-1]["messages"][-2]  # the answer the last link refines, as its own turn
    assert ex.answer.text == "polished" and ex.answer.model == "c"
    assert refined == {"role": "assistant", "content": "draft" if failing == "b" else "fixed"}
    assert any(r.startswith(note) for r in summary["reason"]), summary["reason"]


async def test_a_failed_critique_writer_falls_back_to_the_gates_next_model() -> None:
    mix = "  m: {strategy: critique, writer: w, critic: c, rounds: 1}\n"
    with ExitStack() as st:
        scripts = {"w": Script(fail_times=99), "c": Script(reply="VERDICT: APPROVED"), "spare": Script(reply="ok")}
        ex, summary, _ = await run(setup(st, scripts, mix), Fixed(["spare", "w", "c"]))
    assert ex.answer.text == "ok" and ex.answer.model == "spare"
    assert status(summary)["draft"] == "ok"


# ---------------------------------------------------------------- 6. a tool call is an answer


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("scorer", ["gate", "judge"])
async def test_cascade_returns_a_cheaper_models_tool_call(stream: bool, scorer: str) -> None:
    judge = ", scorer: judge, judge: j" if scorer == "judge" else ""
    mix = f"  m: {{strategy: cascade, cascade: [a, big], threshold: 0.5{judge}}}\n"
    with ExitStack() as st:
        scripts = {"a": Script(tool_call=("get_weather", '{"city": "Paris"}')), "big": Script(reply="from big"),
                   "j": Script(reply="8")}
        ex, _, deltas = await run(setup(st, scripts, mix, tools=True), Fixed(["big", "a", "j"], {"a": 0.9}),
                                  stream, tools=WEATHER)
    assert scripts["big"].calls == 0
    assert ex.answer.finish_reason == "tool_calls" and ex.answer.model == "a"
    (call,) = ex.answer.tool_calls or []
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    (sent,) = [c for d in deltas for c in d.tool_calls or []]
    assert json.loads(sent["function"]["arguments"]) == {"city": "Paris"}
    if stream:
        assert sent["index"] == 0  # as OpenAI numbers streamed calls
    if scorer == "judge":  # the grader was shown the call
        assert "get_weather" in json.dumps(scripts["j"].seen[0]["messages"])


# ---------------------------------------------------------------- 7. no call for an answer that cannot be accepted


async def test_gate_cascade_skips_models_predicted_below_the_threshold() -> None:
    mix = "  m: {strategy: cascade, cascade: [cheap, mid, big], threshold: 0.6}\n"
    with ExitStack() as st:
        scripts = {"cheap": Script(reply="cheap"), "mid": Script(reply="mid"), "big": Script(reply="big")}
        ex, summary, _ = await run(setup(st, scripts, mix),
                                   Fixed(["big", "mid", "cheap"], {"cheap": 0.3, "mid": 0.7, "big": 0.9}))
    assert ex.answer.text == "mid"
    assert scripts["cheap"].calls == 0 and scripts["big"].calls == 0
    assert any("skipped cheap" in r and "0.30" in r for r in summary["reason"])


async def test_gate_cascade_never_skips_its_last_model() -> None:
    mix = "  m: {strategy: cascade, cascade: [cheap, big], threshold: 0.95}\n"
    with ExitStack() as st:
        scripts = {"cheap": Script(reply="cheap"), "big": Script(reply="big")}
        ex, _, _ = await run(setup(st, scripts, mix), Fixed(["big", "cheap"], {"cheap": 0.3, "big": 0.5}))
    assert ex.answer.text == "big" and scripts["cheap"].calls == 0 and scripts["big"].calls == 1


async def test_a_gate_cascade_whose_last_model_fails_falls_back_to_the_skipped_ones() -> None:
    """Skipping a model predicted too weak must not leave the cascade without an answer: if the last model fails,
    the skipped ones answer, strongest first (it was a 502 with neither of them called)."""
    mix = "  m: {strategy: cascade, cascade: [cheap, mid, big], threshold: 0.99}\n"
    with ExitStack() as st:
        scripts = {"cheap": Script(reply="cheap"), "mid": Script(reply="mid"),
                   "big": Script(fail_times=99, fail_status=500)}
        ex, _, _ = await run(setup(st, scripts, mix),
                             Fixed(["big", "mid", "cheap"], {"cheap": 0.3, "mid": 0.7, "big": 0.9}))
    assert ex.answer.text == "mid" and scripts["cheap"].calls == 0


# ---------------------------------------------------------------- 8. an open circuit keeps a proposer out


def open_circuit(m: Mixture, model: str) -> None:
    for _ in range(m.stats.failure_threshold):
        m.stats.observe(model, False, 0.1)
    assert m.stats.state(model) == "open"


@pytest.mark.parametrize(("strategy", "layers"), [("moa", 1), ("moa", 2), ("fanout", 1)])
async def test_a_proposer_with_an_open_circuit_is_left_out(strategy: str, layers: int) -> None:
    mix = f"  m: {{strategy: {strategy}, proposers: [a, b, c], aggregator: agg, layers: {layers}}}\n"
    with ExitStack() as st:
        scripts = {n: Script(reply=f"from {n}") for n in ("a", "b", "c", "agg")}
        m = Mixture(parse_config(setup(st, scripts, mix)), chooser=Fixed(["agg", "a", "b", "c"]))
        open_circuit(m, "b")
        try:
            ex, summary, _ = await ask(m)
            assert scripts["b"].calls == 0 and scripts["a"].calls == scripts["c"].calls == layers
            prompt = json.dumps(scripts["agg"].seen[0]["messages"])
            assert "from a" in prompt and "from c" in prompt and "from b" not in prompt
            assert ex.answer.text == "from agg"
            # said once, however many layers leave it out
            assert len([r for r in summary["reason"] if "left out b" in r]) == 1, summary["reason"]
            m.stats.models["b"].opened_at = time.time() - m.stats.cooldown_s  # cooled down: one probe goes through
            await ask(m)
            assert scripts["b"].calls == 1
        finally:
            await m.aclose()


async def test_a_step_with_no_healthy_alternative_still_tries_an_open_circuit() -> None:
    mix = "  m: {strategy: moa, proposers: [a, b], aggregator: agg, fallbacks: []}\n"
    with ExitStack() as st:
        scripts = {n: Script(reply=f"from {n}") for n in ("a", "b", "agg")}
        m = Mixture(parse_config(setup(st, scripts, mix)), chooser=Fixed(["agg", "a", "b"]))
        for name in ("a", "b", "agg"):
            open_circuit(m, name)
        try:
            ex, _, _ = await ask(m)
        finally:
            await m.aclose()
    assert scripts["a"].calls == scripts["b"].calls == scripts["agg"].calls == 1
    assert ex.answer.text == "from agg"


# ---------------------------------------------------------------- 10. an empty final answer is no answer


@pytest.mark.parametrize("stream", [False, True])
async def test_an_empty_aggregation_falls_back_to_the_best_proposer(stream: bool) -> None:
    mix = "  m: {strategy: moa, proposers: [a, b], aggregator: agg}\n"
    with ExitStack() as st:
        scripts = {"a": Script(reply="alpha"), "b": Script(reply="beta"), "agg": Script(reply="")}
        ex, summary, deltas = await run(setup(st, scripts, mix), Fixed(["b", "agg", "a"]), stream)
    assert ex.answer.text == text(deltas) == "beta"
    assert any("aggregator failed (empty answer)" in r for r in summary["reason"])
    assert sum(u["output"] for u in summary["usage_by_model"].values()) == ex.usage.completion_tokens


@pytest.mark.parametrize("stream", [False, True])
async def test_an_empty_last_revision_returns_the_latest_draft(stream: bool) -> None:
    mix = "  m: {strategy: critique, writer: w, critic: c, rounds: 2}\n"
    with ExitStack() as st:
        scripts = {"w": Script(replies=["draft v1", "", ""]), "c": Script(reply="VERDICT: REVISE the sum")}
        ex, summary, deltas = await run(setup(st, scripts, mix), Fixed(["w", "c"]), stream)
    assert ex.answer.text == text(deltas) == "draft v1"
    assert any("empty answer" in r for r in summary["reason"])


async def test_a_refining_link_sees_the_draft_as_its_own_turn_and_is_asked_for_the_answer_itself() -> None:
    """Asked to 'check the previous answer' in a user turn, small models answer with a review of it; the draft
    goes in as the assistant's turn and the instruction asks for the complete answer, nothing else."""
    from moai.strategies.chain import ANSWER_ITSELF

    mix = "  m: {strategy: chain, steps: [{model: a, instruction: Draft}, {model: b, instruction: Check it.}]}\n"
    with ExitStack() as st:
        scripts = {"a": Script(reply="def square(x): return x * x"), "b": Script(reply="def square(x): return x**2")}
        ex, _, _ = await run(setup(st, scripts, mix), Fixed(["a", "b"]))
        sent = scripts["b"].seen[-1]["messages"]
    assert ex.answer.text == "def square(x): return x**2"
    assert sent[-2] == {"role": "assistant", "content": "def square(x): return x * x"}
    assert sent[-1]["role"] == "user" and sent[-1]["content"] == f"Check it.\n\n{ANSWER_ITSELF}"
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
