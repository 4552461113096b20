"""Question files for ``moai bench collect``: detect each line's format, render the prompt, grade the answer.

Prompts are short and ask for a gradable answer format, and ``max_tokens`` is set per task, because
the local models are small and slow: see ``TASKS`` for the choices and the reasons.
"""

from __future__ import annotations

import ast
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moai.bench import graders
from moai.bench.datasets import located, read_json_lines


class QuestionFormatError(ValueError):
    """A question file line we cannot interpret; the message is one line: ``file:line: problem``."""


@dataclass(frozen=True)
class Task:
    """How one kind of question is asked and graded.

    ``max_tokens`` bounds the cost of a call: enough for a short worked answer where reasoning helps
    (arithmetic, code), a handful of tokens where the answer is a letter or a few words.
    """

    template: str
    max_tokens: int
    shot: tuple[str, str] | None = None  # one worked (question, answer) turn that shows the answer format


NUMBER_SHOT = ("A baker makes 3 trays of 12 cookies and sells 20. How many cookies are left?\n\n"
               "Give only the final answer as a number, nothing else.", "16")
MATH_SHOT = ("What is $\\frac{1}{2} + \\frac{1}{4}$?\n\nGive only the final answer in \\boxed{}, nothing else.",
             "\\boxed{\\frac{3}{4}}")


TASKS: dict[str, Task] = {
    # Measured on the shared 2-core box: the 1.5B model generates ~5 tok/s when the machine is busy, so a
    # 200-token chain of thought costs ~40 s per question and model. Arithmetic is therefore asked for the
    # final number only (the routing signal is "who knows it without scratch work"); see data/local-zoo/README.md.
    # Without an example turn the models start explaining anyway and get cut off; with one they comply.
    "number": Task("{question}\n\nGive only the final answer as a number, nothing else.", 12, NUMBER_SHOT),
    # Competition maths (MATH, MGSM): the same, with the answer in \boxed{} as the dataset expects.
    "math": Task("{question}\n\nGive only the final answer in \\boxed{{}}, nothing else.", 24, MATH_SHOT),
    # Multiple choice: the letter only; reasoning would cost 20-50x the tokens for small models.
    "letter": Task("{question}\n\n{options}\n\nAnswer with the letter only.", 4),
    # Open-domain QA graded by token F1: a few words, not a sentence.
    "f1": Task("Answer in as few words as possible.\n\nQuestion: {question}", 16),
    # CommonGen: one sentence; coverage of the given words is the score.
    "commongen": Task("Write one short sentence that uses all of these words: {question}", 48),
    # MBPP: the first test shows the expected name and signature; code needs room, but not much.
    "mbpp": Task("{question}\nYour code must pass this test:\n{test}\n\nReply with only the Python code.", 160),
    # HumanEval: the full function, so the grader can run the prompt's tests on it.
    "humaneval": Task("Complete this Python function. Reply with only the complete function in a Python "
                      "code block.\n\n```python\n{question}```", 160),
}

MULTITASK_METRICS = {
    "em_mc": "letter",
    "GSM8K": "number",
    "MATH": "math",
    "f1_score": "f1",
    "commongen_coverage": "commongen",
    "code_eval": "code",
}


@dataclass
class Question:
    """One gradable question, already rendered into the prompt the models see."""

    id: str
    benchmark: str
    kind: str  # a TASKS key
    prompt: str
    gold: Any  # what the grader compares with (number string, letter, text, tests)
    category: str | None = None
    choices: list[str] | None = None
    source: str = ""  # the original question text (HumanEval needs the bare function prompt)

    @property
    def max_tokens(self) -> int:
        return TASKS[self.kind].max_tokens

    @property
    def messages(self) -> list[dict[str, str]]:
        """The chat sent: the task's example turn (if any), then the prompt."""
        shot = TASKS[self.kind].shot
        pre = [{"role": "user", "content": shot[0]}, {"role": "assistant", "content": shot[1]}] if shot else []
        return [*pre, {"role": "user", "content": self.prompt}]


def _options(choices: Sequence[str]) -> str:
    return "\n".join(f"{graders.LETTERS[i]}. {c}" for i, c in enumerate(choices))


