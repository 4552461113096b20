"""A mix's max_cost_usd / max_latency_s bound every strategy's plan, not only MoA's proposers."""

from __future__ import annotations

from contextlib import ExitStack

from stub_openai import Script
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
