"""Pattern scans over long texts for the privacy recognizers, at a cost that grows with the text, not with
the number of patterns times the text.

Python's `re` tries a pattern at every position of the text. Most recognizer patterns start with `\\b` and a
long alternation (a lexicon of a few hundred stems), and about sixty of them run over each text: seconds per
megabyte, during which the server's event loop waits. For a text of `LONG` characters or more, one pass here
(numpy) finds where every alphanumeric run starts and its first four characters: as written, folded (lower
case, any digit as `0`) and as a shape (any letter `a`). A pattern is tried only where one of its *anchors*
starts: the first characters every match of it begins with, read from the pattern's own parse tree, each with
its own regex (the pattern's first characters, same case rules) to check a candidate. A pattern whose matches
need not begin a word (`+33 …`, `-----BEGIN`, a vendor key glued to a word) is found from strings every match
holds, and from where its match starts relative to them. A pattern is tried with `match` at each candidate,
on the whole text, so lookbehinds, `\\b` and lookaheads read what a full scan reads: `finditer` here gives
exactly the matches of the pattern's own `finditer` (same spans, groups and order), only sooner.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

try:  # the parse tree of a pattern (Python's own, the one `re.compile` builds)
    import re._constants as _sc
    import re._parser as _sp
except ImportError:  # pragma: no cover - no such module: every pattern is then scanned in full
    _sp = _sc = None  # type: ignore[assignment]

__all__ = ["LONG", "Index", "anchor_positions", "back_words", "clear", "finditer", "fold_char", "gated", "memo",
           "release", "search", "shape_char", "translate", "ungated"]

LONG = 4096  # characters; a shorter text is scanned in full (as fast as locating where to try; the common case)
_HEAD = 10  # elements of a pattern read for the regex that checks a candidate
_MIN = 1  # characters an anchor has at the least
_CLASS = 6  # a character class folding to more values than this ends an anchor
_KEY = 8  # characters of an anchor looked up at each start, at most
_KEYS = (1, 2, 3, 4, 6, 8)  # the lengths looked up (an anchor uses the longest it has)
_STATES = 256  # ways of reading a pattern followed at once, at most (past that, each ends where it is)
_BACK_WORDS = 10  # see `back_words`
_MASK = (1 << 32) - 1  # keys are 32-bit hashes (two that collide only bring a candidate the head then drops)

# A character, and the characters `re.IGNORECASE` matches it with, fold alike: lower case (the simple mapping
# `re` uses: "İ" is "i" to it), the dotless i and long s as `re` pairs them; any decimal digit (what `\d`
# matches) as 0. tests/privacy/test_scan_scale_and_model_path.py checks this against `re` itself.
_SPECIAL = {"\u0130": "i", "\u0131": "i", "\u017f": "s"}


def fold_char(ch: str) -> str:
    """One character as anchors compare it: lower case, any decimal digit as "0"."""
    if ch.isdecimal():
        return "0"
    low = _SPECIAL.get(ch) or ch.lower()
    return low if len(low) == 1 else ch


def shape_char(ch: str) -> str:
    """One character's shape: any letter "a", any decimal digit "0", anything else folded."""
    if ch.isdecimal():
        return "0"
    return "a" if ch.isalpha() else fold_char(ch)


def _as_written(ch: str) -> str:
    return ch


_SPACES: dict[str, Callable[[str], str]] = {"raw": _as_written, "fold": fold_char, "shape": shape_char}
_TABLE_128 = {name: np.array([ord(f(chr(i))) for i in range(128)], dtype=np.uint32) for name, f in _SPACES.items()}
_TRANSLATE_128 = {name: str.maketrans({chr(i): f(chr(i)) for i in range(128)}) for name, f in _SPACES.items()}
_ASCII_ALNUM = np.array([chr(i).isalnum() for i in range(128)], dtype=np.bool_)


# ---------------------------------------------------------------- anchors from a pattern's parse tree


@dataclass(frozen=True)
class Anchor:
    """How the matches along one path of a pattern begin: `key` (characters in `space`: "raw" as written,
    "fold" or "shape") to look up, `head` (a regex of the path's first characters, with the pattern's own
    case rules) to check a candidate with."""

    key: str
    space: str
    head: str
    shape: str = ""  # the path's first characters as shapes (see `shape_char`), a second key to filter with