def _literal(text: str) -> Any:
    """A Python literal written as text (the repr of a list or dict); None when it is not one. A deeply nested or
    huge expression ("1+1+1+..."), or an unhashable dict key, is not one either (not a crash)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
        return None


def _parse_choices(raw: Any) -> tuple[list[str], list[str]]:
    """Multitask choices come as a list, a dict {'text': [...], 'label': [...]}, or the repr of either: the
    texts, and the labels a dict gives them (ARC numbers some questions 1-4)."""
    if isinstance(raw, str):
        raw = _literal(raw)
    labels: list[str] = []
    if isinstance(raw, dict):
        labels = [str(x).strip().upper() for x in raw.get("label", [])] if isinstance(raw.get("label"), list) else []
        raw = raw.get("text", [])
    texts = [str(c) for c in raw] if isinstance(raw, list | tuple) else []
    return texts, labels if len(labels) == len(texts) else []


def _gold_text(gt: Any, where: str, metric: str) -> str:
    """The gold answer as text. Null, an empty string, an array or an object is no gold answer: every model would
    score 0 against it, so the line is refused (as an em_mc line without choices is)."""
    ok = isinstance(gt, str) or isinstance(gt, int | float) and not isinstance(gt, bool) and math.isfinite(gt)
    if not ok or not str(gt).strip():
        got = "an empty string" if isinstance(gt, str) else _json_type(gt)
        raise QuestionFormatError(f"{where}: {metric} question without a gold answer (ground_truth is {got})")
    return str(gt)


def _check_letters(choices: Sequence[str], gold: str, where: str) -> None:
    """A multiple-choice line is gradable: at most as many choices as letters, and a gold letter among them."""
    if len(choices) > len(graders.LETTERS):
        raise QuestionFormatError(f"{where}: {len(choices)} choices; at most {len(graders.LETTERS)} (A-J)")
    if gold not in graders.LETTERS[: len(choices)]:
        raise QuestionFormatError(f"{where}: gold answer {gold!r} is not the letter of one of its {len(choices)} "
                                  f"choices (A-{graders.LETTERS[len(choices) - 1]})")


def _number_gold(answer: str, where: str, what: str) -> str:
    """The number after '####' (GSM8K's gold); refused when there is none to compare a reply's number with."""
    gold = graders.gsm8k_gold(answer)
    if not gold:
        raise QuestionFormatError(f"{where}: {what} question without a gold answer (nothing after '####')")
    if graders.parse_number(gold) is None:
        raise QuestionFormatError(f"{where}: {what} gold answer {gold!r} is not a number")
    return gold


def _json_type(value: Any) -> str:
    """A value's type as JSON names it: what a question file's author wrote."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return {dict: "an object", list: "an array"}.get(type(value), type(value).__name__)


def parse_question(obj: Any, stem: str, index: int, where: str) -> Question:
    """Detect a line's format (GSM8K, MMLU, LLMRouter multitask) and render its prompt."""
    if not isinstance(obj, dict):
        raise QuestionFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    qid = f"{stem}/{index}"
    if {"query", "ground_truth", "metric"} <= obj.keys():
        return _multitask(obj, qid, where)
    if "question" in obj and not isinstance(obj["question"], str):
        raise QuestionFormatError(f"{where}: 'question' must be a string, got {_json_type(obj['question'])}")
    if {"question", "choices", "answer"} <= obj.keys():
        choices = [str(c) for c in obj["choices"]] if isinstance(obj["choices"], list) else []
        gold = str(obj["answer"]).strip().upper()
        if not choices or gold not in graders.LETTERS[: len(choices)]:
            raise QuestionFormatError(f"{where}: multiple-choice line needs a list of choices and a gold letter")
        _check_letters(choices, gold, where)
        prompt = TASKS["letter"].template.format(question=obj["question"].strip(), options=_options(choices))
        return Question(qid, "mmlu", "letter", prompt, gold, obj.get("subject"), choices)
    if {"question", "answer"} <= obj.keys() and "####" in str(obj["answer"]):
        gold = _number_gold(str(obj["answer"]), where, "GSM8K")
        prompt = TASKS["number"].template.format(question=obj["question"].strip())
        return Question(qid, "gsm8k", "number", prompt, gold)
    keys = ", ".join(sorted(obj)) or "none"
    raise QuestionFormatError(
        f"{where}: unknown question format (keys: {keys}); expected GSM8K (question, answer with ####), "
        "MMLU (question, choices, answer) or multitask (query, ground_truth, metric)"
    )


def _multitask(obj: dict[str, Any], qid: str, where: str) -> Question:
    metric, task = str(obj["metric"]), str(obj.get("task_name") or "multitask")
    kind = MULTITASK_METRICS.get(metric)
    if kind is None:
        raise QuestionFormatError(f"{where}: unknown metric {metric!r}; known: {', '.join(MULTITASK_METRICS)}")
    query, gt = obj["query"], obj["ground_truth"]
    if not isinstance(query, str) or not query.strip():
        got = "an empty string" if isinstance(query, str) else _json_type(query)
        raise QuestionFormatError(f"{where}: 'query' must be the question's text, got {got}")
    if kind == "letter":
        choices, labels = _parse_choices(obj.get("choices"))
        if not choices:
            raise QuestionFormatError(f"{where}: em_mc question without choices")
        gold = _gold_text(gt, where, metric).strip().upper()
        if gold in labels and gold not in graders.LETTERS[: len(choices)]:  # ARC's 1-4: the letter shown for it
            gold = graders.LETTERS[labels.index(gold)]
        _check_letters(choices, gold, where)
        prompt = TASKS["letter"].template.format(question=query.strip(), options=_options(choices))
        return Question(qid, task, "letter", prompt, gold, task, choices)
    if kind == "number":
        gold = _number_gold(_gold_text(gt, where, metric), where, metric)
        return Question(qid, task, "number", TASKS["number"].template.format(question=query.strip()), gold, task)
    if kind == "math":
        # MGSM queries carry their own "after careful thought, put ... in \\boxed{}": replace it with ours
        q = re.sub(r"\n?After careful thought.*$", "", query.strip(), flags=re.S | re.I).strip()
        prompt = TASKS["math"].template.format(question=q)
        gold = graders.math_gold(_gold_text(gt, where, metric))
        if not gold:
            raise QuestionFormatError(f"{where}: {metric} question without a gold answer (an empty \\boxed{{}})")
        return Question(qid, task, "math", prompt, gold, task)
    if kind == "f1":
        gold = _gold_text(gt, where, metric)
        return Question(qid, task, "f1", TASKS["f1"].template.format(question=query.strip()), gold, task)
    if kind == "commongen":
        concepts = ", ".join(gt) if isinstance(gt, list) and all(isinstance(c, str) for c in gt) else gt
        gold = _gold_text(concepts, where, metric)
        return Question(qid, task, "commongen", TASKS["commongen"].template.format(question=query.strip()),
                        gold, task)
    # code_eval: MBPP carries its asserts (choices == ground_truth); HumanEval carries check(candidate)
    if not isinstance(gt, str | list):
        raise QuestionFormatError(f"{where}: code_eval question without tests (ground_truth is {_json_type(gt)})")
    if "human" in task.lower() or "def check(" in str(gt):
        prompt = TASKS["humaneval"].template.format(question=query)
        return Question(qid, task, "humaneval", prompt, _gold_text(gt, where, metric), task, source=query)
    tests = graders.parse_tests(gt)
    if not tests:
        raise QuestionFormatError(f"{where}: code_eval question without tests")
    prompt = TASKS["mbpp"].template.format(question=query.strip(), test=tests[0])
    return Question(qid, task, "mbpp", prompt, tests, task)


def load_questions(path: str | Path, *, seed: int | None = None, offset: int = 0,
                   limit: int | None = None) -> list[Question]:
    """Read a question file; with ``seed``, take a seeded shuffle (a fixed random sample) before offset/limit."""
    p = Path(path)
    out = [parse_question(obj, p.stem, ln - 1, f"{p}:{ln}")
           for ln, obj in read_json_lines(p, lambda ln, reason: QuestionFormatError(located(p, ln, reason)))]
    if not out:
        raise QuestionFormatError(f"{p}: no questions in file")
    if seed is not None:
        random.Random(seed).shuffle(out)
    return out[offset : None if limit is None else offset + limit]


def interleave(groups: Sequence[Sequence[Question]]) -> list[Question]:
    """Round-robin over files, so a run stopped early still covers every task."""
    out: list[Question] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def grade(q: Question, response: str, code_timeout_s: float = 10.0) -> float:
    """Score one answer in [0, 1] with the grader for its task."""
    if q.kind == "number":
        return graders.grade_number(response, q.gold)
    if q.kind == "math":
        return graders.grade_math(response, q.gold)
    if q.kind == "letter":
        return graders.grade_letter(response, q.gold, len(q.choices or []) or 4, q.choices)
    if q.kind == "f1":
        return graders.f1_score(graders.short_answer(response), q.gold)
    if q.kind == "commongen":
        return graders.commongen_coverage(response, q.gold)
    if q.kind == "mbpp":
        return graders.grade_mbpp(response, q.gold, code_timeout_s)
    if q.kind == "humaneval":
        return graders.grade_humaneval(response, q.source, q.gold, code_timeout_s)
    raise ValueError(f"no grader for {q.kind!r}")


def per_file_limits(limit: int | Sequence[int | None] | None, n_files: int) -> list[int | None]:
    """One limit for every file, or one per file (in the order the files were given)."""
    if limit is None or isinstance(limit, int):
        return [limit] * n_files
    limits = list(limit)
    if len(limits) == 1:
        return limits * n_files
    if len(limits) != n_files:
        raise QuestionFormatError(f"{len(limits)} limits for {n_files} question files; give one, or one per file")
    return limits


def select_questions(question_files: Sequence[str | Path], limit: int | Sequence[int | None] | None = None, *,
                     offset: int = 0, seed: int | None = None) -> list[Question]:
    """The questions a run asks, in the order it asks them (files interleaved); ids that collide are an error."""
    limits = per_file_limits(limit, len(question_files))
    groups = [load_questions(f, seed=seed, offset=offset, limit=n) for f, n in zip(question_files, limits, strict=True)]
    questions = interleave(groups)
    seen: dict[str, int] = {}
    for k, (f, group) in enumerate(zip(question_files, groups, strict=True)):
        for q in group:
            if q.id not in seen:
                seen[q.id] = k
                continue
            other = question_files[seen[q.id]]
            if seen[q.id] == k:
                raise QuestionFormatError(f"{f}: question id {q.id!r} repeats")
            if Path(other).resolve() == Path(f).resolve():
                raise QuestionFormatError(f"{f} is given twice as --questions: give it once")
            raise QuestionFormatError(f"{other} and {f} share the name {Path(f).stem!r}; question ids "
                                      f"(<file stem>/<line>, e.g. {q.id!r}) would collide: rename one")
    return questions
