"""The critique's program check: run the critic's program and weigh what it prints against the draft's answer.

A small critic reading a draft approves its mistakes; a program that recomputes the answer independently
is evidence. A program that agrees with the draft approves it; one that disagrees has the answer rewritten
from the program, taken as the better witness (right for critics whose programs beat their reasoning in
words: measure it with ``benchmarks/collab_gsm8k.py --config``). Anything else (no program, NONE, a
failure, no number printed) is inconclusive and the critic reviews the draft in words. The program runs
guarded in ``moai.sandbox`` (bubblewrap); where that cannot run, or every sandbox slot stays busy for a
program's time limit, the check is skipped, said so in the reasons, and the critic reviews in words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from moai import sandbox
from moai.bench.graders import extract_code, extract_number, numbers_equal

TIME_LIMIT_S = 5.0
_MARK = "\n__moai_values__"
# Appended to the program: the numbers it computed, so the rewrite can quote them step by step.
_VALUES = (
    "\nimport json as __j\n"
    f"print({_MARK!r} + __j.dumps({{__k: __v for __k, __v in list(globals().items()) if not __k.startswith('_') "
    "and type(__v) in (int, float)}))\n"
)


@dataclass
class ProgramRun:
    code: str
    printed: float | None  # the number the program printed, None when it failed or printed none
    detail: str = ""  # why there is no number
    values: dict[str, float] = field(default_factory=dict)  # the program's top-level numeric variables
    skipped: bool = False  # not run at all (no sandbox here, or it was busy): ``detail`` says why


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def has_number(text: str) -> bool:
    return extract_number(text) is not None


async def run_program(reply: str, timeout_s: float = TIME_LIMIT_S) -> ProgramRun:
    """Run the program in a reply (on the sandbox's own threads: the event loop and its executor keep serving)."""
    code = extract_code(reply)
    if not code.strip() or code.strip().upper().startswith("NONE"):
        return ProgramRun(code, None, "not a calculation")
    try:
        ok, output = await sandbox.run_python_async(code + _VALUES, timeout_s, guarded=True, tail_chars=20_000,
                                                    wait_s=timeout_s)
    except sandbox.SandboxUnavailable as e:
        return ProgramRun(code, None, str(e), skipped=True)
    shown, _, values = output.partition(_MARK)
    if not ok:
        last = shown.strip().splitlines()[-1:] or ["no output"]
        return ProgramRun(code, None, f"the program failed: {last[0][:120]}")
    printed = extract_number(shown)
    if printed is None:
        return ProgramRun(code, None, "the program printed no number")
    try:
        numbers = {k: float(v) for k, v in json.loads(values.strip() or "{}").items()}
    except (ValueError, AttributeError):
        numbers = {}  # the output tail was cut: the values are a nicety, the printed number is the check
    return ProgramRun(code, printed, values=numbers)


@dataclass
class Verdict:
    action: str  # approve | rewrite | review
    note: str
    program: ProgramRun | None = None  # the program to rewrite the answer from


def verdict(draft: str, run: ProgramRun) -> Verdict:
    """Agreement approves the draft, disagreement has it rewritten from the program, else review in words.

    Numbers equal up to sign agree: a program computing "how much less" often prints b - a.
    """
    drafted = extract_number(draft)
    if run.skipped:
        return Verdict("review", f"program check skipped ({run.detail}): reviewed in words")
    if run.printed is None or drafted is None:
        why = run.detail or "the draft gives no number"
        return Verdict("review", f"program check inconclusive ({why}): reviewed in words")
    if numbers_equal(abs(run.printed), abs(drafted)):
        return Verdict("approve", f"program check agrees with the draft ({_fmt(drafted)})")
    return Verdict("rewrite", f"program check prints {_fmt(run.printed)}, the draft gives {_fmt(drafted)}: "
                              "answer rewritten from the program", run)


def worked_values(program: ProgramRun) -> str:
    """The program's numbers as 'name = value' lines (empty when it kept none at top level)."""
    return "\n".join(f"{k} = {v:g}" for k, v in program.values.items())
