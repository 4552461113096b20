"""What a collaboration plan reads and says: a cascade's grade off the 0–10 scale is no grade (it escalates),
and a critique round left out after an approval says so rather than "dependencies failed"."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from stub_openai import Script
from test_plan_fallbacks import Fixed, run, setup

# ---------------------------------------------------------------- a cascade's grade is on 0–10 or it is none


@pytest.mark.parametrize("grade", ["85", "11", "10.5"])
async def test_a_grade_off_the_scale_escalates_and_one_on_it_is_read(grade: str) -> None:
    """85 was read as 8.5 and accepted; the next grade, 10, is the top of the scale and accepts its answer."""
    mix = "  m: {strategy: cascade, cascade: [a, b, big], threshold: 0.7, scorer: judge, judge: j}\n"
    with ExitStack() as st:
        scripts = {"a": Script(reply="from a"), "b": Script(reply="from b"), "big": Script(reply="from big"),
                   "j": Script(replies=[grade, "10"])}
        ex, _, _ = await run(setup(st, scripts, mix), Fixed(["big", "b", "a", "j"]))
    assert ex.answer.text == "from b" and ex.answer.model == "b"
    assert scripts["j"].calls == 2 and scripts["big"].calls == 0


async def test_a_fallback_graders_echo_of_an_answer_number_is_no_grade() -> None:
    """A grader standing in for a failed one replied '[gamma] answer#163': read as 16.3, it accepted the answer."""
    mix = "  m: {strategy: cascade, cascade: [a, big], threshold: 0.7, scorer: judge, judge: j, fallbacks: [gamma]}\n"
    with ExitStack() as st:
        scripts = {"a": Script(reply="from a"), "big": Script(reply="from big"), "j": Script(fail_times=99),
                   "gamma": Script(reply="[gamma] answer#163")}
        ex, summary, _ = await run(setup(st, scripts, mix), Fixed(["gamma", "big", "a", "j"]))
    (grade,) = [t for t in summary["trace"] if t["step"] == "grade.try1"]
    assert grade["status"] == "ok" and grade["model"] == "gamma"  # the fallback graded it
    assert ex.answer.text == "from big" and scripts["big"].calls == 1


# ---------------------------------------------------------------- an approval is no failure


@pytest.mark.parametrize("rounds", [2, 3])
async def test_rounds_left_after_an_approval_say_the_draft_was_approved(rounds: int) -> None:
    mix = f"  m: {{strategy: critique, writer: w, critic: c, rounds: {rounds}}}\n"
    with ExitStack() as st:
        scripts = {"w": Script(reply="draft"), "c": Script(reply="VERDICT: APPROVED")}
        ex, summary, _ = await run(setup(st, scripts, mix), Fixed(["w", "c"]))
    assert ex.answer.text == "draft" and scripts["w"].calls == scripts["c"].calls == 1
    steps = {t["step"]: t for t in summary["trace"]}
    for n in range(2, rounds + 1):
        later = steps[f"critique{n}"]
        assert later["status"] == "skipped", later
        assert "approved the draft in round 1" in later["error"] and "failed" not in later["error"], later
