"""Routing records (shared/data/MANIFEST.md format): load, validate, and turn into score matrices.

Any number of files, any set of models per record, missing models allowed. A malformed line raises
``RecordError`` naming the file, the line and what is wrong, so the CLI can print one useful line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def located(path: str | Path, line: int, reason: str) -> str:
    """'file:line: reason', or 'file: reason' for the file as a whole (line 0)."""
    return f"{path}:{line}: {reason}" if line else f"{path}: {reason}"


class RecordError(ValueError):
    """A routing-record file is malformed: carries file, line and reason."""

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(located(path, line, reason))


@dataclass
class RoutingRecord:
    """One query with how well each model answered it (and optionally what that cost)."""

    id: str
    prompt: str
    scores: dict[str, float]
    benchmark: str = ""
    cost_usd: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)  # measured end-to-end, when collected
    energy_kwh: dict[str, float] = field(default_factory=dict)  # estimated per answer, when collected
    category: str | None = None
    answer: Any = None
    turns: list[str] | None = None
    source: str = ""  # file it came from
    line: int = 0  # line in that file (0: not read from a file)
    raw_id: str | int | None = None  # the id as the file wrote it: outputs give an int id back as an int

    @property
    def out_id(self) -> str | int:
        """The id to write back: the file's own value (type kept), else the string id."""
        return self.id if self.raw_id is None else self.raw_id

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}]


# The scales shared/data/MANIFEST.md allows: 0/1, a 0-1 metric, a 1-10 judge score. Read on none of them, a score
# was averaged and trained on as it came (-3 pulled a mean below 0; 250 read as a judge score far above 10).
# The floor leaves room for a 0-1 metric that dips a little under 0 (RouterArena's NarrativeQA metric has
# -0.033 in routerarena.jsonl): training clips it to 0, as before.
SCORE_FLOOR, SCORE_CEILING = -0.5, 10.0


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse(obj: Any, path: Path, ln: int, need_scores: bool, check_scale: bool = False) -> RoutingRecord:
    def bad(reason: str) -> RecordError:
        return RecordError(path, ln, reason)

    if not isinstance(obj, dict):
        raise bad(f"expected a JSON object, got {type(obj).__name__}")
    rid = obj.get("id")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid) == "":
        raise bad("missing or invalid 'id' (a non-empty string, or an integer)")
    prompt = obj.get("prompt")
    if prompt in (None, "") and isinstance(obj.get("turns"), list) and obj["turns"]:  # the prompt is the first turn
        prompt = obj["turns"][0]
    if not isinstance(prompt, str):
        raise bad(f"record {rid!r}: missing or non-string 'prompt'")
    scores = obj.get("scores", {} if not need_scores else None)
    if not isinstance(scores, dict):
        raise bad(f"record {rid!r}: 'scores' must be an object {{model: number}}")
    if need_scores and not scores:
        raise bad(f"record {rid!r}: 'scores' is empty")
    for m, s in scores.items():
        if not _num(s):
            raise bad(f"record {rid!r}: score for model {m!r} is not a finite number: {s!r}")
        if check_scale and not SCORE_FLOOR <= s <= SCORE_CEILING:
            raise bad(f"record {rid!r}: score for model {m!r} is {s!r}, outside every scale a score may be on "
                      "(0/1, a 0-1 metric or a 1-10 judge score)")

    def per_model(key: str) -> dict[str, Any]:
        """An optional {model: non-negative number} field; absent or null is empty, anything else must fit."""
        value = obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or any(not _num(v) or v < 0 for v in value.values()):
            raise bad(f"record {rid!r}: {key!r} must be an object {{model: non-negative number}}")
        return value

    cost, latency, energy = per_model("cost_usd"), per_model("latency_ms"), per_model("energy_kwh")
    tokens = obj.get("tokens")
    tokens = {} if tokens is None else tokens
    if not isinstance(tokens, dict) or any(
        not isinstance(t, dict) or any(not _num(n) or n < 0 for n in t.values()) for t in tokens.values()
    ):
        raise bad(f"record {rid!r}: 'tokens' must be an object {{model: {{input: n, output: n}}}}")
    turns = obj.get("turns")
    if turns is not None and not (isinstance(turns, list) and all(isinstance(t, str) for t in turns)):
        raise bad(f"record {rid!r}: 'turns' must be a list of strings")
    cat = obj.get("category")
    return RoutingRecord(
        id=str(rid),
        raw_id=rid,
        prompt=prompt,
        scores={str(m): float(s) for m, s in scores.items()},
        benchmark=str(obj.get("benchmark") or ""),
        cost_usd={str(m): float(c) for m, c in cost.items()},
        tokens=tokens,
        latency_ms={str(m): float(v) for m, v in latency.items()},
        energy_kwh={str(m): float(v) for m, v in energy.items()},
        category=None if cat is None else str(cat),
        answer=obj.get("answer"),
        turns=turns,
        source=str(path),
        line=ln,
    )


