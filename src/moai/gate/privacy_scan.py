"""Pattern scans over long texts for the privacy recognizers, at a cost that grows with the text, not with
the number of patterns times the text.

Python's `re` tries a pattern at every position of the text. Most recognizer patterns start with `\\b` and a
long alternation (a lexicon of a few hundred stems), and about sixty of them run over each text: seconds per
megabyte, during which the server's event loop waits. For a text of `LONG` characters or more, one pass
(numpy, `privacy_index`) finds where every alphanumeric run starts and its first four characters: as written,
folded (lower case, any digit as `0`) and as a shape (any letter `a`). A pattern is tried only where one of
its *anchors* starts: the first characters every match of it begins with, read from the pattern's own parse
tree (`privacy_anchors`; each pattern registered with `gated`, in `privacy_gates`), each with its own regex
(the pattern's first characters, same case rules) to check a candidate. A pattern whose matches need not begin
a word (`+33 …`, `-----BEGIN`, a vendor key glued to a word) is found from strings every match holds, and from
where its match starts relative to them. A pattern is tried with `match` at each candidate, on the whole text,
so lookbehinds, `\\b` and lookaheads read what a full scan reads: `finditer` here gives exactly the matches of
the pattern's own `finditer` (same spans, groups and order), only sooner.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from moai.gate.privacy_anchors import fold_char, shape_char
from moai.gate.privacy_gates import _GATES as _GATES  # every registered pattern, for a check of them all
from moai.gate.privacy_gates import PatternGate, gated, ungated
from moai.gate.privacy_index import Index

__all__ = ["LONG", "Index", "anchor_positions", "back_words", "clear", "finditer", "fold_char", "gated", "memo",
           "release", "search", "shape_char", "translate", "ungated"]

LONG = 4096  # characters; a shorter text is scanned in full (as fast as locating where to try; the common case)
_BACK_WORDS = 10  # see `back_words`

# ---------------------------------------------------------------- the indexes of the last long texts

_INDEX_LOCK = threading.Lock()
_INDEXES: dict[str, Index] = {}  # the last few long texts: the recognizers of one text share its index


def index(text: str) -> Index:
    """The index of a long text (kept for the next recognizer reading the same text)."""
    with _INDEX_LOCK:
        got = _INDEXES.get(text)
    if got is None:
        got = Index(text)
        with _INDEX_LOCK:
            while len(_INDEXES) >= 2:
                _INDEXES.pop(next(iter(_INDEXES)))
            _INDEXES[text] = got
    return got


def translate(text: str, table: dict[int, str]) -> str:
    """`text.translate(table)` for a table of one character for one character: a long text that is not ASCII
    is mapped in one numpy pass (`str.translate` looks each of its characters up in a dict)."""
    if text.isascii() and not any(k < 128 for k in table):
        return text
    if len(text) < LONG:
        return text.translate(table)
    keys = _TRANSLATE_KEYS.get(id(table))
    if keys is None:
        keys = _TRANSLATE_KEYS[id(table)] = (np.array(sorted(table), dtype=np.uint32),
                                             np.array([ord(table[k]) for k in sorted(table)], dtype=np.uint32))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    where = np.flatnonzero(codes >= keys[0][0])  # the table maps a few non-ASCII characters: look at those only
    at = np.minimum(np.searchsorted(keys[0], codes[where]), len(keys[0]) - 1)
    hit = keys[0][at] == codes[where]
    if not hit.any():
        return text
    out = codes.copy()
    out[where[hit]] = keys[1][at[hit]]
    return out.tobytes().decode("utf-32-le")


_TRANSLATE_KEYS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def release(text: str) -> None:
    """Forget a text's index once its scan is done (an index takes a few times the text's size)."""
    with _INDEX_LOCK:
        _INDEXES.pop(text, None)


def clear() -> None:
    """Forget the indexes of the last long texts (for timings of a first sight; memory)."""
    with _INDEX_LOCK:
        _INDEXES.clear()


def _gate(rx: re.Pattern[str], text: str) -> PatternGate | None:
    if len(text) < LONG:
        return None
    gate = _GATES.get(rx)
    if gate is None:
        return None
    gate.prepare()
    return gate if gate.ok else None


def finditer(rx: re.Pattern[str], text: str, pos: int = 0, endpos: int | None = None) -> Iterator[re.Match[str]]:
    """`rx.finditer(text, pos, endpos)`, trying a gated pattern only where it can match in a long text."""
    end = len(text) if endpos is None else min(endpos, len(text))
    if _gate(rx, text) is None:
        return rx.finditer(text, pos, end)
    return _gated(rx, text, pos, end)


def _gated(rx: re.Pattern[str], text: str, pos: int, end: int) -> Iterator[re.Match[str]]:
    cands = index(text).candidates(rx)
    last = pos
    for s in cands[bisect_left(cands, pos):]:
        if s >= end:
            break
        if s < last:
            continue
        m = rx.match(text, s, end)
        if m is not None:
            yield m
            last = m.end()


def search(rx: re.Pattern[str], text: str, pos: int = 0, endpos: int | None = None) -> re.Match[str] | None:
    """`rx.search(text, pos, endpos)`, gated like `finditer`."""
    end = len(text) if endpos is None else min(endpos, len(text))
    if _gate(rx, text) is None:
        return rx.search(text, pos, end)
    return next(_gated(rx, text, pos, end), None)


def anchor_positions(ix: Index, rx: re.Pattern[str]) -> list[int]:
    """Where the gated pattern `rx` can start in the indexed text (read by another gate's `extra`)."""
    return ix.candidates(rx)


def memo(text: str, key: Any, compute: Callable[[], Any]) -> Any:
    """`compute()` once per long text (several recognizers ask the same whole-text question)."""
    if len(text) < LONG:
        return compute()
    ix = index(text)
    if key not in ix.memo:
        ix.memo[key] = compute()
    return ix.memo[key]


# ---------------------------------------------------------------- walking back from an anchor


def back_words(text: str, at: int, allowed: str = " '-", limit: int = _BACK_WORDS) -> list[int]:
    """Starts of the (up to `limit`) word-character runs just before `at`, when only word characters and
    characters of `allowed` lie between: where a match may start whose words run up to a word at `at`."""
    out: list[int] = []
    i = at
    while i > 0 and len(out) < limit:
        ch = text[i - 1]
        if ch.isalnum() or ch == "_":
            j = i - 1
            while j > 0 and (text[j - 1].isalnum() or text[j - 1] == "_"):
                j -= 1
            out.append(j)
            i = j
        elif ch in allowed:
            i -= 1
        else:
            break
    return out
