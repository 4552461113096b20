"""The policy against constraints and weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from moai.gate.policy import CardLike, Constraints, Weights, choose


@dataclass
class Price:
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0


@dataclass
class Card:
    name: str
    provider: str = "openai"
    privacy: str = "cloud"
    price: Price = field(default_factory=Price)
    params_b: float | None = None
    family: str | None = None
    context: int = 8192
    supports_tools: bool = False
    tokens_per_s: float | None = 50.0
    ttft_s: float | None = 0.3
    power_w: float | None = None


CARDS = {
    "big": Card("big", price=Price(10.0, 30.0), context=128000),
    "small": Card("small", price=Price(0.1, 0.2), context=4096),
    "local": Card("local", provider="local", privacy="local", context=2048, tokens_per_s=20.0, power_w=30.0),
}
Q = {"big": 0.9, "small": 0.7, "local": 0.5}


def test_card_satisfies_protocol() -> None:
    assert isinstance(CARDS["big"], CardLike)


def test_quality_only_picks_best_and_traces() -> None:
    d = choose(Q, CARDS, Weights())
    assert d.model == "big"
    assert set(d.probabilities) == set(Q) and abs(sum(d.probabilities.values()) - 1) < 1e-9
    assert max(d.probabilities, key=d.probabilities.get) == "big"
    assert d.reasons and "big" in d.reasons[0]


def test_cost_weight_shifts_choice_to_cheaper() -> None:
    assert choose(Q, CARDS, Weights.parse("quality=1,cost=5")).model != "big"


def test_privacy_tier_excludes_cloud() -> None:
    d = choose(Q, CARDS, Weights(), Constraints(max_privacy_tier="local"))
    assert d.model == "local"
    assert "privacy" in d.excluded["big"] and "privacy" in d.excluded["small"]


def test_max_cost_excludes_expensive() -> None:
    d = choose(Q, CARDS, Weights(), Constraints(max_cost_usd=0.001), prompt_tokens=1000)
    assert "big" in d.excluded and "max" in d.excluded["big"]
    assert d.model == "small"


def test_context_and_allowed_models() -> None:
    d = choose(Q, CARDS, Weights(), Constraints(min_context=10000))
    assert d.model == "big" and "context" in d.excluded["small"]
    d = choose(Q, CARDS, Weights(), prompt_tokens=3000)
    assert "local" in d.excluded
    d = choose(Q, CARDS, Weights(), Constraints(allowed_models=["small", "local"]))
    assert d.model == "small" and d.excluded["big"] == "not in allowed_models"


def test_nothing_allowed_gives_no_model() -> None:
    d = choose(Q, CARDS, Weights(), Constraints(allowed_models=["nope"]))
    assert d.model is None and len(d.excluded) == 3


def test_live_stats_hook_changes_choice() -> None:
    d = choose(Q, CARDS, Weights(), live_stats={"big": {"error_rate": 0.5}})
    assert d.model == "small"
    d = choose(Q, CARDS, Weights(latency=1.0), live_stats={"big": {"latency_s": 100.0}})
    assert d.model != "big"


def test_weights_parse_rejects_typos() -> None:
    with pytest.raises(ValueError, match="unknown weight"):
        Weights.parse("qualty=1")
    with pytest.raises(ValueError, match="not a number"):
        Weights.parse("cost=abc")


def test_rule_based_chooser_weighs_carbon() -> None:
    """Without a trained gate (a config of models it never saw) the carbon weight still moves the choice."""
    from moai.catalog import ModelCard, complete_card
    from moai.config import Weights as MixWeights
    from moai.gate.rules import RuleChooser

    big = complete_card("big", ModelCard(provider="openai_compat", endpoint="http://127.0.0.1:9/v1", params_b=400))
    small = complete_card("small", ModelCard(provider="openai_compat", endpoint="http://127.0.0.1:9/v1", params_b=8))
    hard = [{"role": "user", "content": "Prove step by step that there are infinitely many primes. " * 20}]
    assert RuleChooser().decide(hard, [big, small], MixWeights(quality=1.0)).model == "big"
    green = RuleChooser().decide(hard, [big, small], MixWeights(quality=1.0, carbon=1000.0))
    assert green.model == "small"
