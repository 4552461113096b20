"""Question files for `moai bench collect`: a line without a usable gold answer is refused with its file and line
(every model would otherwise score 0 against it), and no line crashes the parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_support import one_line_error
from typer.testing import CliRunner

from moai.bench import collect as col
from moai.bench.cli import app
from moai.bench.graders import parse_tests


def _file(tmp_path: Path, line: dict[str, Any]) -> Path:
    """A question file whose second line is ``line`` (the first is a good GSM8K question)."""
    path = tmp_path / "qs.jsonl"
    path.write_text(json.dumps({"question": "What is 2 + 3?", "answer": "#### 5"}) + "\n" + json.dumps(line) + "\n")
    return path


BAD = [
    ({"query": "write f", "ground_truth": None, "metric": "code_eval", "task_name": "mbpp"}, "without tests"),
    ({"query": "write f", "ground_truth": 3, "metric": "code_eval", "task_name": "mbpp"}, "without tests"),
    ({"query": "write f", "ground_truth": ["", " "], "metric": "code_eval", "task_name": "mbpp"}, "without tests"),
    ({"query": "f", "ground_truth": None, "metric": "code_eval", "task_name": "humaneval"}, "without tests"),
    ({"query": "x", "ground_truth": "A", "metric": "em_mc", "choices": "1+" * 50_000 + "1"}, "without choices"),
    ({"query": "x", "ground_truth": None, "metric": "em_mc", "choices": ["p", "q"]}, "without a gold answer"),
    ({"query": "x", "ground_truth": "E", "metric": "em_mc", "choices": ["p", "q"]}, "'E'"),
    ({"query": "x", "ground_truth": "A", "metric": "em_mc", "choices": list("abcdefghijk")}, "11 choices"),
    ({"question": "x", "answer": "A", "choices": list("abcdefghijk")}, "11 choices"),
    ({"question": "x", "answer": "#### "}, "without a gold answer"),
    ({"question": "x", "answer": "#### many"}, "'many' is not a number"),
    ({"query": "x", "metric": "MATH", "ground_truth": None}, "without a gold answer (ground_truth is null)"),
    ({"query": "x", "metric": "MATH", "ground_truth": "\\boxed{}"}, "without a gold answer"),
    ({"query": "x", "metric": "GSM8K", "ground_truth": [1, 2]}, "without a gold answer (ground_truth is an array)"),
    ({"query": "x", "metric": "GSM8K", "ground_truth": True}, "without a gold answer"),
    ({"query": "x", "metric": "GSM8K", "ground_truth": "#### "}, "without a gold answer"),
    ({"query": "x", "metric": "f1_score", "ground_truth": "  "}, "without a gold answer"),
    ({"query": "x", "metric": "f1_score", "ground_truth": {"a": 1}}, "without a gold answer"),
    ({"query": "x", "metric": "commongen_coverage", "ground_truth": None}, "without a gold answer"),
    ({"query": None, "metric": "f1_score", "ground_truth": "a"}, "'query'"),
]


@pytest.mark.parametrize("line,needle", BAD)
def test_a_line_without_a_usable_gold_answer_is_refused_with_file_and_line(line: dict[str, Any], needle: str,
                                                                           tmp_path: Path) -> None:
    path = _file(tmp_path, line)
    with pytest.raises(col.QuestionFormatError) as e:
        col.load_questions(path)
    assert str(e.value).startswith(f"{path}:2: ") and needle in str(e.value), str(e.value)


@pytest.mark.parametrize("line,needle", BAD[:2] + BAD[4:5] + BAD[12:14])
def test_bench_collect_refuses_such_a_file_in_one_line(line: dict[str, Any], needle: str, tmp_path: Path) -> None:
    path = _file(tmp_path, line)
    r = CliRunner().invoke(app, ["collect", "-q", str(path), "--out", str(tmp_path / "o.jsonl")])
    one_line_error(r, f"{path}:2:", needle)
    assert not (tmp_path / "o.jsonl").exists()


def test_usable_gold_answers_in_their_other_spellings_are_kept(tmp_path: Path) -> None:
    lines = [
        {"query": "x", "metric": "GSM8K", "ground_truth": 72},
        {"query": "x", "metric": "GSM8K", "ground_truth": "so\n#### 1,234"},
        {"query": "Pick", "metric": "em_mc", "ground_truth": "2",  # ARC numbers some options: 2 is the second, B
         "choices": "{'text': ['x', 'y', 'z'], 'label': ['1', '2', '3']}"},
        {"query": "Pick", "metric": "em_mc", "ground_truth": "c", "choices": ["x", "y", "z"]},
        {"query": "dog, run", "metric": "commongen_coverage", "ground_truth": ["dog", "run"]},
        {"query": "add one", "metric": "code_eval", "task_name": "mbpp",
         "ground_truth": ["assert f(1) == 2", "", "assert f(2) == 3"]},
    ]
    path = tmp_path / "ok.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    golds = [q.gold for q in col.load_questions(path)]
    assert golds == ["72", "1,234", "B", "C", "dog, run", ["assert f(1) == 2", "assert f(2) == 3"]]


def test_parse_tests_never_raises_and_drops_blank_tests() -> None:
    assert parse_tests(None) == []
    assert parse_tests("['assert f(1) == 2', '  ']") == ["assert f(1) == 2"]
    assert parse_tests("{[1]: 2}") == ["{[1]: 2}"]  # no literal: read as lines of code
    assert parse_tests("(" * 10_000 + ")" * 10_000) == ["(" * 10_000 + ")" * 10_000]
