"""A mix's max_cost_usd / max_latency_s bound every strategy's plan, not only MoA's proposers."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from stub_openai import Script, StubServer
from test_strategies import Fixed, run, setup

# 10 $/M tokens in and out, 1000 tokens per answer: one answer ~$0.01; a step that reads k answers costs more
PRICES = {"a": 10.0, "b": 10.0, "c": 10.0}


async def plan_for(mixes: str, mix: str = "m"):  # type: ignore[no-untyped-def]
    with ExitStack() as st:
        scripts = {n: Script(reply=f"{n} says") for n in PRICES}
        ex, summary = await run(setup(st, scripts, mixes, PRICES), Fixed(["a", "b", "c"], difficulty=0.9), mix)
    return ex, summary, {n: s.calls for n, s in scripts.items()}


async def test_a_chain_over_the_cost_limit_is_answered_by_one_model() -> None:
    ex, summary, calls = await plan_for(
        "  m: {strategy: chain, max_tokens: 1000, constraints: {max_cost_usd: 0.015},\n"
        "      steps: [{model: a}, {model: b}, {model: c}]}\n")
    assert ex.plan.strategy == "chain/route" and sum(calls.values()) == 1
    assert any(r.startswith("budget: chain would break the mix's limits ($0.05") for r in summary["reason"])


async def test_a_chain_within_the_limit_runs_whole() -> None:
    ex, _, calls = await plan_for(
        "  m: {strategy: chain, max_tokens: 1000, constraints: {max_cost_usd: 1.0},\n"
        "      steps: [{model: a}, {model: b}, {model: c}]}\n")
    assert ex.plan.strategy == "chain" and calls == {"a": 1, "b": 1, "c": 1}


async def test_a_critique_over_the_limit_runs_fewer_rounds_first() -> None:
    ex, summary, _ = await plan_for(
        "  m: {strategy: critique, writer: a, critic: b, rounds: 3, max_tokens: 1000,\n"
        "      constraints: {max_cost_usd: 0.07}}\n")
    rounds = [s.id for s in ex.plan.steps if s.id.startswith("critique")]
    assert ex.plan.strategy == "critique" and rounds == ["critique1"]
    assert any(r.startswith("budget: critique cut to 1 round(s)") for r in summary["reason"])


async def test_a_latency_limit_counts_sequential_steps() -> None:
    """Three links one after another take three answers' time; one model fits where the chain does not."""
    ex, summary, calls = await plan_for(
        "  m: {strategy: chain, max_tokens: 1000, constraints: {max_latency_s: 30},\n"
        "      steps: [{model: a}, {model: b}, {model: c}]}\n")
    assert ex.plan.strategy == "chain/route" and sum(calls.values()) == 1
    assert any("s > 30s" in r for r in summary["reason"] if r.startswith("budget:"))


async def test_auto_does_not_collaborate_past_the_limit_whatever_the_strategy() -> None:
    mixes = ("  m: {strategy: auto, collaborate: deep, difficulty_threshold: 0.5, max_tokens: 1000,\n"
             "      constraints: {max_cost_usd: 0.015}}\n"
             "  deep: {strategy: critique, writer: a, critic: b, max_tokens: 1000}\n")
    ex, summary, calls = await plan_for(mixes)
    assert ex.plan.strategy == "auto/route" and sum(calls.values()) == 1
    assert any("deep would exceed the budget" in r for r in summary["reason"])


async def test_a_route_keeps_to_the_latency_limit() -> None:
    """One model answers 1000 tokens in ~10 s, the other in ~100 s: a 30 s limit leaves only the first; a limit
    none meets refuses the request (422), naming each model's expected latency."""
    from moai.config import parse_config
    from moai.mixture import Mixture
    from moai.server.openai_schema import ChatCompletionRequest
    from moai.strategies.context import NoEligibleModel

    with ExitStack() as st:
        urls = {n: st.enter_context(StubServer(Script(reply=n))).url for n in ("fast", "slow")}
        cfg = parse_config(
            "models:\n"
            f"  fast: {{provider: openai_compat, endpoint: '{urls['fast']}', tokens_per_s: 100, ttft_s: 0.2}}\n"
            f"  slow: {{provider: openai_compat, endpoint: '{urls['slow']}', tokens_per_s: 10, ttft_s: 0.2,"
            " params_b: 400}\n"
            "mixes:\n"
            "  m: {strategy: route, max_tokens: 1000, constraints: {max_latency_s: 30}}\n"
            "  none: {strategy: route, max_tokens: 1000, constraints: {max_latency_s: 5}}\n")
        m = Mixture(cfg, chooser=Fixed(["slow", "fast"]))
        body = {"messages": [{"role": "user", "content": "q"}]}
        prep = m.prepare(ChatCompletionRequest.model_validate({"model": "moai/m", **body}))
        assert [s.models for s in prep.plan.steps] == [["fast"]]
        assert "expected latency 100.2s for 1000 tokens > max 30s" in prep.ctx.excluded["slow"]
        with pytest.raises(NoEligibleModel) as e:
            m.prepare(ChatCompletionRequest.model_validate({"model": "moai/none", **body}))
        assert "no model satisfies the constraints" in str(e.value)
        await m.aclose()
