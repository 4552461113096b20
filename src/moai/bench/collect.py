"""Build a routing dataset by running real models on graded questions.

Every (question, model) pair goes through the normal provider layer, is graded automatically, and is
appended to a journal beside the output (``<out>.journal.jsonl``) the moment it is graded. The routing
records are rebuilt from the journal, so a run can be stopped at any time (Ctrl-C, a crash, a reboot)
and re-run with the same command: finished pairs are skipped, nothing graded is lost.

Prompts are short and ask for a gradable answer format, and ``max_tokens`` is set per task, because
the local models are small and slow: see ``TASKS`` for the choices and the reasons.
"""

from __future__ import annotations

import ast
import asyncio
import json
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moai.bench import graders
from moai.bench.datasets import located, read_json_lines
from moai.catalog import ModelCard
from moai.config import Config
from moai.providers import ChatParams, Provider, ProviderError, make_provider
from moai.telemetry.carbon import CarbonModel


class QuestionFormatError(ValueError):
    """A question file line we cannot interpret; the message is one line: ``file:line: problem``."""


# ------------------------------------------------------------------------------------------ tasks


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


def _parse_choices(raw: Any) -> list[str]:
    """Multitask choices come as a list, a dict {'text': [...], 'label': [...]}, or the repr of either."""
    if isinstance(raw, str):
        try:
            raw = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return []
    if isinstance(raw, dict):
        raw = raw.get("text", [])
    return [str(c) for c in raw] if isinstance(raw, list | tuple) else []


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
        prompt = TASKS["letter"].template.format(question=obj["question"].strip(), options=_options(choices))
        return Question(qid, "mmlu", "letter", prompt, gold, obj.get("subject"), choices)
    if {"question", "answer"} <= obj.keys() and "####" in str(obj["answer"]):
        gold = graders.gsm8k_gold(str(obj["answer"]))
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
    query, gt = str(obj["query"]), obj["ground_truth"]
    if kind == "letter":
        choices = _parse_choices(obj.get("choices"))
        if not choices:
            raise QuestionFormatError(f"{where}: em_mc question without choices")
        prompt = TASKS["letter"].template.format(question=query.strip(), options=_options(choices))
        return Question(qid, task, "letter", prompt, str(gt).strip().upper(), task, choices)
    if kind == "number":
        gold = graders.gsm8k_gold(str(gt))
        return Question(qid, task, "number", TASKS["number"].template.format(question=query.strip()), gold, task)
    if kind == "math":
        # MGSM queries carry their own "after careful thought, put ... in \\boxed{}": replace it with ours
        q = re.sub(r"\n?After careful thought.*$", "", query.strip(), flags=re.S | re.I).strip()
        prompt = TASKS["math"].template.format(question=q)
        return Question(qid, task, "math", prompt, graders.math_gold(str(gt)), task)
    if kind == "f1":
        return Question(qid, task, "f1", TASKS["f1"].template.format(question=query.strip()), str(gt), task)
    if kind == "commongen":
        return Question(qid, task, "commongen", TASKS["commongen"].template.format(question=query.strip()),
                        str(gt), task)
    # code_eval: MBPP carries its asserts (choices == ground_truth); HumanEval carries check(candidate)
    if "human" in task.lower() or "def check(" in str(gt):
        prompt = TASKS["humaneval"].template.format(question=query)
        return Question(qid, task, "humaneval", prompt, str(gt), task, source=query)
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


# ---------------------------------------------------------------------------------------- journal


@dataclass
class Entry:
    """One graded (question, model) pair: a journal line."""

    id: str
    model: str
    benchmark: str
    prompt: str
    answer: Any
    category: str | None
    score: float
    response: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    cost_usd: float
    energy_kwh: float
    co2_g: float
    finish_reason: str = "stop"
    t: float = field(default_factory=time.time)


def journal_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".journal.jsonl")


def _entry(line: bytes) -> Entry | None:
    """The entry one journal line holds, or None when it holds none (torn, garbled, not an entry)."""
    try:
        obj = json.loads(line.decode("utf-8"))
        return Entry(**obj) if isinstance(obj, dict) else None
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError):
        return None


def _journal_lines(path: Path) -> tuple[list[Entry], int]:
    """The journal's entries and how many non-blank lines hold none. Read as bytes, line by line: a line torn
    inside a multi-byte character must cost that line only, not the whole journal."""
    if not path.is_file():
        return [], 0
    entries: list[Entry] = []
    bad = 0
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        e = _entry(line)
        if e is None:
            bad += 1
        else:
            entries.append(e)
    return entries, bad


