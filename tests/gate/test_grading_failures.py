"""Scores far below guessing on a multiple-choice domain are found, reported, and (unless told otherwise) not learnt."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moai.bench.datasets import RoutingRecord
from moai.gate.cli import app
from moai.gate.encoder import encoder_installed
from moai.gate.store import Gate, train_gate
from moai.gate.train import TrainConfig, grading_failures, option_count, target_matrix

MC = "Which is prime?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:"
needs_encoder = pytest.mark.skipif(not encoder_installed(), reason="MiniLM ONNX model/tokenizer not installed")


def test_option_count_reads_lettered_options() -> None:
    assert option_count(MC) == 4
    assert option_count("Pick one:\n(A) yes\n(B) no") == 2
    assert option_count("A. lone line with a letter") == 0  # one option is not a choice
    assert option_count("What is 17 * 23?") == 0


def _records(n: int, hits_a: int, hits_b: int, category: str = "maths", prompt: str = MC) -> list[RoutingRecord]:
    return [RoutingRecord(id=f"{category}/{i}", prompt=prompt, benchmark="mc", category=category,
                          scores={"a": float(i < hits_a), "b": float(i < hits_b)}) for i in range(n)]


def test_far_below_chance_is_found_for_that_model_and_domain_only() -> None:
    recs = _records(100, hits_a=3, hits_b=40) + _records(100, hits_a=80, hits_b=60, category="law")
    models, Y = target_matrix(recs)
    found = grading_failures(recs, models, Y)
    assert [(f.domain, f.model, f.n, f.mean, f.chance) for f, _ in found] == [("mc/maths", "a", 100, 0.03, 0.25)]
    np.testing.assert_array_equal(found[0][1], np.arange(100))  # the rows it covers: model a's maths scores


def test_low_but_plausible_scores_are_not_failures() -> None:
    # 18% on 4-choice questions: below chance, but not by three standard errors on 100 questions
    recs = _records(100, hits_a=18, hits_b=50)
    assert grading_failures(recs, *target_matrix(recs)) == []
    few = _records(20, hits_a=0, hits_b=10)  # too few questions to tell, however low
    assert grading_failures(few, *target_matrix(few)) == []
    open_q = _records(100, hits_a=0, hits_b=50, prompt="What is 17 * 23?")  # no options: no chance rate
    assert grading_failures(open_q, *target_matrix(open_q)) == []


def _mc_set() -> list[RoutingRecord]:
    def mc(q: str) -> str:
        return f"{q}\nA. one\nB. two\nC. three\nD. four\nAnswer:"

    recs = []
    for i in range(40):
        recs.append(RoutingRecord(id=f"m/{i}", prompt=mc(f"What is {i} plus {i + 3} times {i % 7}?"), benchmark="mc",
                                  category="maths", scores={"a": 0.0, "b": float(i % 2)}))
        recs.append(RoutingRecord(id=f"l/{i}", prompt=mc(f"Which court hears appeal number {i} on contract law?"),
                                  benchmark="mc", category="law", scores={"a": 1.0, "b": float(i % 2)}))
    return recs


@needs_encoder
def test_gate_reports_the_failure_and_ignores_it_unless_told_to_learn_it(tmp_path: Path) -> None:
    recs = _mc_set()
    cfg = TrainConfig(epochs=10, hidden=8, knn_k=8, failure_in_domain=False)
    ignored = train_gate(recs, cfg)
    learnt = train_gate(recs, replace(cfg, mask_below_chance=False))
    cell = {"domain": "mc/maths", "model": "a", "n": 40, "mean": 0.0, "chance": 0.25}
    assert learnt.meta["suspect_scores"] == [{**cell, "masked": False, "in_domain_offset": None}]
    assert ignored.meta["suspect_scores"] == [{**cell, "masked": True, "in_domain_offset": None}]
    ignored.save(tmp_path / "g")
    assert Gate.load(tmp_path / "g").meta["suspect_scores"][0]["masked"] is True
    query = ["What is 5 plus 8 times 5?\nA. one\nB. two\nC. three\nD. four\nAnswer:"]
    q_learnt, q_ignored = learnt.quality_matrix(query, ["a"])[0, 0], ignored.quality_matrix(query, ["a"])[0, 0]
    assert q_learnt < 0.35 < q_ignored  # learnt as labels, a maths question looks hopeless for model a


@needs_encoder
def test_a_masked_failure_stays_with_its_own_data_sets_questions() -> None:
    # the same kind of question asked openly, where model a is right every time
    recs = _mc_set() + [RoutingRecord(id=f"o/{i}", prompt=f"Work out {i} plus {i + 3} times {i % 7}, show each step.",
                                      benchmark="open", category="maths", scores={"a": 1.0, "b": float(i % 2)})
                        for i in range(40)]
    cfg = TrainConfig(epochs=10, hidden=8, knn_k=8)
    kept, plain = train_gate(recs, cfg), train_gate(recs, replace(cfg, failure_in_domain=False))
    assert kept.meta["suspect_scores"][0]["in_domain_offset"] < -0.3
    assert plain.meta["suspect_scores"][0]["in_domain_offset"] is None

    def q(gate: Gate, text: str) -> float:
        return float(gate.quality_matrix([text], ["a"])[0, 0])

    mc = "What is 5 plus 8 times 5?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
    open_ended = "Work out 5 plus 8 times 5, show each step."
    assert q(kept, mc) < 0.35 < q(plain, mc)  # the data set's own format: graded as it was
    assert q(kept, open_ended) > 0.6 and abs(q(kept, open_ended) - q(plain, open_ended)) < 0.1


@needs_encoder
def test_gate_train_warns_about_a_grading_failure(tmp_path: Path) -> None:
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps({"id": r.id, "prompt": r.prompt, "benchmark": r.benchmark,
                                        "category": r.category, "scores": r.scores}) + "\n" for r in _mc_set()))
    res = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "g"), "--epochs", "5"])
    assert res.exit_code == 0, res.output
    assert ("warning: a scores 0.000 on mc/maths (40 multiple-choice questions, chance 0.25): a grading failure? "
            "(kept for that domain's own questions only; --set mask_below_chance=false learns them)") in res.output
