"""Build a routing dataset by running real models on graded questions.

Every (question, model) pair goes through the normal provider layer, is graded automatically, and is
appended to a journal beside the output (``<out>.journal.jsonl``) the moment it is graded. The routing
records are rebuilt from the journal, so a run can be stopped at any time (Ctrl-C, a crash, a reboot)
and re-run with the same command: finished pairs are skipped, nothing graded is lost.

Questions are read and graded by ``moai.bench.questions``; the journal and the records file are kept by
``moai.bench.journal``. Their names are importable from here too, as the one entry point of a collection.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from moai.bench.journal import (
    Entry,
    build_records,
    journal_path,
    mend_journal,
    parse_entry,
    read_journal,
    regrade,
    write_records,
)
from moai.bench.questions import (
    MATH_SHOT,
    MULTITASK_METRICS,
    NUMBER_SHOT,
    TASKS,
    Question,
    QuestionFormatError,
    Task,
    grade,
    interleave,
    load_questions,
    parse_question,
    per_file_limits,
    select_questions,
)
from moai.catalog import ModelCard
from moai.config import Config
from moai.providers import ChatParams, Provider, ProviderError, make_provider
from moai.providers.base import answered
from moai.telemetry.carbon import CarbonModel

__all__ = [
    "MATH_SHOT", "MULTITASK_METRICS", "NUMBER_SHOT", "TASKS", "Entry", "ProgressHook", "Question",
    "QuestionFormatError", "Summary", "Task", "build_records", "check_out", "check_resumable", "check_writable",
    "collect", "grade", "interleave", "journal_path", "load_questions", "main_guard", "mend_journal",
    "parse_entry", "parse_question", "per_file_limits", "read_journal", "regrade", "resolve_models", "run_pairs",
    "select_questions", "stop_local_generations", "write_records",
]


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
                comp = await answered(card.name, providers[card.name].complete(params))  # any failure: a failed pair
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
        stop_local_generations()
        raise
    finally:
        write_records(out, read_journal(journal))
    return summary


def stop_local_generations() -> None:
    """Stop the local models' generations an interrupted run left behind, and wait for them to leave llama.cpp:
    ``asyncio.run`` returns without waiting for their threads, and a process that exits under a running decode
    crashes (SIGSEGV) instead of exiting 130 (``moai.providers.llama_cpp.stop_generations``)."""
    local = sys.modules.get("moai.providers.llama_cpp")  # not loaded: no local model ran
    if local is not None:
        local.stop_generations()


def main_guard() -> None:  # pragma: no cover - helper for `python -m moai.bench.collect`
    """Run the bench CLI's collect (handy when the main CLI is unavailable)."""
    from moai.bench.cli import app

    sys.argv.insert(1, "collect")
    app()


if __name__ == "__main__":  # pragma: no cover
    main_guard()