def read_journal(path: Path) -> list[Entry]:
    """Graded pairs so far; a torn or garbled line (killed mid-write) is skipped, its pair will be redone."""
    return _journal_lines(path)[0]


def mend_journal(path: Path) -> tuple[bool, int]:
    """Make the journal safe to append to; returns (a torn last line was cut off, unreadable lines left).

    A run killed mid-write leaves a last line without its newline: the next run's first entry would be appended
    to it, and the line holding both would be unreadable, so that pair would be run (and paid for) again on every
    later run. The fragment is cut off (its pair runs again), or given its newline when it is a whole entry."""
    if not path.is_file():
        return False, 0
    data = path.read_bytes()
    cut = False
    if data and not data.endswith(b"\n"):
        start = data.rfind(b"\n") + 1
        with path.open("r+b") as f:
            if _entry(data[start:]) is not None:
                f.seek(0, 2)
                f.write(b"\n")
            else:
                f.truncate(start)
                cut = bool(data[start:].strip())
    return cut, _journal_lines(path)[1]


def build_records(entries: Iterable[Entry]) -> list[dict[str, Any]]:
    """Routing records (shared/data/MANIFEST.md format plus latency, energy, responses), in journal order."""
    records: dict[str, dict[str, Any]] = {}
    for e in entries:
        r = records.get(e.id)
        if r is None:
            r = records[e.id] = {
                "id": e.id, "benchmark": e.benchmark, "prompt": e.prompt, "category": e.category,
                "answer": e.answer, "scores": {}, "tokens": {}, "latency_ms": {}, "cost_usd": {},
                "energy_kwh": {}, "co2_g": {}, "responses": {},
            }
        r["scores"][e.model] = e.score
        r["tokens"][e.model] = {"input": e.input_tokens, "output": e.output_tokens}
        r["latency_ms"][e.model] = round(e.latency_ms, 1)
        r["cost_usd"][e.model] = e.cost_usd
        r["energy_kwh"][e.model] = e.energy_kwh
        r["co2_g"][e.model] = e.co2_g
        r["responses"][e.model] = e.response
    return list(records.values())


def write_records(out: str | Path, entries: Iterable[Entry]) -> int:
    """Rewrite the records file atomically from the journal; returns how many records."""
    out = Path(out)
    records = build_records(entries)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return len(records)


def regrade(out: str | Path, questions: Sequence[Question], code_timeout_s: float = 10.0) -> int:
    """Re-score journaled answers with the current graders (after a grader fix), without calling models.

    Rewrites the journal atomically and then the records; returns how many scores changed. Do not run it
    while a collection is appending to the same journal.
    """
    journal = journal_path(out)
    entries = read_journal(journal)
    by_id = {q.id: q for q in questions}
    changed = 0
    for e in entries:
        q = by_id.get(e.id)
        if q is None:
            continue
        score = round(grade(q, e.response, code_timeout_s), 4)
        changed += score != e.score
        e.score = score
    tmp = journal.with_name(journal.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(asdict(e), ensure_ascii=False) + "\n")
    tmp.replace(journal)
    write_records(out, entries)
    return changed


# ---------------------------------------------------------------------------------------- running


@dataclass
class Summary:
    """What a run did: pairs graded now, skipped as already done, failed (retried on the next run)."""

    total: int
    skipped: int
    graded: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False


ProgressHook = Callable[[Entry | None, str | None], None]


