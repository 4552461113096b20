"""The shipped gate routes the embedded default; other mixes fall back to rules unless they name a gate."""

from __future__ import annotations

from pathlib import Path

from moai.config import load_config, parse_config
from moai.gate.runtime import DEFAULT_GATE_DIR, GateChooser, load_default_gate, load_gate_dir
from moai.mixture import Mixture


def test_embedded_default_is_routed_by_the_shipped_gate() -> None:
    assert (DEFAULT_GATE_DIR / "gate.json").exists() and (DEFAULT_GATE_DIR / "gate.pkl").stat().st_size < 5e6
    m = Mixture(load_config())
    assert isinstance(m.chooser, GateChooser)
    d = m.route([{"role": "user", "content": "Write a Python function that merges two sorted lists."}])
    assert d["decision"]["chooser"] == "gate"
    assert set(d["scores"]) == set(load_config().models)
    # a softmax over the models (each probability is reported to 4 decimals)
    assert abs(sum(d["scores"].values()) - 1) <= 0.5e-4 * len(d["scores"]) + 1e-9
    assert d["model"] == max(d["scores"], key=d["scores"].get)


def test_other_models_get_the_rule_chooser(tmp_path: Path) -> None:
    cfg = parse_config("models:\n  x: {provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1'}\n"
                       "mixes:\n  default: {strategy: route}\n")
    assert load_default_gate(cfg) is None
    missing = parse_config("models:\n  x: {provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1'}\n"
                           f"mixes:\n  default: {{strategy: route}}\nsettings: {{gate: '{tmp_path / 'none'}'}}\n")
    assert load_default_gate(missing) is None  # a named gate that does not exist: warn, fall back


def test_a_named_gate_is_used_for_any_models() -> None:
    cfg = parse_config("models:\n  x: {provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1', params_b: 7}\n"
                       "  y: {provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1', params_b: 70}\n"
                       f"mixes:\n  default: {{strategy: route}}\nsettings: {{gate: '{DEFAULT_GATE_DIR}'}}\n")
    chooser = load_default_gate(cfg)
    assert isinstance(chooser, GateChooser)
    d = chooser.decide([{"role": "user", "content": "hi"}], list(cfg.models.values()), cfg.mixes["default"].weights)
    assert d.model in {"x", "y"} and set(d.quality) == {"x", "y"}  # unknown models get a prior from their card


def test_the_gates_prior_ranks_models_by_their_measured_quality() -> None:
    """Query-independent strength (what sessions may escalate by): the mean quality on the records that scored
    both models; nothing for a model the gate knows only from its card."""
    chooser = load_gate_dir(DEFAULT_GATE_DIR)
    prior = chooser.prior_quality(["smollm2-135m", "qwen2.5-coder-1.5b"])
    assert 0 < prior["smollm2-135m"] < prior["qwen2.5-coder-1.5b"] < 1
    assert chooser.prior_quality(["smollm2-135m", "someone-elses-70b"]) == {}


def test_the_shipped_gate_sends_a_plain_sum_to_a_model_that_can_do_sums() -> None:
    """Word problems answered without scratch work taught the gate that no local model can count; the measured
    sums (data/local-zoo/arithmetic-records.jsonl: the 135M model gets almost none right) teach it otherwise."""
    m = Mixture(load_config())
    for q in ("What is 17 * 23?", "Calculate 384 / 16.", "How much is 58 plus 77?"):
        d = m.route([{"role": "user", "content": q}])
        assert d["model"] != "smollm2-135m", (q, d["reasons"])
        quality = d["decision"]["quality"]
        assert quality["smollm2-135m"] < min(quality["qwen2.5-coder-0.5b"], quality["qwen2.5-coder-1.5b"]), q
