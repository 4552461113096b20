"""A request's ``moai`` options that cannot mean anything are a 400 naming the field, as a config refuses them: weights
that are all 0, a model name no model has, an empty ``models`` list."""

from __future__ import annotations

from typing import Any

import pytest
from test_role_prompts import Fixed

from moai.config import parse_config
from moai.mixture import Mixture
from moai.refusals import BadRequest, refusal
from moai.server.openai_schema import ChatCompletionRequest

EP = "endpoint: 'http://127.0.0.1:9/v1'"
CONFIG = (f"models:\n  a: {{provider: openai_compat, {EP}}}\n  b: {{provider: openai_compat, {EP}}}\n"
          "mixes:\n  m: {strategy: moa, proposers: {pick: 2}, aggregator: {pick: best}, weights: {quality: 1, "
          "cost: 0}}\n")


def prepare(moai: dict[str, Any]) -> Any:
    m = Mixture(parse_config(CONFIG), chooser=Fixed(["a", "b"]))
    return m.prepare(ChatCompletionRequest.model_validate(
        {"model": "moai/m", "messages": [{"role": "user", "content": "q"}], "moai": moai}))


@pytest.mark.parametrize("weights", [{"quality": 0}, {"quality": 0, "cost": 0, "latency": 0.0}])
def test_weights_that_are_all_zero_are_a_bad_request(weights: dict[str, float]) -> None:
    with pytest.raises(BadRequest) as e:
        prepare({"weights": weights})
    assert e.value.param == "moai.weights" and "every weight 0" in str(e.value)
    assert refusal(e.value)[0] == 400


def test_weights_with_one_positive_are_taken() -> None:
    assert prepare({"weights": {"quality": 0, "cost": 2}}).ctx.weights.cost == 2


@pytest.mark.parametrize("models", [["ZZZ"], ["a", "ZZZ", "YYY"]])
def test_an_unknown_model_in_moai_models_is_a_bad_request_naming_it(models: list[str]) -> None:
    with pytest.raises(BadRequest) as e:
        prepare({"models": models})
    assert e.value.param == "moai.models" and refusal(e.value)[0] == 400
    unknown = ", ".join(n for n in models if n not in ("a", "b"))
    assert str(e.value).startswith(f"unknown model(s) in moai.models: {unknown} ("), str(e.value)


def test_an_empty_moai_models_is_a_bad_request() -> None:
    with pytest.raises(BadRequest) as e:
        prepare({"models": []})
    assert e.value.param == "moai.models" and "empty" in str(e.value)


def test_known_models_narrow_as_before() -> None:
    prep = prepare({"models": ["a", "b"]})
    assert sorted(c.name for c in prep.ctx.candidates) == ["a", "b"]
