"""The arithmetic question set: exact gold answers, a fixed sample per seed, and a format `bench collect` reads."""

from __future__ import annotations

import importlib.util
import json
import operator
import re
from pathlib import Path
from types import ModuleType

from moai.bench.questions import parse_question

ROOT = Path(__file__).resolve().parents[2]
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
       "plus": operator.add, "minus": operator.sub, "times": operator.mul, "divided by": operator.truediv}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("arithmetic_questions", ROOT / "scripts" / "arithmetic_questions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_gold_answer_is_the_exact_result() -> None:
    qs = generator().questions(2000, seed=3)
    for q in qs:
        m = re.search(r"(\d+) (\+|-|\*|/|plus|minus|times|divided by) (\d+)", q["query"])
        assert m, q
        result = OPS[m.group(2)](int(m.group(1)), int(m.group(3)))
        assert result == int(result) and result >= 0, q  # whole, non-negative results only
        assert q["ground_truth"] == str(int(result)), q


def test_a_seed_fixes_the_sample() -> None:
    g = generator()
    assert g.questions(50, seed=0) == g.questions(50, seed=0)
    assert g.questions(50, seed=0) != g.questions(50, seed=1)


def test_the_shipped_set_is_the_seed_0_sample_and_reads_as_number_questions() -> None:
    lines = (ROOT / "data" / "local-zoo" / "arithmetic.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == generator().questions(200, seed=0)
    q = parse_question(json.loads(lines[0]), "arithmetic", 0, "arithmetic.jsonl:1")
    assert q.kind == "number" and q.benchmark == "arithmetic" and q.gold == json.loads(lines[0])["ground_truth"]
    assert "Give only the final answer as a number" in q.prompt
