"""The critique's program check: run the critic's program and compare what it prints with the draft's answer.

A small critic reading a draft approves its mistakes; a program that recomputes the answer independently
is evidence. Two numbers that agree approve the draft, two that disagree ask for a revision; anything
else (no program, NONE, a failure, no number printed) is inconclusive and the critic reviews in words.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from moai.bench.graders import extract_code, extract_number, numbers_equal
from moai.sandbox import run_python

TIME_LIMIT_S = 5.0


@dataclass
class CheckResult:
    verdict: str  # agrees | disagrees | inconclusive
    code: str
    printed: float | None
    drafted: float | None
    detail: str

    @property
    def note(self) -> str:
        if self.verdict == "agrees":
            return f"program check agrees with the draft ({_fmt(self.printed)})"
        if self.verdict == "disagrees":
            return f"program check prints {_fmt(self.printed)}, the draft gives {_fmt(self.drafted)}: revised"
        return f"program check inconclusive ({self.detail}): reviewed in words"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def has_number(text: str) -> bool:
    return extract_number(text) is not None


async def check(draft: str, program_reply: str, timeout_s: float = TIME_LIMIT_S) -> CheckResult:
    """Run the program (in a worker thread: the event loop keeps serving) and compare numbers."""
    drafted = extract_number(draft)
    code = extract_code(program_reply)
    if drafted is None:
        return CheckResult("inconclusive", code, None, None, "the draft gives no number")
    if not code.strip() or code.strip().upper().startswith("NONE"):
        return CheckResult("inconclusive", code, None, drafted, "not a calculation")
    ok, output = await asyncio.to_thread(run_python, code, timeout_s, True)
    if not ok:
        last = output.strip().splitlines()[-1:] or ["no output"]
        return CheckResult("inconclusive", code, None, drafted, f"the program failed: {last[0][:120]}")
    printed = extract_number(output)
    if printed is None:
        return CheckResult("inconclusive", code, None, drafted, "the program printed no number")
    verdict = "agrees" if numbers_equal(printed, drafted) else "disagrees"
    return CheckResult(verdict, code, printed, drafted, output.strip()[-120:])
