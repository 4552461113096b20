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


async def test_a_disagreeing_program_makes_the_writer_revise() -> None:
    with ExitStack() as st:
        writer = Script(replies=["2 + 2 = 5\n#### 5", "2 + 2 = 4\n#### 4"])
        critic = Script(reply=PROGRAM)
        ex, summary = await run(setup(st, {"w": writer, "c": critic}, MIX), Fixed(["w", "c"]))
    assert ex.answer.text.endswith("#### 4") and writer.calls == 2 and critic.calls == 1
    comments = writer.seen[1]["messages"][-1]["content"]
    assert "prints 4" in comments and "gives 5" in comments and "print(price + 2)" in comments
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


async def test_a_failing_or_silent_program_is_inconclusive() -> None:
    failed = await program_check.check("#### 7", "```python\nprint(1 / 0)\n```")
    assert failed.verdict == "inconclusive" and "ZeroDivisionError" in failed.detail
    silent = await program_check.check("#### 7", "```python\nprint('seven')\n```")
    assert silent.verdict == "inconclusive" and "no number" in silent.detail
    assert (await program_check.check("#### 7", "```python\nprint(3.5 * 2)\n```")).verdict == "agrees"


@pytest.mark.parametrize("program, blocked", [
    ("import socket\nsocket.create_connection(('127.0.0.1', 9))", "socket"),
    ("import subprocess\nsubprocess.run(['true'])", "subprocess.Popen"),
    ("import os\nos.system('true')", "os.system"),
    ("open('/tmp/moai-sandbox-escape', 'w').write('x')", "writing outside"),
    ("import os\nos.remove('/tmp/anything')", "os.remove"),
    ("import ctypes", "import"),
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
