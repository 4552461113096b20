"""Live tuning inside the server: a mix's target is held from the requests it actually serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import start_moai, stop
from stub_openai import Script, StubServer

from moai.config import ConfigError, load_config

HI = [{"role": "user", "content": "Prove it step by step: derive the equation, solve it, then implement the "
                                 "algorithm as a Python function."}]


def mix_yaml(url: str, live: str) -> str:
    return f"""
models:
  small: {{provider: openai_compat, endpoint: "{url}", model: stub, privacy: cloud, params_b: 1,
          price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
  big: {{provider: openai_compat, endpoint: "{url}", model: stub, privacy: cloud, params_b: 70,
        price: {{input_per_mtok: 2000, output_per_mtok: 2000}}}}
mixes:
  default:
    strategy: route
    max_tokens: 16
    weights: {{quality: 1, cost: 0}}
    live_tune: {live}
"""


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(Script(reply="Paris is the capital of France")) as s:
        yield s


def test_server_moves_the_cost_weight_until_spend_meets_the_target(stub: StubServer, tmp_path: Path) -> None:
    live = "{target: max_cost_usd_per_1k=1, min_samples: 4, max_step: 100}"
    server = start_moai(mix_yaml(stub.url, live), tmp_path)
    try:
        with httpx.Client(base_url=server.base, timeout=30) as c:
            models = []
            for _ in range(80):
                r = c.post("/v1/chat/completions", json={"model": "moai/default", "messages": HI})
                assert r.status_code == 200, r.text
                models.append(r.json()["moai"]["model"])
            stats = c.get("/moai/stats").json()["tuning"]["default"]
            metrics = c.get("/metrics").text
    finally:
        stop(server.proc)
    # with no cost weight the gate prefers the 70B model, at ~40 USD per 1000 requests here
    assert models[0] == "big"
    # the tuner moved weights.cost in logged, bounded steps, homed in on the switch point and settled on
    # the side that meets the target: the cheap model answers from then on
    assert models[-20:] == ["small"] * 20, models
    assert stats["knob"] == "weights.cost" and stats["target"] == "max_cost_usd_per_1k=1"
    changes = stats["changes"]
    assert changes[0]["new"] > changes[0]["old"] and "above target 1" in changes[0]["reason"]
    assert all(1 / 100.0001 <= c["new"] / c["old"] <= 100.0001 for c in changes)
    assert stats["value"] == changes[-1]["new"] and 1e-4 < stats["value"] < 1
    knob = {(s.labels["mix"], s.labels["knob"]): s.value for f in text_string_to_metric_families(metrics)
            for s in f.samples if s.name == "moai_mix_knob"}
    assert knob[("default", "weights.cost")] == pytest.approx(stats["value"])


def test_cost_share_target_is_priced_against_the_dearest_eligible_model(stub: StubServer, tmp_path: Path) -> None:
    from moai import Mixture
    from moai.api import shutdown

    path = tmp_path / "mix.yaml"
    path.write_text(mix_yaml(stub.url, "{target: cost_share=0.5, min_samples: 3, max_step: 100}"))
    m = Mixture.from_config(str(path))
    try:
        answered = [m.chat.completions.create(model="moai/default", messages=HI).moai["model"]  # type: ignore[attr-defined]
                    for _ in range(90)]
        tuner = m.tuners["default"]
    finally:
        shutdown(m)
    assert answered[0] == "big" and answered[-10:] == ["small"] * 10, (answered, tuner.changes)
    # the first change was judged at share 1.0 (every request went to the dearest model)
    assert tuner.changes[0].measured == pytest.approx(1.0)
    assert m.config.mixes["default"].weights.cost == tuner.value > 0


def test_requests_that_choose_their_own_models_or_weights_do_not_move_the_knob(stub: StubServer,
                                                                               tmp_path: Path) -> None:
    """Their model was not the knob's choice: ten requests pinned to the cheap model read as a cost share of 1."""
    from moai import Mixture
    from moai.api import shutdown

    path = tmp_path / "mix.yaml"
    path.write_text(mix_yaml(stub.url, "{target: cost_share=0.3, min_samples: 3, max_step: 4}"))
    m = Mixture.from_config(str(path))
    try:
        for extra in ({"models": ["small"]}, {"exclude": ["big"]}, {"weights": {"cost": 0}}):
            for _ in range(4):
                m.chat.completions.create(model="moai/default", messages=HI, extra_body={"moai": extra})
        tuner = m.tuners["default"]
        assert tuner.changes == [] and m.config.mixes["default"].weights.cost == 0
        for _ in range(3):  # the mix's own choice (the dearest model) counts
            m.chat.completions.create(model="moai/default", messages=HI)
        assert tuner.changes and tuner.changes[0].measured == pytest.approx(1.0)
    finally:
        shutdown(m)


@pytest.mark.parametrize(("live", "problem"), [
    ("{target: quality=0.9_of_best}", "graded answers"),
    ("{target: cost_share=2}", "must be in (0, 1]"),
    ("{target: p95_latency_s=nan}", "must be > 0"),
    ("{target: max_cost_usd_per_1k=1, knob: threshold}", "does not apply to strategy route"),
    ("{target: max_cost_usd_per_1k=1, max_step: 1}", "greater than 1"),
    ("{target: p95_latency_s=3, min_samples: 1000, window: 10}", "min_samples (1000) cannot exceed window (10)"),
])
def test_bad_live_tune_instructions_are_refused_at_load(tmp_path: Path, live: str, problem: str) -> None:
    path = tmp_path / "mix.yaml"
    path.write_text(mix_yaml("http://127.0.0.1:9/v1", live))
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert problem in str(e.value) and "mix.yaml:" in str(e.value)


def test_live_tuning_a_strategy_with_no_knob_says_so() -> None:
    """It read "knob None does not apply to strategy moa"."""
    from moai.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as e:
        parse_config("models:\n  a: {provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1'}\nmixes:\n"
                     "  d: {strategy: moa, proposers: [a], aggregator: a, live_tune: {target: p95_latency_s=5}}\n")
    assert "live tuning has no knob for strategy moa" in str(e.value) and "None" not in str(e.value)
