"""The journal of a collection: one line per graded (question, model) pair, and the records rebuilt from it.

Each pair is appended to ``<out>.journal.jsonl`` the moment it is graded, so the journal alone says what a run
has done; the routing records file is always rebuilt from it, never edited in place.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moai.bench.questions import Question, grade


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


def parse_entry(line: bytes) -> Entry | None:
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
        e = parse_entry(line)
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
            if parse_entry(data[start:]) is not None:
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