class _Unanchored(Exception):
    """A path through the pattern gives no usable anchor."""


@dataclass(frozen=True)
class _State:
    """One way of reading a pattern's first elements."""

    key: str = ""  # the characters read, in the walk's fold, while each has few enough forms
    raw: str = ""  # the characters read, as written, while each is a case-sensitive literal
    shape: str = ""  # the characters read, as shapes, while each has few enough shapes
    head: str = ""  # the elements read, as regex source
    size: int = 0  # elements in `head`
    guard: bool = False  # a guard (`\b`, a lookbehind, `^`) says the match starts an alphanumeric run
    icase: bool = False  # case is ignored here
    open_key: bool = True
    open_raw: bool = True
    open_shape: bool = True


_CATEGORIES = {"CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s",
               "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W"}


def _class_items(items: list[tuple[Any, Any]], digits: bool) -> tuple[list[str] | None, str] | None:
    """The characters a character class lists (`\\d` as "0" when `digits`; None when it lists more than a few
    hundred, or a category, or is negated), and the class as regex source (None: none to write)."""
    chars: list[str] | None = []
    src: list[str] = []
    for op, av in items:
        if op is _sc.NEGATE:
            chars = None
            src.append("^")
        elif op is _sc.LITERAL:
            if chars is not None:
                chars.append(chr(av))
            src.append(re.escape(chr(av)))
        elif op is _sc.RANGE:
            if chars is not None:
                chars = chars + [chr(c) for c in range(av[0], av[1] + 1)] if av[1] - av[0] <= 400 else None
            src.append(f"{re.escape(chr(av[0]))}-{re.escape(chr(av[1]))}")
        elif op is _sc.CATEGORY and str(av) in _CATEGORIES:
            if chars is not None:
                chars = chars + ["0"] if digits and str(av) == "CATEGORY_DIGIT" else None
            src.append(_CATEGORIES[str(av)])
        else:
            return None
    return chars, "[" + "".join(src) + "]"


def _covers_alnum(items: list[tuple[Any, Any]]) -> bool:
    """Whether a one-character class matches every letter and digit (`\\w`, `[^\\W_]`, ...)."""
    if len(items) != 1 or items[0][0] is not _sc.IN:
        return False
    cls = items[0][1]
    if cls and cls[0][0] is _sc.NEGATE:
        rest = set(cls[1:])
        return rest <= {(_sc.CATEGORY, _sc.CATEGORY_NOT_WORD), (_sc.CATEGORY, _sc.CATEGORY_UNI_NOT_WORD),
                        (_sc.LITERAL, ord("_"))}
    return any(op is _sc.CATEGORY and av in (_sc.CATEGORY_WORD, _sc.CATEGORY_UNI_WORD) for op, av in cls)


