"""The instructions given to models playing a role (aggregator, critic, reviser, judge)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moai.strategies.plan import StepResult

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

# An explicit final 'BEST: n' is what ``judge_pick`` looks for first: a bare number is ambiguous once a
# judge explains ("answers 1 and 2 are wrong; 3 is best").
JUDGE = (
    "Several candidate answers to the user's request follow, numbered. Pick the best one (correctness "
    "first, then clarity and following the user's instructions). Reply with one line only: 'BEST: n', where "
    "n is the number of the best answer."
)

GRADE = (
    "Rate how well the answer below solves the user's request, from 0 (wrong or useless) to 10 (correct and "
    "complete). Reply with the number only."
)


# How much of the conversation a reviewer (critic, judge, grader) is shown besides the request itself: enough
# to check context-dependent answers and the user's instructions, little enough for small context windows.
CONTEXT_SYSTEM_CHARS = 2000
CONTEXT_TURN_CHARS = 600
CONTEXT_TURNS = 8

_SYSTEM_ROLES = ("system", "developer")  # developer is OpenAI's new name for the system role
_LABELS = {"user": "User", "assistant": "Assistant", "tool": "Tool result"}


class ReviewPrompt(list[dict[str, Any]]):
    """Messages for an internal reviewing role (critic, judge, grader, program check).

    Their output has moai's own format (a VERDICT line, a number, a program), so ``roles.with_messages``
    gives them moai's options rather than the user's stop, response_format, max_tokens and sampling.
    """


def text_of(content: Any) -> str:
    """A message's text, whether plain or a list of OpenAI content parts."""
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return str(content or "")


def numbered(answers: list[str]) -> str:
    return "\n\n".join(f"{i}. {a.strip()}" for i, a in enumerate(answers, 1))


def system_text(messages: list[dict[str, Any]]) -> str:
    """The user's system instructions (every system or developer message, in order)."""
    return "\n\n".join(t for m in messages if m.get("role") in _SYSTEM_ROLES if (t := text_of(m.get("content"))))


def _plain(m: dict[str, Any]) -> bool:
    """A message with nothing but a role and content (no name, tool calls...), so safe to merge."""
    return set(m) <= {"role", "content"}


def _joined(a: Any, b: Any) -> Any:
    if isinstance(a, list) or isinstance(b, list):
        def parts(c: Any) -> list[Any]:
            return list(c) if isinstance(c, list) else [{"type": "text", "text": str(c or "")}]
        return [*parts(a), {"type": "text", "text": "\n\n"}, *parts(b)]
    return f"{a or ''}\n\n{b or ''}"


