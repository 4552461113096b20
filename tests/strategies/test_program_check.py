"""The critique's program check: the critic's program runs sandboxed; only a disagreeing number revises."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from stub_openai import Script
from test_strategies import Fixed, run, setup

from moai.config import ConfigError, parse_config
from moai.sandbox import run_python
from moai.strategies import program_check

MIX = "  m: {strategy: critique, writer: w, critic: c, rounds: 1, check: python}\n"
PROGRAM = "```python\nprice = 2\nprint(price + 2)\n```"


async def test_a_disagreeing_program_has_the_answer_rewritten_from_it() -> None:
    with ExitStack() as st:
        writer = Script(replies=["2 + 2 = 5\n#### 5", "2 + 2 = 4\n#### 4"])
        critic = Script(reply=PROGRAM)
        ex, summary = await run(setup(st, {"w": writer, "c": critic}, MIX), Fixed(["w", "c"]))
    assert ex.answer.text.endswith("#### 4") and writer.calls == 2 and critic.calls == 1
    rewrite = writer.seen[1]["messages"]
    assert [m["role"] for m in rewrite] == ["user"]  # the request and the program, not the draft to copy
    assert rewrite[0]["content"].startswith("q\n\n") and "computes 4" in rewrite[0]["content"]
    assert "print(price + 2)" in rewrite[0]["content"] and "#### 5" not in rewrite[0]["content"]
    assert "Its values:\nprice = 2\n" in rewrite[0]["content"]  # the program's numbers, to quote step by step
    statuses = {r.step: r.status for r in ex.results}
    assert statuses == {"draft": "ok", "check": "ok", "critique1": "skipped", "revise1": "ok"}
    assert any("program check prints 4, the draft gives 5" in r for r in summary["reason"])
    # the critic writes its program from the request alone, never seeing the draft
    assert "#### 5" not in str(critic.seen[0]["messages"])


async def test_an_agreeing_program_approves_the_draft_without_a_revision() -> None:
    with ExitStack() as st:
        writer, critic = Script(reply="Two plus two is 4."), Script(reply=PROGRAM)
        ex, summary = await run(setup(st, {"w": writer, "c": critic}, MIX), Fixed(["w", "c"]))
    assert ex.answer.text == "Two plus two is 4." and writer.calls == 1 and critic.calls == 1
    assert ex.answer.status == "passthrough"
    assert any("agrees with the draft (4)" in r for r in summary["reason"])


async def test_a_draft_without_a_number_is_reviewed_in_words() -> None:
    with ExitStack() as st:
        writer = Script(replies=["Roses are red.", "Roses are crimson."])
        critic = Script(reply="The colour is off.\nVERDICT: REVISE say crimson")
        ex, _ = await run(setup(st, {"w": writer, "c": critic}, MIX), Fixed(["w", "c"]))
    assert [r.status for r in ex.results if r.step == "check"] == ["skipped"]
    assert critic.calls == 1 and "VERDICT" in critic.seen[0]["messages"][0]["content"]  # the review prompt
    assert ex.answer.text == "Roses are crimson." and "say crimson" in writer.seen[1]["messages"][-1]["content"]


async def test_no_program_falls_back_to_the_review() -> None:
    with ExitStack() as st:
        writer = Script(reply="Armstrong, in 1969.")
        critic = Script(replies=["NONE", "Checked.\nVERDICT: APPROVED"])
        ex, summary = await run(setup(st, {"w": writer, "c": critic}, MIX), Fixed(["w", "c"]))
    assert critic.calls == 2 and writer.calls == 1 and ex.answer.text == "Armstrong, in 1969."
    assert any("inconclusive (not a calculation)" in r for r in summary["reason"])


async def verdict_of(draft: str, reply: str) -> program_check.Verdict:
    return program_check.verdict(draft, await program_check.run_program(reply))


async def test_a_failing_or_silent_program_is_inconclusive() -> None:
    failed = await verdict_of("#### 7", "```python\nprint(1 / 0)\n```")
    assert failed.action == "review" and "ZeroDivisionError" in failed.note
    silent = await verdict_of("#### 7", "```python\nprint('seven')\n```")
    assert silent.action == "review" and "no number" in silent.note
    assert (await verdict_of("#### 7", "```python\nprint(3.5 * 2)\n```")).action == "approve"
    # a difference taken the other way round ("how much less") is the same answer
    assert (await verdict_of("It costs 40 less.", "```python\nprint(60 - 100)\n```")).action == "approve"
    assert (await verdict_of("#### 7", "```python\nprint(8)\n```")).action == "rewrite"


async def test_the_program_keeps_its_output_and_reports_its_values() -> None:
    run = await program_check.run_program("```python\na = 3\nb = a * 2.5\nname = 'x'\nprint(f'total: {b}')\n```")
    assert run.printed == 7.5 and run.values == {"a": 3.0, "b": 7.5}
    assert program_check.worked_values(run) == "a = 3\nb = 7.5"
    assert (await program_check.run_program("NONE")).detail == "not a calculation"
    many = "\n".join(f"quantity_number_{i} = {i}" for i in range(60)) + "\nprint(quantity_number_59 * 2)"
    run = await program_check.run_program(many)  # the values do not push the printed answer out of view
    assert run.printed == 118 and len(run.values) == 60


@pytest.mark.parametrize("program, blocked", [
    ("import socket\nsocket.create_connection(('127.0.0.1', 9))", "socket"),
    ("import subprocess\nsubprocess.run(['true'])", "import _posixsubprocess"),
    ("import os\nos.system('true')", "os.system"),
    ("open('/tmp/moai-sandbox-escape', 'w').write('x')", "writing outside"),
    ("import os\nos.remove('/tmp/anything')", "os.remove"),
    ("import ctypes", "import ctypes"),
    ("import _posixsubprocess", "import _posixsubprocess"),  # its fork_exec raises no audit event
])
def test_guarded_programs_cannot_reach_out(program: str, blocked: str) -> None:
    ok, out = run_python(program, timeout_s=10, guarded=True)
    assert not ok and "PermissionError" in out and blocked in out


def test_guarded_programs_still_compute_and_use_their_scratch_dir() -> None:
    prog = "import math, fractions\nopen('t.txt', 'w').write('3')\nprint(math.comb(5, 2) + int(open('t.txt').read()))"
    assert run_python(prog, timeout_s=10, guarded=True) == (True, "13\n")


@pytest.mark.parametrize("mix, message", [
    ("{strategy: critique, writer: w, critic: w, rounds: 2, check: python}", "rounds: 1"),
    ("{strategy: moa, proposers: [w], aggregator: w, check: python}", "critique"),
    ("{strategy: critique, writer: w, critic: w, check: code}", "check"),
])
def test_bad_check_config_fails_at_load(mix: str, message: str) -> None:
    text = f"models:\n  w: {{provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1'}}\nmixes:\n  m: {mix}\n"
    with pytest.raises(ConfigError, match=message):
        parse_config(text)