class _Walk:
    """Every way a pattern's first elements can read: a key (characters folded by `fold`: `fold_char`,
    `shape_char`, or as written; up to `cap`) and a head (up to `_HEAD` elements, as regex source). With
    `word`, a match must start an alphanumeric run (a guard, `\\b` or a lookbehind, says so)."""

    def __init__(self, fold: Callable[[str], str], partial: bool, word: bool, cap: int) -> None:
        self.fold = fold
        self.partial = partial  # paths without an anchor are dropped (the gate covers them otherwise)
        self.word = word
        self.cap = cap
        # "0" stands for any digit in the folds; a string found anywhere ends before one (fewer strings to find)
        self.digits = word and fold is not _as_written
        self.done: set[tuple[str, str, str, str]] = set()

    def close(self, st: _State) -> None:
        if len(st.key) >= _MIN:
            self.done.add((st.key, st.raw, st.head, st.shape))
        elif not self.partial:
            raise _Unanchored(st.key)

    def extend(self, st: _State, chars: list[str] | None, atom: str, exact: bool) -> set[_State]:
        """`st` reading one more element: `chars` it matches (None: too many to list), as `atom`."""
        if not st.size and self.word and not (st.guard and chars and all(ch.isalnum() for ch in chars)):
            if self.partial:  # a match that need not start a word: not this gate's to find
                return set()
            raise _Unanchored(atom)
        head, size = st.head + atom, st.size + 1
        raw, open_raw = (st.raw + chars[0], len(st.raw) + 1 < self.cap) if st.open_raw and exact and chars \
            else (st.raw, False)
        key_ok = shape_ok = False
        if chars is not None:
            pairs = {(self.fold(ch), shape_char(ch)) for ch in chars}  # a character's fold and shape go together
            key_ok = st.open_key and len({f for f, _ in pairs}) <= _CLASS
            shape_ok = st.open_shape and len({sh for _, sh in pairs}) <= 2
        if not key_ok and not shape_ok:
            return {replace(st, raw=raw, head=head, size=size, open_key=False, open_raw=open_raw, open_shape=False)}
        return {replace(st, key=st.key + f, raw=raw, shape=st.shape + sh, head=head, size=size,
                        open_key=key_ok and len(st.key) + 1 < self.cap, open_raw=open_raw,
                        open_shape=shape_ok and len(st.shape) + 1 < _KEY)
                for f, sh in {(f if key_ok else "", sh if shape_ok else "") for f, sh in pairs}}

    def atom(self, items: Any, icase: bool) -> str | None:
        """Regex source of a one-character element (a literal or a class), None for anything else."""
        items = list(items)
        if len(items) != 1:
            return None
        op, av = items[0]
        if op is _sc.LITERAL:
            src = re.escape(chr(av))
        elif op is _sc.IN and (got := _class_items(av, self.digits)) is not None:
            src = got[1]
        else:
            return None
        return f"(?i:{src})" if icase else src

    def seq(self, items: Any, states: set[_State]) -> set[_State]:
        """Open states after `items`, closing those that can read no further."""
        for op, av in list(items):
            nxt: set[_State] = set()
            for st in states:
                nxt |= self.item(op, av, st)
            states = set()
            for st in nxt:
                if st.size >= _HEAD or len(nxt) > _STATES:  # too many ways to read on: each ends here
                    self.close(st)
                else:
                    states.add(st)
            if not states:
                break
        return states

    def item(self, op: Any, av: Any, st: _State) -> set[_State]:  # noqa: C901, PLR0911 - one case per node kind
        c = _sc
        if not (st.open_key or st.open_raw) and op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT) \
                and av[0] != av[1] and av[1] != 1:
            # the key is read: a head goes on through a repeated character as such (`[ -]{0,2}`), through the
            # mandatory repeats of anything longer, and no further (counting its repeats made heads by the
            # thousand)
            atom = self.atom(av[2], st.icase)
            if atom is not None:
                most = "" if av[1] >= c.MAXREPEAT else str(av[1])
                return {replace(st, head=f"{st.head}{atom}{{{av[0]},{most}}}", size=st.size + 1, open_shape=False)}
            for s in self.item(op, (av[0], av[0], av[2]), st) if av[0] else {st}:
                self.close(s)
            return set()
        if op is c.LITERAL:
            atom = re.escape(chr(av))
            return self.extend(st, [chr(av)], f"(?i:{atom})" if st.icase else atom, not st.icase)
        if op is c.IN:
            got = _class_items(av, self.digits)
            if got is None:
                self.close(st)
                return set()
            chars, src = got
            return self.extend(st, chars, f"(?i:{src})" if st.icase else src, False)
        if op is c.AT:
            starts = av in (c.AT_BOUNDARY, c.AT_UNI_BOUNDARY, c.AT_BEGINNING, c.AT_BEGINNING_LINE,
                            c.AT_BEGINNING_STRING)
            return {replace(st, guard=True)} if starts and not st.size else {st}
        if op in (c.ASSERT, c.ASSERT_NOT):
            direction, sub = av
            behind = op is c.ASSERT_NOT and direction == -1 and not st.size and _covers_alnum(list(sub))
            atom = self.atom(sub, st.icase)  # a one-character lookaround checks a candidate too
            if atom is not None:
                kind = ("(?<" if direction == -1 else "(?") + ("!" if op is c.ASSERT_NOT else "=")
                st = replace(st, head=f"{st.head}{kind}{atom})")
            return {replace(st, guard=True)} if behind else {st}
        if op is c.SUBPATTERN:
            _, add, remove, sub = av
            inner = (st.icase or bool(add & re.IGNORECASE)) and not remove & re.IGNORECASE
            return {replace(s, icase=st.icase) for s in self.seq(sub, {replace(st, icase=inner)})}
        if op is c.ATOMIC_GROUP:
            return self.seq(av, {st})
        if op is c.BRANCH:
            out: set[_State] = set()
            for alt in av[1]:
                out |= self.seq(alt, {st})
            return out
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            lo, hi, sub = av
            out, frontier, k = set(), {st}, 0
            while frontier:
                if k >= lo:
                    out |= frontier
                if k >= hi or k > lo + _HEAD:
                    if k < lo:
                        for s in frontier:
                            self.close(s)
                    break
                grown = self.seq(sub, set(frontier))
                if grown <= frontier and k >= lo:  # an iteration that reads nothing: no new way to read on
                    break
                frontier, k = grown, k + 1
            return out
        if op is c.GROUPREF_EXISTS:
            _, yes, no = av
            return self.seq(yes, {st}) | (self.seq(no, {st}) if no is not None else {st})
        self.close(st)  # any character, a back reference: the anchor ends here
        return set()