def merge_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most one leading system message and no two user messages in a row: some chat templates and
    providers reject a second system message or non-alternating turns. Merged texts are joined by a blank
    line; messages carrying more than a role and content are left as they are."""
    out: list[dict[str, Any]] = []
    for m in messages:
        prev = out[-1] if out else None
        leading_system = (prev is not None and m.get("role") in _SYSTEM_ROLES and prev.get("role") in _SYSTEM_ROLES
                          and all(p.get("role") in _SYSTEM_ROLES for p in out))
        users = prev is not None and m.get("role") == "user" and prev.get("role") == "user"
        if (leading_system or users) and prev is not None and _plain(m) and _plain(prev):
            role = prev["role"] if prev["role"] == m["role"] else "system"
            out[-1] = {"role": role, "content": _joined(prev.get("content"), m.get("content"))}
        else:
            out.append(m)
    return out


def aggregate_messages(messages: list[dict[str, Any]], answers: list[str]) -> list[dict[str, Any]]:
    """Wang et al.'s Aggregate-and-Synthesize: the answers go in a system message before the dialogue.

    As in Together's MoA reference, they are added to the user's system message, which is kept: persona,
    language and format instructions must reach the step that writes the answer."""
    instructions = system_text(messages)
    references = f"{AGGREGATE}\n\n{numbered(answers)}"
    system = {"role": "system", "content": f"{instructions}\n\n{references}" if instructions else references}
    return merge_turns([system, *[m for m in messages if m.get("role") not in _SYSTEM_ROLES]])


def user_query(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return text_of(m.get("content"))
    return ""


def _clip(text: str, limit: int) -> str:
    """Head and tail of a long text: a question's setup and its ending both matter."""
    text = text.strip()
    if len(text) <= limit:
        return text
    half = max(1, (limit - 5) // 2)
    return f"{text[:half]} […] {text[-half:]}"


def _turn(m: dict[str, Any]) -> str:
    role = str(m.get("role"))
    text = _clip(text_of(m.get("content")), CONTEXT_TURN_CHARS)
    calls = [c.get("function", {}).get("name", "?") for c in m.get("tool_calls") or [] if isinstance(c, dict)]
    if calls:
        text = f"{text} [calls {', '.join(calls)}]".strip()
    return f"{_LABELS.get(role, role.capitalize())}: {text}"


def _request(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """The conversation a reviewer needs around the last user message: (context before it, the request with
    anything that followed it). A single-turn request without system prompt gives exactly ``Request:\\n...``."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages))
    turns = [m for m in messages if m.get("role") not in _SYSTEM_ROLES]
    before = [m for m in messages[:last] if m.get("role") not in _SYSTEM_ROLES]
    after = [m for m in messages[last + 1:] if m.get("role") not in _SYSTEM_ROLES]
    parts = []
    if instructions := system_text(messages):
        parts.append(f"The user's instructions to the assistant:\n{_clip(instructions, CONTEXT_SYSTEM_CHARS)}")
    if before:
        shown = before[-CONTEXT_TURNS:]
        omitted = f" ({len(before) - len(shown)} earlier turns omitted)" if len(shown) < len(before) else ""
        parts.append(f"Earlier conversation{omitted}:\n" + "\n".join(_turn(m) for m in shown))
    context = "".join(f"{p}\n\n" for p in parts)
    request = f"Request:\n{user_query(turns)}"
    if after:
        request += "\n\nThen:\n" + "\n".join(_turn(m) for m in after)
    return context, request


def review_messages(instruction: str, messages: list[dict[str, Any]], answer: str) -> ReviewPrompt:
    """A critic's or grader's prompt: the conversation (system prompt, earlier turns) it needs to judge the
    answer, compactly, then the request and the answer."""
    context, request = _request(messages)
    return ReviewPrompt([
        {"role": "system", "content": instruction},
        {"role": "user", "content": f"{context}{request}\n\nAnswer:\n{answer}"},
    ])


def revise_messages(messages: list[dict[str, Any]], answer: str, critique: str) -> list[dict[str, Any]]:
    return [
        *messages,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"{REVISE}\n\nReviewer's comments:\n{critique}"},
    ]


def check_messages(messages: list[dict[str, Any]]) -> ReviewPrompt:
    """The program check's prompt: the request (with the conversation it depends on) and the ask for code."""
    context, _ = _request(messages)
    return ReviewPrompt([{"role": "user", "content": f"{context}{user_query(messages)}\n\n{CHECK_PROGRAM}"}])


def from_program_messages(messages: list[dict[str, Any]], code: str, printed: str,
                          values: str) -> list[dict[str, Any]]:
    """The conversation with its last request extended by the program, its values and what it printed."""
    shown = FROM_PROGRAM.format(code=code, printed=printed, values=values or "(none kept)")
    ask = f"{user_query(messages)}\n\n{shown}"
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages))
    return [*messages[:last], {"role": "user", "content": ask}]


def judge_messages(messages: list[dict[str, Any]], answers: list[str]) -> ReviewPrompt:
    """The judge's prompt: the conversation it needs, the request and the numbered candidates."""
    context, request = _request(messages)
    return ReviewPrompt([
        {"role": "system", "content": JUDGE},
        {"role": "user", "content": f"{context}{request}\n\nCandidates:\n{numbered(answers)}"},
    ])


_APPROVE = {"APPROVED", "APPROVE", "LGTM", "OK", "OKAY", "CORRECT", "ACCEPTED", "ACCEPT", "PASS", "PASSED"}
_FILLER = {"IS", "THE", "MY", "FINAL", "ANSWER", "DRAFT", "RESPONSE", "SOLUTION"}
_VERDICT = re.compile(r"\bVERDICT\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]+")
_NEGATED_APPROVAL = re.compile(r"\b(?:NOT|NO|NEVER|CANNOT|CAN'T|ISN'T|WASN'T)\b\W+(?:\w+\W+)?APPROVED?\b",
                               re.IGNORECASE)


