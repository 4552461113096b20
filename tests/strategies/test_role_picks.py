"""A gate-picked role goes to the models whose card lists it (the cards' ``roles`` were accepted and ignored: an
aggregator-only model was picked as a proposer); models named in a role play it as named."""

from __future__ import annotations

from test_role_prompts import Fixed

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest

EP = "endpoint: 'http://127.0.0.1:9/v1'"


def load(models: str, mixes: str) -> object:
    return parse_config(f"models:\n{models}mixes:\n{mixes}")


def plan_of(models: str, mix: str, order: list[str]) -> dict[str, list[str]]:
    m = Mixture(load(models, f"  m: {mix}\n"), chooser=Fixed(order))  # type: ignore[arg-type]
    prep = m.prepare(ChatCompletionRequest.model_validate({"model": "moai/m",
                                                           "messages": [{"role": "user", "content": "q"}]}))
    return {s.id: s.models for s in prep.plan.steps}


def test_a_picked_role_goes_to_the_models_whose_cards_list_it() -> None:
    models = (f"  agg: {{provider: openai_compat, {EP}, roles: [aggregator]}}\n"
              f"  p1: {{provider: openai_compat, {EP}, roles: [proposer]}}\n"
              f"  p2: {{provider: openai_compat, {EP}, roles: [proposer]}}\n")
    steps = plan_of(models, "{strategy: moa, proposers: {pick: 2}, aggregator: {pick: best}}", ["agg", "p1", "p2"])
    proposers = sorted(models[0] for sid, models in steps.items() if sid != "aggregate")
    assert proposers == ["p1", "p2"] and steps["aggregate"][0] == "agg", steps


def test_models_named_in_a_role_play_it_whatever_their_cards_list() -> None:
    models = (f"  agg: {{provider: openai_compat, {EP}, roles: [aggregator]}}\n"
              f"  p1: {{provider: openai_compat, {EP}, roles: [proposer]}}\n")
    steps = plan_of(models, "{strategy: moa, proposers: [agg, p1], aggregator: p1}", ["agg", "p1"])
    assert sorted(m[0] for sid, m in steps.items() if sid != "aggregate") == ["agg", "p1"]
    assert steps["aggregate"][0] == "p1", steps


def test_when_no_card_lists_a_role_every_model_may_play_it() -> None:
    models = (f"  a: {{provider: openai_compat, {EP}, roles: [proposer]}}\n"
              f"  b: {{provider: openai_compat, {EP}, roles: [proposer]}}\n")
    steps = plan_of(models, "{strategy: moa, proposers: {pick: 2}, aggregator: {pick: best}}", ["b", "a"])
    assert steps["aggregate"][0] == "b", steps
