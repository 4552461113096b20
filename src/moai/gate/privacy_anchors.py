"""How a pattern's matches begin, read from its parse tree: the anchors a gated scan looks up in a long text.

An anchor is the first characters every match along one path of the pattern starts with, compared as written,
folded (lower case, any digit as `0`) or as a shape (any letter `a`), with a regex of the path's first
elements to check a candidate. The walk over the parse tree follows every way the pattern can start, and gives
up (no anchor) where a path could start anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

try:  # the parse tree of a pattern (Python's own, the one `re.compile` builds)
    import re._constants as _sc
    import re._parser as regex_parser
except ImportError:  # pragma: no cover - no such module: every pattern is then scanned in full
    regex_parser = _sc = None  # type: ignore[assignment]

HEAD = 10  # elements of a pattern read for the regex that checks a candidate
MIN = 1  # characters an anchor has at the least
_CLASS = 6  # a character class folding to more values than this ends an anchor
_KEY = 8  # characters of an anchor looked up at each start, at most
KEYS = (1, 2, 3, 4, 6, 8)  # the lengths looked up (an anchor uses the longest it has)
_STATES = 256  # ways of reading a pattern followed at once, at most (past that, each ends where it is)
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


SPACES: dict[str, Callable[[str], str]] = {"raw": _as_written, "fold": fold_char, "shape": shape_char}


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
    `shape_char`, or as written; up to `cap`) and a head (up to `HEAD` elements, as regex source). With
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
        if len(st.key) >= MIN:
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
                if st.size >= HEAD or len(nxt) > _STATES:  # too many ways to read on: each ends here
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
                if k >= hi or k > lo + HEAD:
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


def derive(tree: Any, flags: int, space: str, partial: bool = False, word: bool = True,
            cap: int = _KEY) -> list[Anchor] | None:
    """The anchors of a pattern (its parse tree): how every match starting an alphanumeric run begins
    (`word`), or every match wherever it starts. None: some path has none."""
    try:
        walk = _Walk(SPACES[space], partial, word, cap)
        for st in walk.seq(tree.data, {_State(icase=bool(flags & re.IGNORECASE))}):
            walk.close(st)
    except (_Unanchored, RecursionError):
        return None
    if not walk.done:
        return None
    return sorted({Anchor(raw, "raw", head, shape) if len(raw) >= min(len(key), _KEY) and len(raw) >= 2
                   else Anchor(key, space, head, shape) for key, raw, head, shape in walk.done},
                  key=lambda a: (a.key, a.space, a.head, a.shape))


def fewest_digits(items: Any) -> int:
    """Decimal digits every match of `items` holds at the least (`\\d`, or a class of digits only)."""
    total = 0
    for op, av in list(items):
        if op is _sc.LITERAL:
            total += chr(av).isdecimal()
        elif op is _sc.IN:
            chars = (_class_items(av, True) or (None, ""))[0]
            total += bool(chars) and all(ch.isdecimal() for ch in chars)  # type: ignore[union-attr]
        elif op is _sc.SUBPATTERN:
            total += fewest_digits(av[3])
        elif op is _sc.ATOMIC_GROUP:
            total += fewest_digits(av)
        elif op is _sc.BRANCH:
            total += min(fewest_digits(alt) for alt in av[1])
        elif op in (_sc.MAX_REPEAT, _sc.MIN_REPEAT, _sc.POSSESSIVE_REPEAT):
            total += av[0] * fewest_digits(av[2])
    return total


def key_length(key: str) -> int:
    return max(n for n in KEYS if n <= len(key))


def anchor_key(word: str, n: int) -> int:
    """The first `n` characters of an anchor as one number (as `Index.keys` computes it at each start)."""
    k = 0
    for ch in word[:n]:
        k = (k * 1000003 + ord(ch)) & _MASK
    return k

