"""What the gates read of one long text: where its alphanumeric runs start and their first characters, in one
numpy pass, so that each gated pattern is tried only at its candidates.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from moai.gate.privacy_anchors import KEYS, SPACES
from moai.gate.privacy_gates import _GATES, PatternGate

_TABLE_128 = {name: np.array([ord(f(chr(i))) for i in range(128)], dtype=np.uint32) for name, f in SPACES.items()}
_TRANSLATE_128 = {name: str.maketrans({chr(i): f(chr(i)) for i in range(128)}) for name, f in SPACES.items()}
_ASCII_ALNUM = np.array([chr(i).isalnum() for i in range(128)], dtype=np.bool_)
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
            f = SPACES[space]
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
        """At each start, its first `n` characters in `space` as one number (see `anchor_key`); all lengths of a
        space are read in one go."""
        got = self._keys.get((space, n))
        if got is None:
            codes, s = self.codes(space), self.starts
            key = np.zeros(len(s), dtype=np.uint32)
            for i in range(max(KEYS)):
                at = s + i
                nxt = codes[np.minimum(at, len(codes) - 1)].astype(np.uint32)
                nxt[at >= len(codes)] = 0  # past the end of the text
                key = key * np.uint32(1000003) + nxt
                if i + 1 in KEYS:
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

    def _anchored(self, gate: PatternGate) -> list[int]:
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
        tables: dict[tuple[str, int], dict[int, list[PatternGate]]] = {}
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

    def _found(self, gate: PatternGate) -> list[int]:
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

