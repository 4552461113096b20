"""The registry of gated patterns: for each, where its matches can start in a long text.

A recognizer registers a pattern with `gated` when it compiles it; the gate reads the pattern's anchors (see
`privacy_anchors`) the first time a long text needs them, and `privacy_scan` tries the pattern only where a
candidate is.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from moai.gate.privacy_anchors import HEAD, MIN, Anchor, anchor_key, derive, fewest_digits, key_length, regex_parser

if TYPE_CHECKING:
    from moai.gate.privacy_index import Index


@dataclass
class PatternGate:
    """Where a pattern's matches can start in a long text."""

    rx: re.Pattern[str]
    partial: bool = False  # anchors cover only some paths; `finds` or `extra` find where the others start
    finds: tuple[tuple[str, bool, tuple[int, ...]], ...] = ()  # (string, in the fold, match start - its position)
    extra: Callable[[Index], Iterable[int]] | None = None
    min_digits: int | None = None  # None: read from the pattern
    anchors_only: bool = False  # only `finds` and `extra`, no anchors from the pattern
    # derived on first use
    ready: bool = False
    ok: bool = True
    anchors: list[Anchor] = field(default_factory=list)  # at alphanumeric starts
    anywhere: list[Anchor] = field(default_factory=list)  # found wherever they are
    digits: int = 0
    width: int = 0
    word: bool = False  # anchors are words (no digit to count): looked up with all such gates at once
    heads: dict[tuple[str, int, int], str] = field(default_factory=dict)  # regex source by (space, length, key)
    compiled: dict[tuple[str, int, int], re.Pattern[str]] = field(default_factory=dict)
    shapes: dict[int, np.ndarray] | None = None  # shape keys by length (None: some anchor has too short a shape)
    found: list[tuple[str, str, re.Pattern[str]]] = field(default_factory=list)  # `anywhere`, compiled
    lock: threading.Lock = field(default_factory=threading.Lock)

    def prepare(self) -> None:
        with self.lock:
            if self.ready:
                return
            self.ready = True
            if regex_parser is None:
                self.ok = False
                return
            tree = regex_parser.parse(self.rx.pattern, self.rx.flags)
            lo, hi = tree.getwidth()
            self.ok = lo > 0  # an empty match would need `finditer`'s own rules
            if not self.ok or self.anchors_only:
                pass
            elif (got := derive(tree, self.rx.flags, "fold", self.partial)
                  or derive(tree, self.rx.flags, "shape", self.partial)):
                self.anchors = got
            elif got := derive(tree, self.rx.flags, "fold", word=False, cap=HEAD):  # strings to find
                self.anywhere = got
            elif not (self.finds or self.extra):
                self.ok = False
            self.digits = fewest_digits(tree.data) if self.min_digits is None else self.min_digits
            self.width = hi if hi < 10**6 else 0
            # words of two characters or more: looked up with all such gates in one pass over a long text (one
            # character, "I", would bring a candidate at every word starting with it: read on demand only)
            self.word = not self.digits and all(a.space != "shape" and not a.key.startswith("0") and len(a.key) > 1
                                                for a in self.anchors)
            groups: dict[tuple[str, int, int], list[str]] = {}
            for a in self.anchors:
                n = key_length(a.key)
                groups.setdefault((a.space, n, anchor_key(a.key, n)), []).append(a.head)
            self.heads = {k: "|".join(sorted(set(v))) for k, v in groups.items()}
            if self.anchors and all(len(a.shape) >= MIN for a in self.anchors):
                by_length: dict[int, set[int]] = {}
                for a in self.anchors:
                    n = key_length(a.shape)
                    by_length.setdefault(n, set()).add(anchor_key(a.shape, n))
                self.shapes = {n: np.array(sorted(ks), dtype=np.uint32) for n, ks in by_length.items()}
            strings: dict[tuple[str, str], set[str]] = {}
            for a in self.anywhere:
                strings.setdefault((a.key, a.space), set()).add(a.head)
            self.found = [(key, space, re.compile("|".join(sorted(heads)))) for (key, space), heads in strings.items()]


    def head(self, group: tuple[str, int, int]) -> re.Pattern[str]:
        """The regex checking a candidate whose key is `group` (compiled when first needed: most never are)."""
        got = self.compiled.get(group)
        if got is None:
            got = self.compiled[group] = re.compile(self.heads[group])
        return got


_GATES: dict[re.Pattern[str], PatternGate] = {}


def gated(rx: re.Pattern[str], *, finds: Iterable[tuple[str, bool, Iterable[int]]] = (),
          extra: Callable[[Index], Iterable[int]] | None = None, partial: bool = False,
          anchors_only: bool = False, min_digits: int | None = None) -> re.Pattern[str]:
    """Register `rx` for gated scans of long texts; returns it.

    By default its anchors are read from the pattern. `finds` are strings every match (that the anchors do
    not find) holds, each with the offsets of the match's start from it (-3: three characters before), in the
    text as written or folded; `extra` yields more candidate starts from an `Index`. `partial` keeps the
    anchors of the paths that have one, for a pattern whose other paths `finds` or `extra` cover;
    `anchors_only` uses only those two. `min_digits` overrides the digits every match holds, for a pattern
    whose matches with fewer never count (and cannot hide one that does).
    """
    _GATES[rx] = PatternGate(rx, partial, tuple((s, f, tuple(o)) for s, f, o in finds), extra, min_digits, anchors_only)
    return rx


def ungated() -> list[str]:
    """Registered patterns that could not be gated (scanned in full: slower, never wrong)."""
    out = []
    for g in list(_GATES.values()):
        g.prepare()
        if not g.ok:
            out.append(g.rx.pattern[:80])
    return out

