"""Graders on known right and wrong answers, in the messy formats small models actually produce."""

from __future__ import annotations

import time

import pytest

from moai.bench import graders as g


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("The answer is $1,234.00", 1234.0),
        ("#### 72", 72.0),
        ("72.0", 72.0),
        ("-5", -5.0),
        ("It drops to -5 degrees.", -5.0),
        ("3/4", 0.75),
        ("\\boxed{\\frac{3}{4}}", 0.75),
        ("$\\boxed{1,000}$", 1000.0),
        ("So 12 + 6 = 18.\n#### 18", 18.0),
        ("Answer: 18 dollars", 18.0),
        ("She had 5 apples and bought 7 more, so 12.", 12.0),
        ("**42**", 42.0),
        ("50%", 50.0),
    ],
)
def test_extract_number_handles_common_formats(text: str, value: float) -> None:
    assert g.numbers_equal(g.extract_number(text), value)


def test_extract_number_trusts_the_marked_answer_over_later_numbers() -> None:
    assert g.extract_number("#### 72\nCheck: 70 + 2 = 72, and 3 more steps") == 72.0
    assert g.extract_number("The answer is 7. (I used 3 steps.)") == 7.0
    assert g.extract_number("no digits here") is None


@pytest.mark.parametrize(
    ("response", "gold", "score"),
    [
        ("The answer is $1,234.00", "#### 1,234", 1.0),
        ("72.0", "Natalia sold 48+24 = 72 clips.\n#### 72", 1.0),
        ("71", "#### 72", 0.0),
        ("-5", "#### -5", 1.0),
        ("5", "#### -5", 0.0),
        ("", "#### 3", 0.0),
    ],
)
def test_grade_number(response: str, gold: str, score: float) -> None:
    assert g.grade_number(response, gold) == score


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("**B**", "B"),
        ("I think (C)", "C"),
        ("Answer: D", "D"),
        ("The answer is B.", "B"),
        ("B) Paris", "B"),
        ("A", "A"),
        ("C. because of the tides", "C"),
        ("answer: (b)", "B"),
        ("I would say A is wrong; the answer is C", "C"),
        ("Option D", "D"),
    ],
)
def test_extract_letter(text: str, letter: str) -> None:
    assert g.extract_letter(text, 4) == letter


def test_extract_letter_refuses_to_guess() -> None:
    assert g.extract_letter("I am not sure about this one.", 4) is None
    assert g.extract_letter("E", 4) is None  # only A-D exist
    assert g.extract_letter("A or B, hard to say", 4) is None  # two bare letters: ambiguous


def test_extract_letter_falls_back_to_the_option_text() -> None:
    assert g.extract_letter("Cassiopeia", 4, ["Centaurus", "Cygnus", "Cassiopeia", "Cepheus"]) == "C"


def test_grade_letter() -> None:
    assert g.grade_letter("**B**", "B") == 1.0
    assert g.grade_letter("I think (C)", "B") == 0.0


@pytest.mark.parametrize(
    ("response", "gold", "score"),
    [
        ("so \\boxed{\\dfrac{1}{2}}", "the answer is $\\boxed{\\frac12}$.", 1.0),
        ("\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", 1.0),
        ("\\boxed{494550}", "... = \\boxed{494550}$.", 1.0),
        ("\\boxed{494,550}", "\\boxed{494550}", 1.0),
        ("\\boxed{28}", "28", 1.0),  # MGSM gives the bare number
        ("The final answer is 28.", "28", 1.0),
        ("\\boxed{x=3}", "\\boxed{3}", 1.0),
        ("\\boxed{\\text{(B)}}", "\\boxed{\\text{(B)}}", 1.0),
        ("\\boxed{27}", "28", 0.0),
        ("no idea", "\\boxed{5}", 0.0),
    ],
)
def test_grade_math(response: str, gold: str, score: float) -> None:
    assert g.grade_math(response, gold) == score


def test_f1_and_exact_match() -> None:
    assert g.f1_score("Sammy Davis Jr.", "Sammy Davis, Jr") == 1.0
    assert g.f1_score("Bayreuth", "bayreuth germany") == pytest.approx(2 / 3)
    assert g.f1_score("Munich", "bayreuth germany") == 0.0
    assert g.exact_match("The Beatles", "beatles") == 1.0
    assert g.short_answer("**Answer:** Bayreuth\nIt is in Bavaria.") == "Bayreuth"


def test_commongen_coverage_counts_inflections() -> None:
    cov = g.commongen_coverage("The customer drives a truck to the lakes.", "drive, lake, customer, skateboard")
    assert cov == pytest.approx(0.75)
    assert g.commongen_coverage("", "dog, cat") == 0.0


def test_extract_code_prefers_fenced_python() -> None:
    text = "Here you go:\n```python\ndef f(x):\n    return x + 1\n```\nThis adds one."
    assert g.extract_code(text) == "def f(x):\n    return x + 1"
    assert g.extract_code("def f(x): return x") == "def f(x): return x"
    assert "return 2" in g.extract_code("```python\ndef f():\n    return 2")  # unclosed fence (cut off)


MBPP_TESTS = "['assert add_one(1) == 2', 'assert add_one(-1) == 0']"


def test_code_sandbox_passes_a_correct_solution() -> None:
    assert g.grade_mbpp("```python\ndef add_one(x):\n    return x + 1\n```", MBPP_TESTS) == 1.0


def test_code_sandbox_fails_a_wrong_or_broken_solution() -> None:
    assert g.grade_mbpp("def add_one(x):\n    return x", MBPP_TESTS) == 0.0
    assert g.grade_mbpp("def add_one(x) return", MBPP_TESTS) == 0.0
    assert g.grade_mbpp("I cannot write code.", MBPP_TESTS) == 0.0


def test_code_sandbox_kills_an_infinite_loop() -> None:
    start = time.monotonic()
    ok, out = g.run_python("while True:\n    pass\n", timeout_s=1.0)
    assert not ok and "timed out" in out
    assert time.monotonic() - start < 5


def test_code_sandbox_runs_in_a_scratch_dir_without_the_environment(tmp_path: object) -> None:
    ok, out = g.run_python("import os\nprint(sorted(os.environ))\nprint(os.listdir('.'))\n")
    assert ok
    assert "OPENAI_API_KEY" not in out and "prog.py" in out


HE_PROMPT = 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum of xs."""\n'
HE_TEST = "\n\ndef check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n"


def test_humaneval_accepts_a_full_function_or_a_body() -> None:
    full = "```python\nfrom typing import List\n\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```"
    assert g.humaneval_entry_point(HE_PROMPT) == "total"
    assert g.grade_humaneval(full, HE_PROMPT, HE_TEST) == 1.0
    assert g.grade_humaneval("    return sum(xs)\n", HE_PROMPT, HE_TEST) == 1.0
    assert g.grade_humaneval("def total(xs):\n    return 0\n", HE_PROMPT, HE_TEST) == 0.0