def _derive(tree: Any, flags: int, space: str, partial: bool = False, word: bool = True,
            cap: int = _KEY) -> list[Anchor] | None:
    """The anchors of a pattern (its parse tree): how every match starting an alphanumeric run begins
    (`word`), or every match wherever it starts. None: some path has none."""
    try:
        walk = _Walk(_SPACES[space], partial, word, cap)
        for st in walk.seq(tree.data, {_State(icase=bool(flags & re.IGNORECASE))}):
            walk.close(st)
    except (_Unanchored, RecursionError):
        return None
    if not walk.done:
        return None
    return sorted({Anchor(raw, "raw", head, shape) if len(raw) >= min(len(key), _KEY) and len(raw) >= 2
                   else Anchor(key, space, head, shape) for key, raw, head, shape in walk.done},
                  key=lambda a: (a.key, a.space, a.head, a.shape))


def _min_digits(items: Any) -> int:
    """Decimal digits every match of `items` holds at the least (`\\d`, or a class of digits only)."""
    total = 0
    for op, av in list(items):
        if op is _sc.LITERAL:
            total += chr(av).isdecimal()
        elif op is _sc.IN:
            chars = (_class_items(av, True) or (None, ""))[0]
            total += bool(chars) and all(ch.isdecimal() for ch in chars)  # type: ignore[union-attr]
        elif op is _sc.SUBPATTERN:
            total += _min_digits(av[3])
        elif op is _sc.ATOMIC_GROUP:
            total += _min_digits(av)
        elif op is _sc.BRANCH:
            total += min(_min_digits(alt) for alt in av[1])
        elif op in (_sc.MAX_REPEAT, _sc.MIN_REPEAT, _sc.POSSESSIVE_REPEAT):
            total += av[0] * _min_digits(av[2])
    return total


def _key_length(key: str) -> int:
    return max(n for n in _KEYS if n <= len(key))


def _key(word: str, n: int) -> int:
    """The first `n` characters of an anchor as one number (as `Index.keys` computes it at each start)."""
    k = 0
    for ch in word[:n]:
        k = (k * 1000003 + ord(ch)) & _MASK
    return k


# ---------------------------------------------------------------- gates


@dataclass
class _Gate:
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
            if _sp is None:
                self.ok = False
                return
            tree = _sp.parse(self.rx.pattern, self.rx.flags)
            lo, hi = tree.getwidth()
            self.ok = lo > 0  # an empty match would need `finditer`'s own rules
            if not self.ok or self.anchors_only:
                pass
            elif (got := _derive(tree, self.rx.flags, "fold", self.partial)
                  or _derive(tree, self.rx.flags, "shape", self.partial)):
                self.anchors = got
            elif got := _derive(tree, self.rx.flags, "fold", word=False, cap=_HEAD):  # strings to find
                self.anywhere = got
            elif not (self.finds or self.extra):
                self.ok = False
            self.digits = _min_digits(tree.data) if self.min_digits is None else self.min_digits
            self.width = hi if hi < 10**6 else 0
            # words of two characters or more: looked up with all such gates in one pass over a long text (one
            # character, "I", would bring a candidate at every word starting with it: read on demand only)
            self.word = not self.digits and all(a.space != "shape" and not a.key.startswith("0") and len(a.key) > 1
                                                for a in self.anchors)
            groups: dict[tuple[str, int, int], list[str]] = {}
            for a in self.anchors:
                n = _key_length(a.key)
                groups.setdefault((a.space, n, _key(a.key, n)), []).append(a.head)
            self.heads = {k: "|".join(sorted(set(v))) for k, v in groups.items()}
            if self.anchors and all(len(a.shape) >= _MIN for a in self.anchors):
                by_length: dict[int, set[int]] = {}
                for a in self.anchors:
                    n = _key_length(a.shape)
                    by_length.setdefault(n, set()).add(_key(a.shape, n))
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