async def run_pairs(
    questions: Sequence[Question],
    cards: Sequence[ModelCard],
    journal: Path,
    *,
    concurrency: int = 1,
    carbon: CarbonModel | None = None,
    seed: int | None = None,
    code_timeout_s: float = 10.0,
    on_done: ProgressHook | None = None,
    providers: dict[str, Provider] | None = None,
) -> Summary:
    """Run every not-yet-journaled (question, model) pair; journal each graded one immediately.

    ``concurrency`` workers take pairs in question order; each model also has its own bound (1 for local
    models, whose llama.cpp context is serial anyway; the card's concurrency for remote ones).
    """
    carbon = carbon or CarbonModel()
    mend_journal(journal)  # appends must start on a line of their own
    done = {(e.id, e.model) for e in read_journal(journal)}
    todo = [(q, c) for q in questions for c in cards if (q.id, c.name) not in done]
    summary = Summary(total=len(questions) * len(cards), skipped=len(questions) * len(cards) - len(todo))
    providers = providers if providers is not None else {c.name: make_provider(c) for c in cards}
    cap = {c.name: 1 if c.provider == "local" else c.max_concurrency for c in cards}
    journal.parent.mkdir(parents=True, exist_ok=True)
    for name in dict.fromkeys(c.name for _, c in todo):  # a first pair's latency_ms must not include loading
        await providers[name].warm()
    start = time.perf_counter()
    # Fair, question-major scheduling: a free worker takes the earliest pending pair whose model has room,
    # among the first `window` unfinished questions. Without the window the fastest model runs far ahead
    # (measured: 303 / 239 / 154 answers per model after 700 calls), and a run stopped early would leave
    # mostly incomplete records; with it, at most `window` records are incomplete at any moment.
    window = max(4, 4 * concurrency)
    pending = list(todo)
    left: dict[str, int] = {}
    for q, _ in todo:
        left[q.id] = left.get(q.id, 0) + 1
    open_ids = list(left)  # questions with pairs still pending or running, in order
    running = dict.fromkeys(cap, 0)
    cond = asyncio.Condition()

    def pick() -> tuple[Question, ModelCard] | None:
        allowed = set(open_ids[:window])
        for i, (q, c) in enumerate(pending):
            if q.id not in allowed:
                break  # pending is question-major, so nothing later is in the window
            if running[c.name] < cap[c.name]:
                return pending.pop(i)
        return None

    with journal.open("a", encoding="utf-8") as jf:

        async def one(q: Question, card: ModelCard) -> None:
            params = ChatParams(messages=q.messages, max_tokens=q.max_tokens, temperature=0.0, seed=seed)
            try:
                comp = await providers[card.name].complete(params)
            except ProviderError as e:
                summary.failed += 1
                summary.errors.append(f"{q.id} {card.name}: {e}")
                if on_done:
                    on_done(None, str(e))
                return
            score = await asyncio.to_thread(grade, q, comp.text, code_timeout_s)
            n_in, n_out = comp.usage.prompt_tokens, comp.usage.completion_tokens
            kwh, g = carbon.estimate(card, n_in, n_out, comp.latency_s, comp.cpu_s)
            entry = Entry(
                id=q.id, model=card.name, benchmark=q.benchmark, prompt=q.prompt, answer=q.gold,
                category=q.category, score=round(score, 4), response=comp.text, input_tokens=n_in,
                output_tokens=n_out, latency_ms=comp.latency_s * 1000, cost_usd=card.cost_usd(n_in, n_out),
                energy_kwh=kwh, co2_g=g, finish_reason=comp.finish_reason,
            )
            jf.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
            jf.flush()
            summary.graded += 1
            if on_done:
                on_done(entry, None)

        async def worker() -> None:
            while True:
                async with cond:
                    job = pick()
                    while job is None:
                        if not pending:
                            return
                        await cond.wait()
                        job = pick()
                    running[job[1].name] += 1
                try:
                    await one(*job)
                finally:
                    async with cond:
                        running[job[1].name] -= 1
                        left[job[0].id] -= 1
                        if left[job[0].id] == 0:
                            open_ids.remove(job[0].id)
                        cond.notify_all()

        tasks = [asyncio.create_task(worker()) for _ in range(max(1, min(concurrency, len(todo))))]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            summary.interrupted = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            summary.seconds = time.perf_counter() - start
            for p in providers.values():
                await p.aclose()
    return summary


def resolve_models(cfg: Config, names: Sequence[str] | None) -> list[ModelCard]:
    """Cards for the requested model names (default: every model in the config)."""
    names = list(dict.fromkeys(names)) if names else list(cfg.models)  # a name given twice runs once
    unknown = [n for n in names if n not in cfg.models]
    if unknown:
        raise QuestionFormatError(
            f"{cfg.source}: unknown model(s) {', '.join(unknown)}; known: {', '.join(cfg.models)}"
        )
    return [cfg.models[n] for n in names]


