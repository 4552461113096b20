"""Graders on known right and wrong answers, in the messy formats small models actually produce."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from moai.bench import graders as g
from moai.sandbox import run_python


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
        ("-$5", -5.0),
        ("The answer is: -$1,234.50.", -1234.5),
        ("The answer is \u22123", -3.0),  # Unicode minus
        ("\u22123", -3.0),
        ("It cost -\\$12 in the end.", -12.0),
        ("$10 - $5 = $5", 5.0),
        ("2 1/2", 2.5),
        ("The answer is 2 1/2 cups.", 2.5),
        ("-1 3/4", -1.75),
        ("\\boxed{2 1/2}", 2.5),
        ("3 5/4", 1.25),  # not a mixed number: the last number is 5/4
    ],
)
def test_extract_number_handles_common_formats(text: str, value: float) -> None:
    assert g.numbers_equal(g.extract_number(text), value)


def test_extract_number_refuses_a_hedge_between_two_numbers() -> None:
    assert g.extract_number("I think it's 70 or 72") is None
    assert g.extract_number("The answer is $70 or $72.") is None
    assert g.extract_number("#### 70 or 72") is None
    assert g.extract_number("72 or 72.0") == 72.0  # the same number twice is one answer
    assert g.extract_number("He has 3 or 4 friends, so the answer is 12") == 12.0
    assert g.grade_number("I think it's 70 or 72", "#### 72") == 0.0


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
        ("-$5", "#### -5", 1.0),
        ("The answer is: -$1,234.50.", "#### -1234.5", 1.0),
        ("\u22123", "#### -3", 1.0),
        ("$5", "#### -5", 0.0),
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
        ("b", "B"),
        ("(a)", "A"),
        ("a)", "A"),
        ("d: because", "D"),
        ("Answer B", "B"),
        ("A. Paris\nB. London\nThe correct answer is C", "C"),  # echoed options do not beat the answer
        ("B\nExplanation: A is wrong because", "B"),
        ("The answer is B, not A", "B"),
        ("the answer is a bit tricky: C", "C"),  # 'a' the article is no stated letter
        ("The answer is B and a good one", "B"),
    ],
)
def test_extract_letter(text: str, letter: str) -> None:
    assert g.extract_letter(text, 4) == letter


def test_extract_letter_refuses_to_guess() -> None:
    assert g.extract_letter("I am not sure about this one.", 4) is None
    assert g.extract_letter("E", 4) is None  # only A-D exist
    assert g.extract_letter("A or B, hard to say", 4) is None  # two bare letters: ambiguous
    assert g.extract_letter("Answer is B and C", 4) is None  # two answers are no answer
    assert g.extract_letter("The answer is (A) or (D).", 4) is None
    assert g.extract_letter("A. Paris\nB. London\nC. Berlin\nD. Madrid", 4) is None  # only the options, echoed


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
    ok, out = run_python("while True:\n    pass\n", timeout_s=1.0)
    assert not ok and "timed out" in out
    assert time.monotonic() - start < 5


def test_code_sandbox_runs_in_a_scratch_dir_without_the_environment(tmp_path: object) -> None:
    ok, out = run_python("import os\nprint(sorted(os.environ))\nprint(os.listdir('.'))\n")
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


def test_code_grading_runs_behind_the_guard(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("x")
    escape = tmp_path / "escaped.txt"
    for code in (f"open({str(escape)!r}, 'w').write('pwned')", f"import os\nos.remove({str(victim)!r})",
                 f"import subprocess\nsubprocess.run(['touch', {str(escape)!r}])",
                 "import socket\nsocket.create_connection(('127.0.0.1', 9))"):
        assert g.grade_mbpp(f"```python\n{code}\ndef add_one(x):\n    return x + 1\n```", MBPP_TESTS) == 0.0
        full = f"```python\n{code}\ndef total(xs):\n    return sum(xs)\n```"
        assert g.grade_humaneval(full, HE_PROMPT, HE_TEST) == 0.0
    assert victim.exists() and not escape.exists()


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit",
                                       "print(open(__file__).read())\nimport os\nos._exit(0)"])
def test_code_that_exits_before_its_tests_ran_does_not_pass(exit_call: str) -> None:
    answer = f"```python\ndef add_one(x):\n    return x\n{exit_call}\n```"
    assert g.grade_mbpp(answer, ["assert add_one(1) == 2"]) == 0.0
    body = f"```python\ndef total(xs):\n    return 0\n{exit_call}\n```"
    assert g.grade_humaneval(body, HE_PROMPT, HE_TEST) == 0.0


def test_code_that_prints_and_uses_main_still_passes() -> None:
    answer = ("```python\ndef add_one(x):\n    print('adding', x)\n    return x + 1\n\n"
              "if __name__ == '__main__':\n    print(add_one(3))\n```")
    assert g.grade_mbpp(answer, MBPP_TESTS) == 1.0
