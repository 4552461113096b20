"""MT-Bench labels from judge scores: RouteLLM's 72 questions, both turns averaged, clear errors on bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moai.bench.metrics import pair_report
from moai.bench.mt_bench import JudgementError, load_judgements, load_questions, mt_bench_set

S, W = "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    qs = [{"question_id": q, "category": "math" if q % 2 else "writing", "turns": [f"first {q}", f"second {q}"]}
          for q in (81, 82, 83, 84)]
    judg = []
    for q in (81, 82, 83, 84):
        judg += [{"question_id": q, "model": S, "turn": 1, "score": 9}, {"question_id": q, "model": S, "turn": 2,
                                                                         "score": 7 if q == 83 else 9}]
        judg += [{"question_id": q, "model": "Mixtral-8x7B-Instruct-v0.1", "turn": t, "score": q - 78 + t}
                 for t in (1, 2)]
    return _write(tmp_path / "q.jsonl", qs), _write(tmp_path / "j.jsonl", judg)


def test_contaminated_questions_are_dropped_and_both_turns_averaged(files: tuple[Path, Path]) -> None:
    mt = mt_bench_set(load_questions(files[0]), load_judgements(files[1]), S, W)
    assert mt.question_ids == [82, 83, 84]  # 81 is one of RouteLLM's contaminated questions
    assert mt.first_turns == ["first 82", "first 83", "first 84"]
    assert mt.categories == ["writing", "math", "writing"]
    np.testing.assert_allclose(mt.y, [[9, 5.5], [8, 6.5], [9, 7.5]])
    everything = mt_bench_set(load_questions(files[0]), load_judgements(files[1]), S, W, decontaminate=False)
    assert everything.question_ids == [81, 82, 83, 84]


def test_a_router_that_sends_the_biggest_gaps_to_gpt4_recovers_the_gap(files: tuple[Path, Path]) -> None:
    mt = mt_bench_set(load_questions(files[0]), load_judgements(files[1]), S, W)
    gaps = mt.y[:, 0] - mt.y[:, 1]
    assert pair_report(gaps, mt.y[:, 0], mt.y[:, 1]).apgr > pair_report(-gaps, mt.y[:, 0], mt.y[:, 1]).apgr


def test_bad_files_say_what_is_wrong(tmp_path: Path, files: tuple[Path, Path]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 82, "model": "x", "score": 3}\nnot json\n')
    with pytest.raises(JudgementError, match=r"bad.jsonl:2: invalid JSON"):
        load_judgements(bad)
    _write(bad, [{"question_id": 82, "model": "x", "score": "ten"}])
    with pytest.raises(JudgementError, match="score must be a number"):
        load_judgements(bad)
    with pytest.raises(JudgementError, match="cannot read"):
        load_judgements(tmp_path / "missing.jsonl")
    only_gpt4 = _write(tmp_path / "g.jsonl", [{"question_id": q, "model": S, "score": 9} for q in (82, 83, 84)])
    with pytest.raises(JudgementError, match=r"no judgement .* question\(s\) \[82, 83, 84\]"):
        mt_bench_set(load_questions(files[0]), load_judgements(only_gpt4), S, W)
    _write(bad, [{"question_id": 82, "turns": []}])
    with pytest.raises(JudgementError, match="list of turns"):
        load_questions(bad)
