"""How many models a ``pick:`` fills: ``pick: N`` the N best, ``pick: diverse`` as many as the role plays by default
(a MoA's or fan-out's three proposers, one model elsewhere) one per family first, and a pick that gets fewer
models than it asked for says so."""

from __future__ import annotations

from test_role_prompts import Fixed

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest

EP = "endpoint: 'http://127.0.0.1:9/v1'"
FAMILIES = {"a": "fa", "b": "fa", "c": "fb", "d": "fc", "e": "fd"}


def prepared(mix: str, models: dict[str, str] = FAMILIES) -> tuple[dict[str, list[str]], list[str]]:
    """Each step's models and the plan's notes for the mix ``m`` (the gate ranks ``models`` in order)."""
    cards = "".join(f"  {n}: {{provider: openai_compat, {EP}, family: {f}}}\n" for n, f in models.items())
    m = Mixture(parse_config(f"models:\n{cards}mixes:\n  m: {mix}\n"), chooser=Fixed(list(models)))
    prep = m.prepare(ChatCompletionRequest.model_validate({"model": "moai/m",
                                                           "messages": [{"role": "user", "content": "q"}]}))
    return {s.id: s.models for s in prep.plan.steps}, prep.ctx.notes


def proposers(steps: dict[str, list[str]]) -> list[str]:
    return [models[0] for sid, models in steps.items() if sid.startswith("p1.")]


def test_diverse_proposers_are_three_one_per_family_first() -> None:
    steps, _ = prepared("{strategy: fanout, proposers: {pick: diverse}, aggregator: {pick: best}, fallbacks: []}")
    assert proposers(steps) == ["a", "c", "d"], steps


def test_a_diverse_one_model_role_is_one_model() -> None:
    steps, _ = prepared("{strategy: moa, proposers: [a, b], aggregator: {pick: diverse}, fallbacks: []}")
    assert steps["aggregate"] == ["a"], steps


def test_a_pick_that_gets_fewer_models_than_it_asked_for_says_so() -> None:
    steps, notes = prepared("{strategy: moa, proposers: {pick: 4}, aggregator: {pick: best}}",
                            models={"a": "fa", "b": "fb"})
    assert proposers(steps) == ["a", "b"]
    assert "role: proposer asked for 4 models and got 2 (a, b): no other model is eligible" in notes, notes


def test_a_pick_that_gets_what_it_asked_for_says_nothing() -> None:
    _, notes = prepared("{strategy: moa, proposers: {pick: 2}, aggregator: {pick: best}}")
    assert not any("asked for" in n for n in notes), notes
