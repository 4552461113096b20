"""Parsing a model's reply stays linear in its length: hostile replies (long runs of digits, spaces, newlines,
backticks or filler words) are parsed quickly, and ordinary answers still parse as before."""

from __future__ import annotations

import time

import pytest

from moai.bench import graders
from moai.bench.graders import extract_code, extract_letter, extract_number, grade_math, parse_number
from moai.strategies.prompts import approved, judge_pick

# A few milliseconds each when linear; a quadratic parse takes about a second or more at these sizes.
BOUND_S = 0.25

HOSTILE = {
    "extract_number digits": lambda: extract_number("1" * 7000),
    "extract_number answer newlines": lambda: extract_number("answer:" + "\n" * 14000),
    "parse_number commas": lambda: parse_number("1" + "," * 14000 + "a1"),
    "judge_pick answer spaces": lambda: judge_pick("answer" + " " * 8000 + "x", 3),
    "extract_code backticks": lambda: extract_code("`" * 40000),
    "extract_letter answer spaces": lambda: extract_letter("answer:" + " " * 6000 + "x"),
    "grade_math answer newlines": lambda: grade_math("answer:" + "\n" * 8000, "3"),
    "normalise_math digits": lambda: graders._normalise_math("1" * 14000 + ".0x"),
    "approved filler words": lambda: approved("VERDICT: " + "the " * 32000),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_reply_is_parsed_quickly(name: str) -> None:
    start = time.perf_counter()
    HOSTILE[name]()
    assert time.perf_counter() - start < BOUND_S


def test_long_digit_runs_are_no_answer_rather_than_an_error() -> None:
    assert judge_pick("1" * 5000, 3) is None
    assert judge_pick("BEST: " + "2" * 5000, 3) is None
    assert judge_pick("BEST: 2. " + "1" * 5000, 3) == 2
    assert extract_number("1" * 5000 + " 1/2") is not None  # read as numbers, not a failed mixed number
    assert graders._mixed("1" * 5000 + " 1/2") is None


def test_ordinary_numbers_still_parse() -> None:
    assert extract_number("The answer is $1,234.00") == 1234.0
    assert extract_number("Answer: 72") == 72.0
    assert extract_number("final answer = : 7") == 7.0
    assert extract_number("The answer is: 9 apples") == 9.0
    assert extract_number("#### 42") == 42.0
    assert extract_number("so 70 or 72") is None
    assert parse_number("(3)/(4)") == 0.75
    assert parse_number("1,234.5/2") == 617.25
    assert parse_number("$1,234.00") == 1234.0
    assert parse_number("72.0 dollars") == 72.0
    assert parse_number("1 and 2") is None
    assert parse_number("2 1/2") == 2.5
    assert graders._normalise_math("12.000") == "12"
    assert graders._normalise_math("x=3.0") == "3"
    assert graders._normalise_math("1.05") == "1.05"
    assert grade_math("The final answer is: $\\frac{1}{2}$.", "\\boxed{\\frac{1}{2}}") == 1.0


def test_ordinary_letters_and_verdicts_still_parse() -> None:
    assert extract_letter("answer: (c)") == "C"
    assert extract_letter("The answer is B.") == "B"
    assert extract_letter("Answer is: option D") == "D"
    assert extract_letter("answer : : b.") == "B"
    assert judge_pick("candidate #3", 3) == 3
    assert judge_pick("option no. 1", 3) == 1
    assert judge_pick("Answer 2 is best", 3) == 2
    assert judge_pick("choice: 2", 3) == 2
    assert approved("Looks fine.\nVERDICT: the answer is APPROVED")
    assert not approved("VERDICT: the answer is not approved")
    assert not approved("VERDICT: the the the")


def test_fenced_code_is_still_extracted() -> None:
    assert extract_code("Here:\n```python\nprint(1)\n```\nDone.") == "print(1)"
    assert extract_code("```\na = 1\n```\ntext\n```py\nb = 2") == "a = 1\n\nb = 2"
    assert extract_code("```js\nx()\n```\n```python\ny()\n```") == "y()"
    assert extract_code("```js\nx()\n```") == "```js\nx()\n```"
    assert extract_code("no fence\n") == "no fence"
    assert extract_code("```python") == "```python"