def approved(critique: str) -> bool:
    """The critic's verdict: the first word after VERDICT on the last line that has one ("VERDICT: NOT
    APPROVED" and "DISAPPROVED" are not approvals); without a VERDICT line, an approval on the last line."""
    lines = [ln for ln in critique.splitlines() if ln.strip()]
    marked = [i for i, ln in enumerate(lines) if _VERDICT.search(ln)]
    if marked:
        i = marked[-1]
        rest = lines[i][_VERDICT.search(lines[i]).end():]  # type: ignore[union-attr]
        words = _WORD.findall(rest)
        if not words and i + 1 < len(lines):  # "VERDICT:" with the word on the next line
            words = _WORD.findall(lines[i + 1])
        # "Verdict: the answer is approved": the first word that is no filler
        word = next((w for w in words if w.upper() not in _FILLER), None)
        return word is not None and word.upper() in _APPROVE
    if not lines:
        return False
    head = critique.strip().upper()
    if head.startswith("APPROVED") or head.rstrip(".!") in _APPROVE:
        return True
    tail = lines[-1]
    return bool(re.search(r"\bAPPROVED\b", tail, re.IGNORECASE)) and not _NEGATED_APPROVAL.search(tail)


def first_number(text: str) -> float | None:
    m = re.search(r"-?\d+(?:\.\d+)?", text)
    return float(m.group()) if m else None


def grade_of(text: str) -> float | None:
    """A grader's score on GRADE's 0–10 scale; None when it gave no number or one off that scale (an 85 is not
    an 8.5, and a reply echoing an answer's '#163' is no grade), so that it counts as no grade at all."""
    score = first_number(text)
    return score if score is not None and 0 <= score <= 10 else None


# A candidate number: a whole number, not part of a decimal, a negative number or a longer number.
_INT = r"(?<![\d.\-])(\d+)(?!\.?\d)"
_JUDGE_FORMS = [
    re.compile(r"\bBEST\b[^\d\n]{0,24}?" + _INT, re.IGNORECASE),  # BEST: 3, the best answer is #3
    re.compile(_INT + r"\W{0,3}\s*(?:is|was)\s+(?:the\s+)?(?:best|correct|right)\b", re.IGNORECASE),  # 3 is best
    # the marker's optional space sits inside the group, so a run of spaces is split only one way
    re.compile(r"\b(?:answer|candidate|option|number|choice)(?:\s*(?:no\.?|#|:))?\s*" + _INT, re.IGNORECASE),
]


def judge_pick(text: str, n: int) -> int | None:
    """The judge's choice among ``n`` candidates (1-based): the last explicit 'BEST: n' (or 'n is best',
    'answer n'), else the last whole number in range; None when there is none (7 of 3, 0, 3.9)."""
    for form in [*_JUDGE_FORMS, re.compile(_INT)]:
        # a run of more than six digits is no candidate's number (and int() refuses over 4,300 digits)
        picks = [int(g) for m in form.finditer(text) if len(g := m.group(1)) <= 6 and 1 <= int(g) <= n]
        if picks:
            return picks[-1]
    return None


def judge_verdict(verdict: StepResult | None, n: int) -> tuple[int | None, str | None]:
    """The judge step's pick among ``n`` answers, and a note for the reasons when it has none to give (the
    judge failed or its verdict is unusable) so that falling back to the gate's favourite leaves a trace."""
    if verdict is None or verdict.status == "skipped":
        return None, None  # not asked (fewer than two answers)
    if verdict.status != "ok":
        return None, f"judge failed ({verdict.error or verdict.status}); answered with the gate's favourite"
    pick = judge_pick(verdict.text, n)
    if pick is None:
        said = _clip(verdict.text, 60) or "nothing"
        return None, f"judge verdict unusable ({said!r} for {n} answers); answered with the gate's favourite"
    return pick, None


def critic_note(verdict: StepResult | None) -> str | None:
    """A note for the reasons when the critic failed, so a draft kept unreviewed is not taken as approved."""
    if verdict is None or verdict.status != "failed":
        return None
    return f"critic {verdict.step} failed ({verdict.error or 'no answer'}); the answer was kept without review"
