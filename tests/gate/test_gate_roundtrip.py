"""Train -> save -> load -> quality/decide on a tiny synthetic set (uses the real local encoder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from moai.bench.datasets import load_records
from moai.gate.encoder import encoder_installed
from moai.gate.policy import Constraints, Weights
from moai.gate.store import Gate, GateLoadError, train_gate
from moai.gate.train import TrainConfig

HAVE_ENCODER = encoder_installed()

pytestmark = pytest.mark.skipif(not HAVE_ENCODER, reason="MiniLM ONNX model/tokenizer not installed")

CFG = TrainConfig(epochs=25, hidden=8, knn_k=8)


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
    ttft_s: float | None = 0.2
    power_w: float | None = None


@pytest.fixture(scope="module")
def trained(synth_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    gate = train_gate(load_records(synth_file), CFG)
    out = tmp_path_factory.mktemp("gate")
    gate.save(out)
    return out


def test_roundtrip_keeps_predictions(trained: Path, synth_file: Path) -> None:
    g = Gate.load(trained)
    assert set(g.models) == {"big", "small"}
    a = g.quality("solve 5 x + 3 = 11 for x", ["big", "small"])
    b = Gate.load(trained).quality("solve 5 x + 3 = 11 for x", ["big", "small"])
    assert a == pytest.approx(b)
    assert all(0.0 <= v <= 1.0 for v in a.values())


def test_gate_learns_where_strong_model_matters(trained: Path) -> None:
    g = Gate.load(trained)
    hard = g.score("compute the derivative of sin(9 x)", "big", "small")
    easy = g.score("say hello to the river", "big", "small")
    assert hard > easy


def test_decide_with_cards_weights_and_constraints(trained: Path) -> None:
    g = Gate.load(trained)
    cards = {"big": Card("big", price=Price(30.0, 60.0)), "small": Card("small", price=Price(0.1, 0.1))}
    msgs = [{"role": "user", "content": "factor the polynomial x^2 - 9"}]
    d = g.decide(msgs, cards, Weights())
    assert d.model == "big" and set(d.probabilities) == {"big", "small"} and d.reasons
    d = g.decide(msgs, cards, "quality=1,cost=100")
    assert d.model == "small"
    d = g.decide(msgs, cards, Weights(), Constraints(allowed_models=["small"]))
    assert d.model == "small" and "big" in d.excluded


def test_unknown_model_gets_prior_and_feedback_moves_it(trained: Path) -> None:
    g = Gate.load(trained)
    q0 = g.quality("integrate x^3 dx from 0 to 7", ["newbie-7b"])["newbie-7b"]
    assert 0.0 <= q0 <= 1.0 and "newbie-7b" in g.models
    for _ in range(20):
        g.feedback("integrate x^3 dx from 0 to 7", "newbie-7b", 0.0)  # it fails these, users say
    assert g.quality("integrate x^3 dx from 0 to 7", ["newbie-7b"])["newbie-7b"] < q0 - 0.2


def test_feedback_moves_a_known_model_in_every_head(trained: Path) -> None:
    g = Gate.load(trained)
    text = "solve 7 x + 3 = 11 for x"
    E = g.featurizer.embed([text], cached=False)
    X, S = g.featurizer.transform([text], E)
    before = g.head.parts(X, S, E)
    j = g.head.index(["small"])[0]
    assert j is not None and {"factor", "linear", "domain"} <= set(before)
    for _ in range(20):
        g.feedback(text, "small", 1.0)  # the small model keeps answering these well after all
    after = g.head.parts(X, S, E)
    for part in ("factor", "linear", "domain"):
        assert after[part][0, j] > before[part][0, j] + 0.01, part


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(GateLoadError, match="not a gate directory"):
        Gate.load(tmp_path)


def test_measured_latency_replaces_the_cards_guess(tmp_path: Path, synth_file: Path) -> None:
    """Records with latency_ms teach the gate each model's seconds per answer (prefill grows with the prompt)."""
    import json

    rows = [json.loads(line) for line in synth_file.read_text().splitlines()]
    for r in rows:
        n = len(r["prompt"]) // 4 + 1
        r["latency_ms"] = {"big": 2000.0 + 100.0 * n, "small": 300.0}
    path = tmp_path / "timed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    gate = train_gate(load_records(path), CFG)
    assert gate.cost.predict_latency("big", 10) == pytest.approx(3.0, rel=0.02)
    assert gate.cost.predict_latency("small", 10) == pytest.approx(0.3, rel=0.02)
    cards = [Card("big"), Card("small")]
    msgs = [{"role": "user", "content": "integrate x^5 dx from 0 to 7"}]  # 'big' is worth it on quality
    d = gate.decide(msgs, cards, Weights(quality=1.0))
    assert d.model == "big" and d.expected["big"]["latency_s"] == pytest.approx(2.0 + 0.1 * 8, rel=0.05)
    assert gate.decide(msgs, cards, Weights(quality=1.0, latency=1.0)).model == "small"  # ~3 s is worth 1 point
    # gates saved before latency was learned still load and fall back to the card
    del gate.cost.latency
    assert gate.cost.predict_latency("big", 10) is None