_GATES: dict[re.Pattern[str], _Gate] = {}


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
    _GATES[rx] = _Gate(rx, partial, tuple((s, f, tuple(o)) for s, f, o in finds), extra, min_digits, anchors_only)
    return rx


def ungated() -> list[str]:
    """Registered patterns that could not be gated (scanned in full: slower, never wrong)."""
    out = []
    for g in list(_GATES.values()):
        g.prepare()
        if not g.ok:
            out.append(g.rx.pattern[:80])
    return out


# ---------------------------------------------------------------- one text's index


_SPREAD = np.uint32(0x9E3779B1)


def _sorted_in(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """keys[i] in table (sorted, non-empty): a bitmap of hashed keys first, a binary search for the few that
    pass it."""
    bits = np.zeros(1 << 16, dtype=np.bool_)
    bits[(table * _SPREAD) >> np.uint32(16)] = True
    out = bits[(keys * _SPREAD) >> np.uint32(16)]
    maybe = np.flatnonzero(out)
    if len(maybe):
        at = np.minimum(np.searchsorted(table, keys[maybe]), len(table) - 1)
        out[maybe] = table[at] == keys[maybe]
    return out


class Index:
    """What the gates read of one long text: where its alphanumeric runs start, and the first characters there
    (as written, folded, as a shape), its folded text, its digits."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.memo: dict[Any, Any] = {}
        self._cands: dict[re.Pattern[str], list[int]] = {}
        self._keys: dict[tuple[str, int], np.ndarray] = {}
        n = len(text)
        if text.isascii():
            self._codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
            narrow, wide = self._codes, None
            alnum = _ASCII_ALNUM[narrow]
            digit = (narrow >= 48) & (narrow <= 57)
        else:
            self._codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            narrow = np.minimum(self._codes, 127)
            alnum, digit = _ASCII_ALNUM[narrow], (self._codes >= 48) & (self._codes <= 57)
            wide = self._codes > 127
            if wide.any():  # each distinct non-ASCII character is classified once
                self._uniq, self._inv = np.unique(self._codes[wide], return_inverse=True)
                chars = [chr(c) for c in self._uniq.tolist()]
                alnum[wide] = np.array([ch.isalnum() for ch in chars], dtype=np.bool_)[self._inv]
                digit[wide] = np.array([ch.isdecimal() for ch in chars], dtype=np.bool_)[self._inv]
            else:
                wide = None
        self._wide = wide
        before = np.empty(n, dtype=np.bool_)
        before[:1] = False
        before[1:] = alnum[:-1]
        self.starts = np.flatnonzero(alnum & ~before)
        self.digit_count = np.zeros(n + 1, dtype=np.int32)  # digits before each position
        np.cumsum(digit, dtype=np.int32, out=self.digit_count[1:])
        self._folds: dict[str, str] = {}

    def codes(self, space: str) -> np.ndarray:
        """The text's characters in `space` ("raw", "fold" or "shape"), as numbers (not kept: a text's worth)."""
        if space == "raw":
            return self._codes
        got = _TABLE_128[space][np.minimum(self._codes, 127)]
        if self._wide is not None:
            f = _SPACES[space]
            got[self._wide] = np.array([ord(f(chr(c))) for c in self._uniq.tolist()], dtype=np.uint32)[self._inv]
        return got

    def folded(self, space: str) -> str:
        """The text in `space`, character for character."""
        got = self._folds.get(space)
        if got is None:
            if space == "raw":
                got = self.text
            elif self._codes.dtype == np.uint8:
                got = self.text.translate(_TRANSLATE_128[space])
            else:
                got = self.codes(space).tobytes().decode("utf-32-le")
            self._folds[space] = got
        return got

    def keys(self, space: str, n: int) -> np.ndarray:
        """At each start, its first `n` characters in `space` as one number (see `_key`); all lengths of a
        space are read in one go."""
        got = self._keys.get((space, n))
        if got is None:
            codes, s = self.codes(space), self.starts
            key = np.zeros(len(s), dtype=np.uint32)
            for i in range(max(_KEYS)):
                at = s + i
                nxt = codes[np.minimum(at, len(codes) - 1)].astype(np.uint32)
                nxt[at >= len(codes)] = 0  # past the end of the text
                key = key * np.uint32(1000003) + nxt
                if i + 1 in _KEYS:
                    self._keys[(space, i + 1)] = key
            got = self._keys[(space, n)]
        return got

    def digits_in(self, starts: np.ndarray, width: int) -> np.ndarray:
        """Decimal digits in [s, s + width) for each start s."""
        c = self.digit_count
        return c[np.minimum(starts + width, len(c) - 1)] - c[starts]

    def candidates(self, rx: re.Pattern[str]) -> list[int]:
        """Sorted positions where a match of the gated `rx` can start."""
        got = self._cands.get(rx)
        if got is None:
            gate = _GATES[rx]
            gate.prepare()
            # the word gates are looked up together once a text is read by several (a recognizer's sentence,
            # read by one or two, is not worth it)
            found = self._words().get(rx) if gate.word and len(self._cands) >= 3 else None
            got = sorted({*(found if found is not None else self._anchored(gate)), *self._found(gate),
                          *(gate.extra(self) if gate.extra else ())})
            self._cands[rx] = got
        return got

    def _anchored(self, gate: _Gate) -> list[int]:
        """Starts that begin with one of the gate's anchors (and hold the digits its matches hold)."""
        if not gate.anchors:
            return []
        sel = np.arange(len(self.starts))
        if gate.digits and gate.width:
            sel = sel[self.digits_in(self.starts[sel], gate.width) >= gate.digits]
        if gate.shapes is not None and len(sel):
            shaped = np.zeros(len(sel), dtype=np.bool_)
            for n, table in gate.shapes.items():
                shaped |= _sorted_in(self.keys("shape", n)[sel], table)
            sel = sel[shaped]
        out: list[int] = []
        by: dict[tuple[str, int], list[int]] = {}
        for space, n, k in gate.heads:
            by.setdefault((space, n), []).append(k)
        text = self.text
        for (space, n), ks in by.items():
            keys = self.keys(space, n)
            idx = sel[_sorted_in(keys[sel], np.array(sorted(set(ks)), dtype=np.uint32))]
            for s, k in zip(self.starts[idx].tolist(), keys[idx].tolist(), strict=True):
                if gate.head((space, n, k)).match(text, s):
                    out.append(s)
        return out

    def _words(self) -> dict[re.Pattern[str], list[int]]:
        """For all gates whose anchors are words: where each can start, in one pass for all."""
        got = self.memo.get("words")
        if got is not None:
            return got  # type: ignore[no-any-return]
        tables: dict[tuple[str, int], dict[int, list[_Gate]]] = {}
        out: dict[re.Pattern[str], list[int]] = {}
        for gate in list(_GATES.values()):
            gate.prepare()
            if gate.ok and gate.word and gate.anchors:
                out[gate.rx] = []
                for space, n, k in gate.heads:
                    tables.setdefault((space, n), {}).setdefault(k, []).append(gate)
        for (space, n), table in tables.items():
            keys = self.keys(space, n)
            idx = np.flatnonzero(_sorted_in(keys, np.array(sorted(table), dtype=np.uint32)))
            text = self.text
            for s, k in zip(self.starts[idx].tolist(), keys[idx].tolist(), strict=True):
                for gate in table[k]:
                    if gate.head((space, n, k)).match(text, s):
                        out[gate.rx].append(s)
        self.memo["words"] = out
        return out

    def _found(self, gate: _Gate) -> list[int]:
        """Candidates from strings: the gate's own `finds`, and its anchors found anywhere."""
        out: list[int] = []
        for string, folded, offsets in gate.finds:
            hay = self.folded("fold") if folded else self.text
            at = hay.find(string)
            while at != -1:
                out.extend(at + o for o in offsets if at + o >= 0)
                at = hay.find(string, at + 1)
        for key, space, head in gate.found:
            hay = self.folded(space)
            at = hay.find(key)
            while at != -1:
                if head.match(self.text, at):
                    out.append(at)
                at = hay.find(key, at + 1)
        return out


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


def _gate(rx: re.Pattern[str], text: str) -> _Gate | None:
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
