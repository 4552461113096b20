"""The instructions given to models playing a role (aggregator, critic, reviser, judge)."""

from __future__ import annotations

from typing import Any

AGGREGATE = (
    "You have been given several answers from different models to the user's latest query. Synthesize them "
    "into one high-quality answer. Evaluate them critically: some may be wrong or biased. Do not just copy one; "
    "give a refined, accurate and complete reply that is well structured and coherent.\n\nAnswers:"
)

# Asked to say APPROVED or list mistakes, small critics approve nearly every draft; made to redo the work
# first, they find errors before giving their verdict on the last line.
CRITIC = (
    "You check an answer to the user's request. First verify it yourself, step by step: redo every "
    "calculation and check every claim, briefly. Then end with one line: 'VERDICT: APPROVED' if the answer "
    "is correct and complete, or 'VERDICT: REVISE' followed by the concrete mistakes."
)

REVISE = (
    "Revise your previous answer to the user's request using the reviewer's comments. Reply with the "
    "improved answer only."
)

# The program check (critique with `check: python`): the critic recomputes the answer as code, without
# seeing the draft, so its mistakes are its own. Whether its programs beat its reasoning in words depends
# on the model and the questions (GSM8K test, Qwen2.5-Coder-1.5B: on q51-100 31 of 50 programs print the
# right number against 24 of 50 step-by-step answers; on q1-50 no better).
CHECK_PROGRAM = (
    "Do not answer in words. If the request asks for a number that a program can compute, write a short "
    "Python program that computes it step by step and prints only the final result, and reply with the code "
    "only, in one ```python block. Otherwise reply NONE."
)

# A small writer shown its draft beside the program copies the draft, so the rewrite is written from the
# request, the program and its values alone.
FROM_PROGRAM = (
    "A program written for this request computes {printed}:\n```python\n{code}\n```\nIts values:\n{values}\n"
    "Answer the request: write the solution as short numbered steps that follow the program's lines and use "
    "its values, and end with its result, {printed}, in the form the request asks for."
)

JUDGE = (
    "Several candidate answers to the user's request follow, numbered. Reply with the number of the best "
    "answer only (correctness first, then clarity)."
)

GRADE = (
    "Rate how well the answer below solves the user's request, from 0 (wrong or useless) to 10 (correct and "
    "complete). Reply with the number only."
)


def numbered(answers: list[str]) -> str:
    return "\n\n".join(f"{i}. {a.strip()}" for i, a in enumerate(answers, 1))


def aggregate_messages(messages: list[dict[str, Any]], answers: list[str]) -> list[dict[str, Any]]:
    """Wang et al.'s Aggregate-and-Synthesize: the answers go in a system message before the dialogue."""
    system = {"role": "system", "content": f"{AGGREGATE}\n\n{numbered(answers)}"}
    return [system, *[m for m in messages if m.get("role") != "system"]]


def user_query(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                return "".join(p.get("text", "") for p in c if isinstance(p, dict))
            return str(c or "")
    return ""


def review_messages(instruction: str, messages: list[dict[str, Any]], answer: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": instruction},
        {"role": "user", "content": f"Request:\n{user_query(messages)}\n\nAnswer:\n{answer}"},
    ]


def revise_messages(messages: list[dict[str, Any]], answer: str, critique: str) -> list[dict[str, Any]]:
    return [
        *messages,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"{REVISE}\n\nReviewer's comments:\n{critique}"},
    ]


def check_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{user_query(messages)}\n\n{CHECK_PROGRAM}"}]


def from_program_messages(messages: list[dict[str, Any]], code: str, printed: str,
                          values: str) -> list[dict[str, Any]]:
    """The conversation with its last request extended by the program, its values and what it printed."""
    shown = FROM_PROGRAM.format(code=code, printed=printed, values=values or "(none kept)")
    ask = f"{user_query(messages)}\n\n{shown}"
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages))
    return [*messages[:last], {"role": "user", "content": ask}]


def judge_messages(messages: list[dict[str, Any]], answers: list[str]) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": JUDGE},
        {"role": "user", "content": f"Request:\n{user_query(messages)}\n\nCandidates:\n{numbered(answers)}"},
    ]


def approved(critique: str) -> bool:
    """The critic's verdict: a 'VERDICT: ...' line (the last one counts), else a bare APPROVED / LGTM / OK."""
    verdicts = [ln.upper() for ln in critique.splitlines() if "VERDICT" in ln.upper()]
    if verdicts:
        return "APPROVED" in verdicts[-1].split("VERDICT", 1)[1]
    head = critique.strip().upper()
    return head.startswith("APPROVED") or head in {"LGTM", "OK", "CORRECT"}


def first_number(text: str) -> float | None:
    import re

    m = re.search(r"-?\d+(?:\.\d+)?", text)
    return float(m.group()) if m else None