def read_json_lines(path: Path, error: Callable[[int, str], Exception]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of a UTF-8 JSON-lines file (a leading BOM, as
    Windows tools write, is skipped).

    ``error(line, reason)`` builds what is raised for a file that cannot be read (line 0) or a line that is
    not JSON, so each loader keeps its own exception type."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise error(0, f"cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise error(0, f"not UTF-8 text ({e.reason})") from None
    for ln, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 occurs inside JSON strings
        if line.strip():
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(ln, f"invalid JSON ({e.msg} at column {e.colno})") from None
            yield ln, value


def load_records(paths: str | Path | Iterable[str | Path], need_scores: bool = True,
                 check_scale: bool = False) -> list[RoutingRecord]:
    """Load and validate routing records from one or more JSONL files.

    ``check_scale`` also refuses a score on none of the scales routing records use (``SCORE_FLOOR``,
    ``SCORE_CEILING``): the gate and `bench report` ask for it; `moai tune` checks scales per benchmark itself.

    Duplicate ids are kept (public sets have a few, e.g. RouterBench ARC: same prompt, other scores), so a file
    that was valid stays valid; ``duplicate_ids`` finds them for a warning. Splits should group by prompt.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[RoutingRecord] = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise RecordError(path, 0, "is a directory, not a records file" if path.is_dir() else "no such file")
        n_before = len(out)
        for ln, obj in read_json_lines(path, lambda ln, reason, path=path: RecordError(path, ln, reason)):
            out.append(_parse(obj, path, ln, need_scores, check_scale))
        if len(out) == n_before:
            raise RecordError(path, 0, "no records in file")
    return out


def duplicate_ids(records: Sequence[RoutingRecord]) -> list[tuple[RoutingRecord, RoutingRecord]]:
    """(first, repeat) for every record whose id was already used by an earlier one, in load order."""
    first: dict[str, RoutingRecord] = {}
    out: list[tuple[RoutingRecord, RoutingRecord]] = []
    for r in records:
        if r.id in first:
            out.append((first[r.id], r))
        else:
            first[r.id] = r
    return out


def duplicate_warning(records: Sequence[RoutingRecord]) -> str | None:
    """One line naming the first repeated id and both of its lines (and how many more), or None when ids are unique."""
    dups = duplicate_ids(records)
    if not dups:
        return None
    a, b = dups[0]
    more = f" ({len(dups) - 1} more repeated ids)" if len(dups) > 1 else ""
    return f"record id {b.id!r} at {b.source}:{b.line} repeats {a.source}:{a.line}{more}; both records are used"


def model_names(records: Sequence[RoutingRecord]) -> list[str]:
    """All models seen, most frequent first (ties by name) so the order is stable."""
    counts: dict[str, int] = {}
    for r in records:
        for m in r.scores:
            counts[m] = counts.get(m, 0) + 1
    return sorted(counts, key=lambda m: (-counts[m], m))


def score_matrix(records: Sequence[RoutingRecord], models: Sequence[str]) -> np.ndarray:
    """(n_records, n_models) scores on 0-1 as training reads them, NaN where a model has no score.

    A record on the 1-10 judge scale (``moai.bench.scales``, decided from all of its models' scores) is mapped
    (y - 1) / 9. Nothing is clipped: on a file with one scale throughout, the map is affine, so a pair's APGR and
    CPT are those of the raw scores."""
    from moai.bench.scales import record_scales

    y = np.full((len(records), len(models)), np.nan)
    col = {m: j for j, m in enumerate(models)}
    for i, r in enumerate(records):
        for m, s in r.scores.items():
            if m in col:
                y[i, col[m]] = s
    return normalise_scores(y, record_scales(records))


def cost_matrix(records: Sequence[RoutingRecord], models: Sequence[str]) -> np.ndarray:
    """(n_records, n_models) USD actually paid, NaN where unknown."""
    c = np.full((len(records), len(models)), np.nan)
    col = {m: j for j, m in enumerate(models)}
    for i, r in enumerate(records):
        for m, v in r.cost_usd.items():
            if m in col:
                c[i, col[m]] = v
    return c


def normalise_scores(y: np.ndarray, judge: np.ndarray | None = None, label: str = "the scores") -> np.ndarray:
    """A copy of the (n_records, n_models) scores with the rows on the 1-10 judge scale mapped to 0-1, (y - 1) / 9;
    0/1 and 0-1 rows pass through.

    ``judge`` flags those rows (``moai.bench.scales.record_scales``); without it they are read from ``y`` itself,
    its rows taken as one benchmark named ``label``."""
    from moai.bench.scales import judge_rows

    out = np.array(y, dtype=float)
    flags = judge_rows(list(out), label) if judge is None else np.asarray(judge, dtype=bool)
    out[flags] = (out[flags] - 1.0) / 9.0
    return out
