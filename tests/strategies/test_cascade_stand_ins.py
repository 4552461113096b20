"""A gate-scored cascade skips the models predicted below its threshold; should its last model fail, the skipped
ones stand in, the strongest (highest predicted quality) first. Its ``moai.reason`` tells what the run did: a
skipped model that answered after all is not said to be skipped, and what failed and who answered is said."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from stub_openai import Script
from test_plan_fallbacks import Fixed, run, setup

QUALITY = {"p1": 0.82, "p2": 0.57, "agg": 0.9}  # the cascade's order is not the order of strength
MIX = "  m: {strategy: cascade, cascade: [p1, p2, agg], threshold: 0.99, fallbacks: []}\n"


def skip_lines(reasons: list[str]) -> list[str]:
    return [r for r in reasons if r.startswith("cascade: skipped")]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_the_strongest_skipped_model_stands_in_for_a_failed_last_one(stream: bool) -> None:
    with ExitStack() as st:
        scripts = {"p1": Script(reply="from p1"), "p2": Script(reply="from p2"), "agg": Script(fail_times=99)}
        ex, summary, _ = await run(setup(st, scripts, MIX), Fixed(["agg", "p1", "p2"], QUALITY), stream)
    assert ex.answer.model == "p1" and ex.answer.text == "from p1"  # not p2, the weaker
    assert scripts["p2"].calls == 0 and scripts["agg"].calls == 1
    reasons = summary["reason"]
    assert skip_lines(reasons) == ["cascade: skipped p2 (predicted quality 0.57): below the threshold 0.99, its "
                                   "answer could not be accepted"], reasons
    assert ("cascade: the last model agg failed (agg: upstream error 500); p1 answered in its place, though "
            "predicted 0.82 (below the threshold): better than no answer") in reasons, reasons


async def test_every_stand_in_that_was_called_is_told_and_none_is_said_skipped() -> None:
    with ExitStack() as st:
        scripts = {"p1": Script(fail_times=99), "p2": Script(reply="from p2"), "agg": Script(fail_times=99)}
        ex, summary, _ = await run(setup(st, scripts, MIX), Fixed(["agg", "p1", "p2"], QUALITY))
    assert ex.answer.model == "p2"
    reasons = summary["reason"]
    assert skip_lines(reasons) == [], reasons
    assert ("cascade: the last model agg failed (agg: upstream error 500); p1 failed (p1: upstream error 500); "
            "p2 answered in its place, though predicted 0.57 (below the threshold): better than no answer"
            ) in reasons, reasons


async def test_the_skip_note_stands_when_the_last_model_answers() -> None:
    with ExitStack() as st:
        scripts = {"p1": Script(reply="from p1"), "p2": Script(reply="from p2"), "agg": Script(reply="from agg")}
        ex, summary, _ = await run(setup(st, scripts, MIX), Fixed(["agg", "p1", "p2"], QUALITY))
    assert ex.answer.model == "agg" and scripts["p1"].calls == scripts["p2"].calls == 0
    reasons = summary["reason"]
    assert skip_lines(reasons) == ["cascade: skipped p1 (predicted quality 0.82), p2 (predicted quality 0.57): "
                                   "below the threshold 0.99, their answers could not be accepted"], reasons
    assert not any("in its place" in r for r in reasons), reasons


async def test_a_failed_try_is_told_as_the_cascade_escalates() -> None:
    mix = "  m: {strategy: cascade, cascade: [p1, agg], threshold: 0.5, fallbacks: []}\n"
    with ExitStack() as st:
        scripts = {"p1": Script(fail_times=99), "agg": Script(reply="from agg")}
        ex, summary, _ = await run(setup(st, scripts, mix), Fixed(["agg", "p1"], QUALITY))
    assert ex.answer.model == "agg"
    assert ("cascade: p1 (try1) failed (p1: upstream error 500); the cascade escalated" in summary["reason"]
            ), summary["reason"]
    assert not any("in its place" in r for r in summary["reason"])


async def test_no_stand_in_answering_is_told_when_an_earlier_answer_is_returned() -> None:
    mix = "  m: {strategy: cascade, cascade: [p1, p2, agg], threshold: 0.6, fallbacks: []}\n"
    with ExitStack() as st:  # p1 (0.82) is tried, p2 (0.57) skipped
        scripts = {"p1": Script(reply="cut off", finish_reason="length"), "p2": Script(fail_times=99),
                   "agg": Script(fail_times=99)}
        ex, summary, _ = await run(setup(st, scripts, mix), Fixed(["agg", "p1", "p2"], QUALITY))
    assert ex.answer.step == "try1" and ex.answer.text == "cut off"  # the rescue: the one answer there is
    reasons = summary["reason"]
    assert skip_lines(reasons) == [] and scripts["p2"].calls == 1, reasons
    assert ("cascade: the last model agg failed (agg: upstream error 500); p2 failed (p2: upstream error 500); "
            "no model answered in its place") in reasons, reasons
