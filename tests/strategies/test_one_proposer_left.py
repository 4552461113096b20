"""A MoA (of any number of layers) or fan-out left with one proposer of the several its role asks for has that
proposer answer directly (an aggregator would only rewrite one answer, a judge would have nothing to choose
between), and says so; a mix written with one proposer keeps its aggregator."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import pytest
from stub_openai import Script, StubServer
from test_role_prompts import Fixed

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest

EP = "endpoint: 'http://127.0.0.1:9/v1'"


def mixture(mix: str, urls: dict[str, str] | None = None) -> Mixture:
    urls = urls or {}
    cards = "".join(f"  {n}: {{provider: openai_compat, endpoint: '{urls.get(n, 'http://127.0.0.1:9/v1')}', "
                    "privacy: private, max_retries: 0}\n" for n in ("a", "b", "c"))
    return Mixture(parse_config(f"models:\n{cards}mixes:\n  m: {mix}\n"), chooser=Fixed(["a", "b", "c"]))


def body(moai: dict[str, Any] | None = None) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "moai/m", "messages": [{"role": "user", "content": "q"}],
                                                 **({"moai": moai} if moai else {})})


@pytest.mark.parametrize("mix", [
    "{strategy: moa, proposers: {pick: 3}, aggregator: {pick: best}, fallbacks: []}",
    "{strategy: moa, proposers: [a, b, c], aggregator: c, fallbacks: []}",
    "{strategy: fanout, proposers: {pick: 3}, aggregator: {pick: best}, fallbacks: []}",
    "{strategy: fanout, proposers: {pick: 3}, judge: {pick: best}, fallbacks: []}",
    "{strategy: moa, layers: 2, proposers: {pick: 3}, aggregator: {pick: best}, fallbacks: []}",
])
def test_one_proposer_left_answers_directly(mix: str) -> None:
    prep = mixture(mix).prepare(body({"models": ["a"]}))
    assert [(s.id, s.models) for s in prep.plan.steps] == [("answer", ["a"])]
    assert prep.plan.strategy.endswith("/route") and prep.plan.final == "answer"
    assert any("only a is left to propose; it answers directly" in n for n in prep.ctx.notes), prep.ctx.notes


async def test_the_one_proposer_is_the_only_call() -> None:
    with ExitStack() as stack:
        scripts = {n: Script(reply=f"from {n}") for n in ("a", "b", "c")}
        urls = {n: stack.enter_context(StubServer(s)).url for n, s in scripts.items()}
        m = mixture("{strategy: moa, proposers: {pick: 3}, aggregator: {pick: best}, fallbacks: []}", urls)
        try:
            ex = await m.run(m.prepare(body({"models": ["a"]})))
        finally:
            await m.aclose()
    assert ex.answer.text == "from a" and [s.calls for s in scripts.values()] == [1, 0, 0]


@pytest.mark.parametrize("mix", [
    "{strategy: moa, proposers: [a], aggregator: b}",  # written with one proposer: the aggregator is wanted
    "{strategy: moa, layers: 2, proposers: [a], aggregator: b}",
])
def test_a_mix_written_for_one_proposer_keeps_its_aggregator(mix: str) -> None:
    prep = mixture(mix).prepare(body({"models": ["a", "b"]}))
    assert prep.plan.final == "aggregate" and prep.plan.strategy == "moa"
