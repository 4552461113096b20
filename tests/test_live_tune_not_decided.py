"""Live tuning counts only the requests its knob decided: not a conversation's turns kept on its earlier model,
nor requests that a privacy limit held on trusted models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stub_openai import Script, StubServer

HI = [{"role": "user", "content": "Prove it step by step: derive the equation, solve it, then implement the "
                                 "algorithm as a Python function."}]
EASY = [{"role": "user", "content": "hi"}]
IBAN = [{"role": "user", "content": "My IBAN is DE44-5001-0517-5407-3249-31 and I was charged twice. Prove "
                                   "step by step that the refund equation holds, then implement it in Python."}]


def mix_yaml(url: str, small_privacy: str = "cloud", constraints: str = "{}") -> str:
    """``small`` is cheap, ``big`` 2000× dearer and preferred by a mix with no cost weight."""
    return f"""
models:
  small: {{provider: openai_compat, endpoint: "{url}", model: stub, privacy: {small_privacy}, params_b: 1,
          price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
  big: {{provider: openai_compat, endpoint: "{url}", model: stub, privacy: cloud, params_b: 70,
        price: {{input_per_mtok: 2000, output_per_mtok: 2000}}}}
mixes:
  default:
    strategy: route
    max_tokens: 16
    weights: {{quality: 1, cost: 0}}
    constraints: {constraints}
    live_tune: {{target: cost_share=0.3, min_samples: 3, max_step: 4}}
"""


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer(Script(reply="Paris is the capital of France")) as s:
        yield s


@pytest.fixture
def mixture(tmp_path: Path) -> Iterator[Any]:
    """Builds a Mixture from a config text; shut down at the end of the test."""
    from moai import Mixture
    from moai.api import shutdown

    made: list[Any] = []

    def make(text: str) -> Any:
        path = tmp_path / "mix.yaml"
        path.write_text(text)
        made.append(Mixture.from_config(str(path)))
        return made[-1]

    yield make
    for m in made:
        shutdown(m)


def ask(m: Any, messages: list[dict[str, Any]], **kw: Any) -> str:
    return m.chat.completions.create(model="moai/default", messages=messages, **kw).moai["model"]


def test_sticky_turns_on_the_gates_own_pick_move_the_knob(stub: StubServer, mixture: Any) -> None:
    """Sessions are on by default: a client that sends the same ``user`` every time has every turn after its first
    kept on its model. When that model is the gate's own pick for the turn, the knob chose it all the same: the
    turns count (were all left out, and the tuner never moved for such a client)."""
    m = mixture(mix_yaml(stub.url))
    tuner = m.tuners["default"]
    assert [ask(m, HI, user="alice") for _ in range(3)] == ["big"] * 3
    assert tuner.changes and tuner.changes[0].n == 3 and tuner.changes[0].measured == pytest.approx(1.0)


def test_sticky_turns_kept_against_the_gate_do_not_move_the_knob(stub: StubServer, mixture: Any) -> None:
    """Its first turn is the knob's choice; easy follow-ups the gate would send to ``small`` stay on ``big`` for the
    session's sake: those are not the knob's doing."""
    m = mixture(mix_yaml(stub.url))
    tuner = m.tuners["default"]
    assert m.route(EASY)["model"] == "small"  # the gate's pick for an easy turn, outside a conversation
    answered = [ask(m, HI, user="bob")] + [ask(m, EASY, user="bob") for _ in range(5)]
    assert answered == ["big"] * 6
    assert tuner.changes == [] and tuner.pending == 1 and m.config.mixes["default"].weights.cost == 0
    for _ in range(2):  # requests outside any conversation count: the third one judges, at a share of 1
        ask(m, HI)
    assert tuner.changes and tuner.changes[0].n == 3 and tuner.changes[0].measured == pytest.approx(1.0)


def test_requests_kept_on_trusted_models_by_their_sensitive_data_do_not_move_the_knob(stub: StubServer,
                                                                                    mixture: Any) -> None:
    """Held on the cheap private model, each reads as a cost share of 1 (priced against the dearest *eligible*
    model, itself): counted, three of them multiplied the mix's cost weight though it chose nothing."""
    m = mixture(mix_yaml(stub.url, small_privacy="private", constraints="{sensitive_data: private_ok}"))
    tuner = m.tuners["default"]
    assert [ask(m, IBAN) for _ in range(5)] == ["small"] * 5
    assert tuner.changes == [] and tuner.pending == 0 and m.config.mixes["default"].weights.cost == 0
    assert ask(m, HI) == "big" and tuner.pending == 1  # a request with nothing to hide is the knob's


def test_requests_that_ask_for_a_privacy_tier_do_not_move_the_knob(stub: StubServer, mixture: Any) -> None:
    m = mixture(mix_yaml(stub.url, small_privacy="private"))
    tuner = m.tuners["default"]
    for _ in range(4):
        assert ask(m, HI, extra_body={"moai": {"privacy": "private"}}) == "small"
    assert tuner.changes == [] and tuner.pending == 0


def test_a_privacy_limit_of_the_mix_itself_leaves_requests_counted(stub: StubServer, mixture: Any) -> None:
    """The mix's own ``max_privacy`` keeps ``big`` out of every request: what is left is the knob's to choose."""
    m = mixture(mix_yaml(stub.url, small_privacy="private",
                         constraints="{sensitive_data: private_ok, max_privacy: private}"))
    tuner = m.tuners["default"]
    ask(m, HI)
    ask(m, IBAN)  # its sensitive data allows what the mix allows anyway
    assert tuner.pending == 2


def test_why_a_request_is_left_out() -> None:
    from types import SimpleNamespace

    from moai.config import parse_config
    from moai.tuning.live import not_decided_by_knob

    config = parse_config(mix_yaml("http://127.0.0.1:9/v1", small_privacy="private"), "mix.yaml")
    base = {"steered": False, "session_pick": None, "excluded": {}, "config": config,
            "mix": config.mixes["default"]}
    assert not_decided_by_knob(SimpleNamespace(**base)) is None
    assert "own models" in str(not_decided_by_knob(SimpleNamespace(**{**base, "steered": True})))
    assert "kept on big" in str(not_decided_by_knob(SimpleNamespace(**{**base, "session_pick": "big"})))
    gate = SimpleNamespace(model="small")
    kept = not_decided_by_knob(SimpleNamespace(**{**base, "session_pick": "big", "decision": gate}))
    assert "kept on big, not the gate's small" in str(kept)
    same = SimpleNamespace(**{**base, "session_pick": "small", "decision": gate})  # the gate's own pick
    assert not_decided_by_knob(same) is None
    from moai.strategies.context import eligible

    _, out = eligible(config, config.mixes["default"], 10, max_privacy="private")  # the reason it writes
    assert set(out) == {"big"}
    assert "kept big out" in str(not_decided_by_knob(SimpleNamespace(**{**base, "excluded": out})))
    other = {"big": "prompt ~9000 tokens exceeds context 8192"}  # the mix's own limits are the knob's frame
    assert not_decided_by_knob(SimpleNamespace(**{**base, "excluded": other})) is None
