"""MT-Bench out of domain: gpt-4 vs Mixtral routed on MT-Bench's first turns, scored by GPT-4's judgements.

RouteLLM's MT-Bench figure (routellm/evals/benchmarks.py) routes each question by its first turn; the
routed model's judge scores (1-10) for both turns are averaged. Its 72 questions are MT-Bench's 80 less
8 that also appear in RouteLLM's training data. ../shared has the questions but no labels, on purpose:
a gate must reach MT-Bench out of domain. The judgements come from the user (RouteLLM's
``routellm/evals/mt_bench/judgements.jsonl``, or any JSON lines with ``question_id``, ``model``, ``score``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moai.bench.datasets import located, read_json_lines
from moai.gate.quality import canonical

# MT-Bench questions whose first or second turn RouteLLM found in its own training data (Arena battles).
ROUTELLM_CONTAMINATED = frozenset({81, 88, 91, 92, 101, 104, 120, 122})


class JudgementError(ValueError):
    """A judgements or questions file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class MTBenchSet:
    question_ids: list[int]
    first_turns: list[str]
    categories: list[str]
    y: np.ndarray  # (n, 2): mean judge score over both turns, strong then weak


def _lines(path: Path) -> list[tuple[int, dict]]:
    out = []
    for n, obj in read_json_lines(path, lambda ln, reason: JudgementError(located(path, ln, reason))):
        if not isinstance(obj, dict):
            raise JudgementError(f"{path}:{n}: expected a JSON object")
        out.append((n, obj))
    return out


def load_judgements(path: str | Path) -> dict[tuple[int, str], list[float]]:
    """(question_id, canonical model name) -> the judge's scores, one per turn."""
    p = Path(path)
    scores: dict[tuple[int, str], list[float]] = defaultdict(list)
    for n, obj in _lines(p):
        qid, model, score = obj.get("question_id"), obj.get("model"), obj.get("score")
        if not isinstance(qid, int) or not isinstance(model, str):
            raise JudgementError(f"{p}:{n}: needs an integer question_id and a model name")
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            raise JudgementError(f"{p}:{n}: score must be a number, got {score!r}")
        scores[(qid, canonical(model))].append(float(score))
    if not scores:
        raise JudgementError(f"{p}: no judgements")
    return dict(scores)


def load_questions(path: str | Path) -> list[dict]:
    p = Path(path)
    qs = []
    for n, obj in _lines(p):
        turns = obj.get("turns")
        if not isinstance(obj.get("question_id"), int) or not (isinstance(turns, list) and turns
                                                                and isinstance(turns[0], str)):
            raise JudgementError(f"{p}:{n}: needs an integer question_id and a list of turns")
        qs.append(obj)
    return qs


def mt_bench_set(questions: Sequence[dict], judgements: dict[tuple[int, str], list[float]], strong: str,
                 weak: str, decontaminate: bool = True) -> MTBenchSet:
    """The questions both models were judged on, with their mean score per question (RouteLLM's average
    over every judged turn of the routed model)."""
    s, w = canonical(strong), canonical(weak)
    keep = [q for q in questions if not (decontaminate and q["question_id"] in ROUTELLM_CONTAMINATED)]
    missing = [q["question_id"] for q in keep if (q["question_id"], s) not in judgements
               or (q["question_id"], w) not in judgements]
    if missing:
        raise JudgementError(f"no judgement of {strong} or {weak} for question(s) {missing[:10]}")
    y = np.array([[np.mean(judgements[(q["question_id"], s)]), np.mean(judgements[(q["question_id"], w)])]
                  for q in keep])
    return MTBenchSet([q["question_id"] for q in keep], [q["turns"][0] for q in keep],
                      [str(q.get("category", "")) for q in keep], y)