def check_out(question_files: Sequence[str | Path], out: str | Path) -> None:
    """Refuse an output (records, journal or their temporary files) that is one of the question files: the
    routing records would overwrite the questions."""
    out, journal = Path(out), journal_path(out)
    written = {out: "--out", journal: "--out's journal", out.with_name(out.name + ".tmp"): "--out's temporary file",
               journal.with_name(journal.name + ".tmp"): "--out's temporary journal"}
    resolved = {p.resolve(): what for p, what in written.items()}
    for q in question_files:
        what = resolved.get(Path(q).resolve())
        if what is not None:
            raise QuestionFormatError(f"{q} is both a question file and {what}: the routing records would overwrite "
                                      "the questions; choose another --out")


def check_writable(out: str | Path) -> None:
    """Refuse an ``out`` (or its journal) that cannot be written, before any model is called: found only when the
    records are written, every answer has been paid for, and a half-done write leaves files behind."""
    import os
    import tempfile

    out = Path(out)
    journal = journal_path(out)
    for p, what in ((out, "--out"), (journal, "--out's journal"),
                    (out.with_name(out.name + ".tmp"), "--out's temporary file")):
        if p.is_dir():
            raise QuestionFormatError(f"{what} {p} is a directory; name the file to write")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:  # a missing folder is made: check the one it goes in
        folder = folder.parent
    if not folder.is_dir():
        raise QuestionFormatError(f"{out}: cannot write: {folder} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".moai-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise QuestionFormatError(f"{out}: cannot write in {folder} ({e.strerror or e})") from None
    if journal.exists() and not os.access(journal, os.W_OK):  # appended to (the records file is replaced)
        raise QuestionFormatError(f"{journal}: cannot write (permission denied)")


def check_resumable(out: str | Path, overwrite: bool = False) -> None:
    """Refuse an ``out`` that already exists without a journal beside it, unless ``overwrite``.

    A run rebuilds ``out`` from its journal alone, so records written there before (by another tool, or whose
    journal was moved away) would be replaced by this run's. An empty file holds nothing to lose."""
    out = Path(out)
    journal = journal_path(out)
    if overwrite or journal.exists() or not out.exists() or (out.is_file() and out.stat().st_size == 0):
        return
    raise QuestionFormatError(f"{out} already exists and has no journal ({journal.name}) to resume from: this run "
                              "would replace it with its own records; choose another --out, or pass --overwrite")


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


def collect(
    question_files: Sequence[str | Path],
    cfg: Config,
    out: str | Path,
    *,
    models: Sequence[str] | None = None,
    limit: int | Sequence[int | None] | None = None,
    offset: int = 0,
    seed: int | None = None,
    concurrency: int = 1,
    on_done: ProgressHook | None = None,
    on_start: Callable[[Summary], None] | None = None,
    only_regrade: bool = False,
    overwrite: bool = False,
) -> Summary:
    """Synchronous entry point: load, run (resuming from the journal), rebuild the records file.

    The records file is rewritten even when interrupted, so what was graded is always in it. An existing records
    file with no journal is refused (``check_resumable``) unless ``overwrite``.
    """
    check_out(question_files, out)
    check_writable(out)
    cards = resolve_models(cfg, models)
    questions = select_questions(question_files, limit, offset=offset, seed=seed)
    journal = journal_path(out)
    if only_regrade:
        if not journal.is_file():  # regrading nothing would rewrite (empty) any records file already at --out
            raise QuestionFormatError(f"no journal to regrade at {journal}")
        n = len(read_journal(journal))
        changed = regrade(out, questions)
        return Summary(total=n, skipped=n, errors=[f"{changed} of {n} scores changed"])
    check_resumable(out, overwrite)
    carbon = CarbonModel(cfg.settings.carbon_zone, cfg.settings.grid_g_per_kwh)
    pending = Summary(total=len(questions) * len(cards), skipped=0)
    done = {(e.id, e.model) for e in read_journal(journal)}
    pending.skipped = sum((q.id, c.name) in done for q in questions for c in cards)
    if on_start:
        on_start(pending)
    summary = pending
    try:
        summary = asyncio.run(
            run_pairs(questions, cards, journal, concurrency=concurrency, carbon=carbon, seed=seed,
                      on_done=on_done)
        )
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        write_records(out, read_journal(journal))
    return summary


def main_guard() -> None:  # pragma: no cover - helper for `python -m moai.bench.collect`
    """Run the bench CLI's collect (handy when the main CLI is unavailable)."""
    from moai.bench.cli import app

    sys.argv.insert(1, "collect")
    app()


if __name__ == "__main__":  # pragma: no cover
    main_guard()
