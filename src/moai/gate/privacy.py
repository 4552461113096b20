"""Sensitive-data detection and redaction: the check behind moai's promise that queries carrying
sensitive data are answered only by trusted (local/private) models.

`detect` scans every message of a query (all roles: a secret in a system prompt leaks just as well; content,
participant names and tool-call arguments) and the request's tool definitions, and returns a
`PrivacyReport`: sensitive or not, the kinds found, and each detection's place and reason for the
decision trace. Explanations never quote the sensitive value, so a trace can be logged safely.

`redact` swaps each detected span for a typed placeholder (`[EMAIL_1]`, `[IBAN_1]`) so a mix with
`sensitive_data: redact` may still use a cloud model; `restore` / `Restorer` put the originals back into
the model's answer, whole or streamed. The recognizers themselves live in `privacy_rules`.

Text is scanned as a model reads it (`_fold`): invisible and format characters, other scripts' digits,
compatibility forms, marks on ASCII characters and look-alike letters in an email do not hide a value, and
every span maps back onto the text as written, so a placeholder replaces all of it. A value sent in pieces,
over several messages or content parts, is read whole too (`seam_values`).
"""

from __future__ import annotations

import bisect
import copy
import functools
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

from moai.gate import privacy_scan as scan
from moai.gate.privacy_context import find_confidential, find_health
from moai.gate.privacy_learned import find_semantic
from moai.gate.privacy_rules import (
    KINDS,
    Hit,
    email_address,
    find_cards,
    find_contacts,
    find_ibans,
    find_national_ids,
    find_secrets,
)

__all__ = ["KINDS", "REDACTABLE", "Detection", "Placeholders", "PrivacyReport", "Restorer", "detect", "redact",
           "request_tokens", "reserved_tokens", "restore", "seam_hits", "seam_values", "splice", "value_key"]

# Kinds a placeholder really hides: the value *is* the secret. Health and confidential detections mark a
# term inside a disclosure, and masking the term leaves the disclosure readable, so a report holding them
# is not `redactable` and a `redact` policy should keep such queries on trusted models instead.
REDACTABLE: frozenset[str] = frozenset({"payment_card", "national_id", "iban", "secret", "contact"})

# When two detections overlap, the more specific kind wins (an IBAN's digits are not also a phone number).
_PRIORITY = {k: i for i, k in enumerate(("secret", "iban", "payment_card", "national_id", "contact",
                                         "confidential", "health"))}

Messages = Sequence[Mapping[str, Any]]
Tools = Sequence[Mapping[str, Any]]

RECOGNIZERS: tuple[Callable[[str], Iterator[Hit]], ...] = (
    find_cards, find_national_ids, find_ibans, find_secrets, find_contacts, find_health, find_confidential,
)


@dataclass(frozen=True)
class Detection:
    """One sensitive span: which message (and content part, for list contents), where, what, and why."""

    kind: str
    message: int | None  # None for a tool definition or the response format: they belong to no message
    part: int | None  # index into a list-of-parts content; None when the content is a plain string
    start: int
    end: int
    label: str
    explanation: str
    # "content", "name", "tool_calls.<k>.arguments", "tools.<k>" (the tool's JSON) or "response_format" (its
    # JSON schema's descriptions, defaults and enums): the model reads them all
    field: str = "content"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "field": self.field, "part": self.part,
                "start": self.start, "end": self.end, "explanation": self.explanation}


@dataclass
class PrivacyReport:
    """What `detect` found in one query; `sensitive` is what the policy acts on."""

    detections: list[Detection] = field(default_factory=list)

    @property
    def sensitive(self) -> bool:
        return bool(self.detections)

    @property
    def kinds(self) -> list[str]:
        found = {d.kind for d in self.detections}
        return [k for k in KINDS if k in found]

    @property
    def redactable(self) -> bool:
        """True when placeholders would hide everything found (see REDACTABLE)."""
        return all(d.kind in REDACTABLE for d in self.detections)

    def reasons(self) -> list[str]:
        """One line per detection, for the decision trace (no values, no diagnosis terms: safe to log)."""
        return [f"{d.kind}: {d.explanation} ("
                + (f"message {d.message} {d.field}" if d.message is not None else d.field)
                + f", chars {d.start}-{d.end})" for d in self.detections]

    def to_json(self) -> dict[str, Any]:
        return {"sensitive": self.sensitive, "kinds": self.kinds, "redactable": self.redactable,
                "detections": [d.to_json() for d in self.detections]}


Where = tuple[int | None, str, int | None]  # (message index or None for a tool, field, content part index)


def tool_json(tool: Mapping[str, Any]) -> str:
    """A tool definition as one text: its descriptions, enums and defaults read in context, as the model
    reads them (a default next to a "password" property is a password)."""
    return json.dumps(tool, ensure_ascii=False, default=str)


def _decoded(args: str) -> str | None:
    """Tool-call arguments with their JSON escapes decoded (`\\u0040` is "@" to the model), when they have any."""
    if "\\" not in args:
        return None
    try:
        return json.dumps(json.loads(args), ensure_ascii=False)
    except ValueError:
        return None


def _texts(query: str | Messages, tools: Tools | None = None,
           response_format: Mapping[str, Any] | None = None, stop: Sequence[str] | str | None = None,
           tool_choice: Any = None) -> list[tuple[Where, str]]:
    """Every text the model would see, with where it sits; non-text parts (images, audio) are skipped."""
    out: list[tuple[Where, str]] = []
    if isinstance(query, str):
        out.append(((0, "content", None), query))
    else:
        for i, m in enumerate(query):
            content = m.get("content")
            if isinstance(content, str):
                out.append(((i, "content", None), content))
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                        out.append(((i, "content", j), part["text"]))
            if isinstance(m.get("name"), str):  # a participant's name is sent too (and may be an email)
                out.append(((i, "name", None), m["name"]))
            for k, call in enumerate(m.get("tool_calls") or []):
                args = call.get("function", {}).get("arguments") if isinstance(call, Mapping) else None
                if isinstance(args, str):
                    out.append(((i, f"tool_calls.{k}.arguments", None), args))
                    decoded = _decoded(args)
                    if decoded is not None and decoded != args:
                        out.append(((i, f"tool_calls.{k}.arguments (decoded)", None), decoded))
    for k, tool in enumerate(tools or []):
        if isinstance(tool, Mapping):
            out.append(((None, f"tools.{k}", None), tool_json(tool)))
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        out.append(((None, "response_format", None), tool_json(response_format)))
    for k, seq in enumerate([stop] if isinstance(stop, str) else stop or []):  # stop sequences are sent too
        if isinstance(seq, str):
            out.append(((None, f"stop.{k}", None), seq))
    if isinstance(tool_choice, Mapping):
        out.append(((None, "tool_choice", None), tool_json(tool_choice)))
    return out


def _resolve(hits: list[Hit]) -> list[Hit]:
    """Drop hits that overlap a more specific or longer one; return the rest in text order.

    The hits kept do not overlap, so a new one can only overlap its neighbours in text order: two lookups,
    not a comparison with every hit kept (a text with thousands of emails took seconds)."""
    order = sorted(hits, key=lambda h: (_PRIORITY[h.kind], h.start - h.end, h.start))
    if any(h.end <= h.start for h in hits):  # an empty span fits no order: compare with every hit kept
        kept: list[Hit] = []
        for h in order:
            if all(h.end <= k.start or h.start >= k.end for k in kept):
                kept.append(h)
        return sorted(kept, key=lambda h: h.start)
    starts: list[int] = []
    spans: list[Hit] = []
    for h in order:
        i = bisect.bisect_right(starts, h.start)
        if (i and spans[i - 1].end > h.start) or (i < len(spans) and spans[i].start < h.end):
            continue
        starts.insert(i, h.start)
        spans.insert(i, h)
    return spans


# ---------------------------------------------------------------- what the model reads: characters folded

# How each character reads to a model, and so to the recognizers: as itself; as one other character (spaces
# of any width as " ", dashes as "-", any decimal digit as its ASCII digit, "＠"/"﹫" as "@", "。" as ".",
# compatibility forms such as mathematical bold digits as their ASCII); as nothing (format characters: zero-width
# spaces, LRM/RLM and bidi controls, tag characters, variation selectors); as nothing when it is a mark on an
# ASCII character ("4\u0336", a keycap "4\ufe0f\u20e3"); or as a few ASCII characters (ligatures, Roman numerals).
_SAME, _ONE, _DROP, _MARK, _MULTI = range(5)
_TABLE_END = 0x20000  # planes 0 and 1 have arrays; above them only the tag plane (U+E0000-E0FFF) folds: to nothing
_TAGS = (0xE0000, 0xE1000)
# Invisible though unicodedata does not class them as format characters (Hangul fillers, Mongolian and other
# variation selectors, the combining grapheme joiner, Khmer inherent vowels, reserved default-ignorables).
_IGNORABLE = frozenset([0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, *range(0x180B, 0x1810), 0x3164, 0xFFA0,
                        *range(0x2060, 0x2070), *range(0xFE00, 0xFE10), *range(0xFFF0, 0xFFF9)])
_AS = {0x3002: ".", 0xFF61: ".", 0xFE12: ".", 0x0085: " ", 0x2028: " ", 0x2029: " ", 0x2800: " ", 0x2212: "-"}
# Cyrillic and Greek letters drawn like Latin ones: folded only inside an email that has Latin letters too.
_LOOKALIKES = str.maketrans("аеорсхуіјѕһԁԛԝӏАВЕКМНОРСТХУІЈЅοανικρυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
                            "aeopcxyijshdqwlABEKMHOPCTXYIJSoavikpuxABEZHIKMNOPTYX")
_LOOKALIKE = re.compile("[" + "".join(chr(k) for k in _LOOKALIKES) + "]")
_LOOKALIKE_CODES = np.zeros(0x10000, dtype=bool)
_LOOKALIKE_CODES[list(_LOOKALIKES)] = True
_AT_DOMAIN = re.compile(r"[\w.-]{1,255}")
_LATIN = re.compile("[A-Za-z]")


@dataclass(frozen=True)
class _Tables:
    """Per-character folds, built once from unicodedata (about 0.1 s, on the first text that is not ASCII)."""

    kind: np.ndarray  # uint8 per code point below _TABLE_END: _SAME, _ONE, ...
    target: np.ndarray  # uint32: the code point a _ONE folds to; the row in `multi` of a _MULTI
    multi: np.ndarray  # (rows, 4) uint32: the ASCII a _MULTI folds to
    multi_len: np.ndarray  # int64 per row
    one: dict[int, str]  # the _ONE folds, for str.translate
    odd: re.Pattern[str]  # any character that folds to no character or several, or is a mark


def _fold_of(cp: int) -> tuple[int, str]:
    """How one character reads (see above), from its Unicode category and compatibility decomposition."""
    c = chr(cp)
    cat = unicodedata.category(c)
    if cat == "Cf" or cp in _IGNORABLE or _TAGS[0] <= cp < _TAGS[1]:
        return _DROP, ""
    if cat in ("Mn", "Me"):
        return _MARK, ""
    if cp in _AS:
        return _ONE, _AS[cp]
    if cat == "Zs":
        return _ONE, " "
    if cat == "Pd":
        return _ONE, "-"
    if cat == "Nd":
        return _ONE, str(unicodedata.decimal(c))
    if cp <= 0xFF or not unicodedata.decomposition(c):  # Latin-1 stays as written ("nº", "m²" are words)
        return _SAME, c
    folded = unicodedata.normalize("NFKC", c)
    if folded == c or not folded.isascii() or not folded.isprintable():
        return _SAME, c
    if len(folded) == 1:
        return _ONE, folded
    if cat[0] in "LN" and folded.isalnum() and len(folded) <= 4:  # "ﬁ" -> "fi", "Ⅻ" -> "XII"
        return _MULTI, folded
    return _SAME, c  # "⑴", "…", "™": punctuation and symbols, not letters or digits


def _char_class(cps: list[int]) -> str:
    """A regex class of sorted code points, as ranges (a few hundred, not thousands of single characters)."""
    out, i = [], 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        out.append(f"\\U{cps[i]:08x}-\\U{cps[j]:08x}")
        i = j + 1
    return "[" + "".join(out) + "]"


@functools.cache
def _tables() -> _Tables:
    """The folds of planes 0 and 1, built on first need: a service that only sees ASCII never pays for them."""
    kind = np.zeros(_TABLE_END, dtype=np.uint8)
    target = np.zeros(_TABLE_END, dtype=np.uint32)
    one: dict[int, str] = {}
    multi: list[str] = []
    odd: list[int] = []
    for cp in range(0x80, _TABLE_END):
        k, s = _fold_of(cp)
        kind[cp] = k
        if k == _ONE:
            target[cp] = ord(s)
            one[cp] = s
        elif k == _MULTI:
            target[cp] = len(multi)
            multi.append(s)
        if k in (_DROP, _MARK, _MULTI):
            odd.append(cp)
    table = np.zeros((max(len(multi), 1), 4), dtype=np.uint32)
    for row, s in enumerate(multi):
        table[row, :len(s)] = [ord(x) for x in s]
    odd_class = _char_class(odd)[:-1] + f"\\U{_TAGS[0]:08x}-\\U{_TAGS[1] - 1:08x}]"
    return _Tables(kind, target, table, np.array([len(s) for s in multi] or [0], dtype=np.int64), one,
                   re.compile(odd_class))


def _fold(text: str) -> tuple[str, np.ndarray | None]:
    """`text` as the recognizers read it, and for each of its characters the offset in `text` it comes from
    (None when each character stays in its place). Linear: an array pass for a long text or one with
    characters that vanish or multiply, `str.translate` otherwise. (A lone surrogate, which JSON may carry,
    passes through as it is.)"""
    if text.isascii():
        return text, None
    t = _tables()
    if len(text) < scan.LONG and t.odd.search(text) is None:
        return _unconfuse(text.translate(t.one), None)
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    hi = np.flatnonzero(codes >= 0x80)
    c = codes[hi]
    inside = c < _TABLE_END
    at = np.where(inside, c, 0)
    kind = np.where(inside, t.kind[at], np.where((c >= _TAGS[0]) & (c < _TAGS[1]), _DROP, _SAME))
    target = t.target[at]
    out = codes.copy()
    one = kind == _ONE
    out[hi[one]] = target[one]
    gone = kind == _DROP
    multi = kind == _MULTI
    mark = kind == _MARK
    if mark.any():  # a mark goes when the character it sits on (before the marks and invisibles) reads as ASCII
        hidden = np.flatnonzero(gone | mark)
        where = hi[hidden]
        follows = np.zeros(len(hidden), dtype=bool)
        follows[1:] = where[1:] - 1 == where[:-1]
        first = np.maximum.accumulate(np.where(follows, 0, np.arange(len(hidden))))
        base = where[first] - 1
        ok = base >= 0
        base = np.maximum(base, 0)
        multi_at = hi[multi]
        in_multi = np.zeros(len(base), dtype=bool)
        if multi_at.size:
            k = np.minimum(np.searchsorted(multi_at, base), multi_at.size - 1)
            in_multi = multi_at[k] == base
        ascii_base = ok & ((out[base] < 0x80) | in_multi)
        gone[hidden[mark[hidden] & ascii_base]] = True
    if not gone.any() and not multi.any():
        return _unconfuse(out.tobytes().decode("utf-32-le", "surrogatepass"), None)
    if not multi.any():
        keep = np.ones(len(codes), dtype=bool)
        keep[hi[gone]] = False
        return _unconfuse(out[keep].tobytes().decode("utf-32-le", "surrogatepass"), np.flatnonzero(keep))
    lengths = np.ones(len(codes), dtype=np.int64)
    lengths[hi[gone]] = 0
    rows = target[multi]
    lengths[hi[multi]] = t.multi_len[rows]
    starts = np.cumsum(lengths) - lengths
    folded = np.empty(int(lengths.sum()), dtype=np.uint32)
    single = lengths == 1
    folded[starts[single]] = out[single]
    for j in range(t.multi.shape[1]):
        sel = t.multi_len[rows] > j
        folded[starts[hi[multi][sel]] + j] = t.multi[rows[sel], j]
    return _unconfuse(folded.tobytes().decode("utf-32-le", "surrogatepass"), np.repeat(np.arange(len(codes)), lengths))


_fold_short = functools.lru_cache(maxsize=8192)(_fold)  # the ends of a chat's texts, read again every turn


def _unconfuse(text: str, pos: np.ndarray | None) -> tuple[str, np.ndarray | None]:
    """Cyrillic and Greek look-alikes inside an email that has Latin letters read as the Latin letters
    ("jаne@…" with a Cyrillic "а" is jane's address to the model), one for one; a mark on such a letter
    ("jа́ne@…", U+0301 on the "а") then sits on a Latin letter and goes, as marks on ASCII letters do in
    `_fold`. `text` is folded and `pos` its offsets (see `_fold`), both returned with the marks gone."""
    if "@" not in text or _LOOKALIKE.search(text) is None:
        return text, pos
    marks = _marks()
    out: list[str] = []
    gone: list[int] = []  # offsets in `text` of marks that go
    done = 0
    for at in _mixed_ats(text):
        if at < done:
            continue
        lo = at
        while lo > max(done, at - 64) and (text[lo - 1].isalnum() or text[lo - 1] in "._%+-"
                                           or marks.match(text, lo - 1)):
            lo -= 1
        domain = _marked_domain().match(text, at + 1)
        hi = domain.end() if domain else at + 1
        token = text[lo:hi]
        if _LOOKALIKE.search(token) and _LATIN.search(token):
            fixed = token.translate(_LOOKALIKES)
            out += [text[done:lo], fixed]
            done = hi
            base, run_end = -1, -1  # the letter under the run of marks being read, and where the run ends
            for m in marks.finditer(token):  # one pass: a run of 250 marks read once, not once per mark in it
                if m.start() != run_end:
                    base = m.start() - 1
                run_end = m.end()
                if base >= 0 and fixed[base] != token[base]:  # on a look-alike read as Latin
                    gone.append(lo + m.start())
    if not out:
        return text, pos
    fixed_text = "".join(out) + text[done:]
    if not gone:
        return fixed_text, pos
    keep = np.ones(len(text), dtype=bool)
    keep[gone] = False
    codes = np.frombuffer(fixed_text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)[keep]
    return codes.tobytes().decode("utf-32-le", "surrogatepass"), (np.arange(len(text)) if pos is None else pos)[keep]


@functools.cache
def _marks() -> re.Pattern[str]:
    """One combining mark (what `_fold` takes for a mark): built from its tables, on first need."""
    return re.compile(_char_class(np.flatnonzero(_tables().kind == _MARK).tolist()))


@functools.cache
def _marked_domain() -> re.Pattern[str]:
    """An email's domain after its "@", as `_AT_DOMAIN`, with marks on its letters (`xа́mple.com`)."""
    return re.compile(r"(?:[\w.-]|" + _marks().pattern + "){1,255}")


def _mixed_ats(text: str) -> list[int]:
    """Where "@" is written with a look-alike and a Latin letter both within an email's reach of it (in a long
    text found in one array pass: Russian or Greek prose is full of look-alikes and has many "@" handles)."""
    if len(text) < scan.LONG:
        return [m.start() for m in re.finditer("@", text)]
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    ats = np.flatnonzero(codes == 0x40)
    look = np.flatnonzero(_LOOKALIKE_CODES[np.minimum(codes, 0xFFFF)])
    low = codes | 0x20
    latin = np.flatnonzero((low >= 0x61) & (low <= 0x7A))

    def near(found: np.ndarray) -> np.ndarray:
        return np.searchsorted(found, ats + 256) > np.searchsorted(found, ats - 64)

    return [int(x) for x in ats[near(look) & near(latin)]]


def _source(pos: np.ndarray, folded_len: int, text_len: int, start: int, end: int) -> tuple[int, int]:
    """The span of the original text that folded[start:end] comes from, with the invisible characters and
    marks right after it (the placeholder takes them too)."""
    after = int(pos[end]) if end < folded_len else text_len
    return int(pos[start]), max(int(pos[end - 1]) + 1, after)


@functools.lru_cache(maxsize=4096)
def detect_text(text: str) -> tuple[Hit, ...]:
    """All non-overlapping hits in one text, with spans in the text as written. Cached: a chat resends its
    whole history every turn, and only the new message should cost anything."""
    folded, pos = _fold(text)
    hits = _detect_visible(folded)
    if pos is None:
        return hits
    return tuple(Hit(h.kind, *_source(pos, len(folded), len(text), h.start, h.end), h.label, h.explanation)
                 for h in hits if h.end > h.start)


def _detect_visible(text: str) -> tuple[Hit, ...]:
    try:
        hits = _resolve([h for rec in RECOGNIZERS for h in rec(text)])
        # The learned opinion covers a whole passage, so it stays out of span resolution (it would shadow the
        # precise hits inside it) and only adds a kind the rules did not find.
        found = {h.kind for h in hits}
        hits += [h for h in find_semantic(text) if h.kind not in found]
        return tuple(hits)
    finally:
        scan.release(text)  # the recognizers of this text are done with its index


# ---------------------------------------------------------------- values split across texts

# A value sent in pieces (a card over four messages or content parts, an email cut after its "@") is whole
# again for the model. Consecutive texts are joined into runs: a text with digits that is short enough to be
# a piece carries the run on, up to `_RUN` texts; the words between two runs of digits are left out ("The
# last eight digits are "), up to `_GAP` characters for any value and `_LONG_GAP` for a card or an IBAN,
# whose checksum keeps two unrelated numbers from passing as one.
_SEAM = 48  # characters of context kept before the first piece and after the last
_GAP = 24
_LONG_GAP = 80
_RUN = 8
_PIECE = 64
_CHECKED = frozenset({"payment_card", "iban"})
_STRIP = " .,;:!?\n"
_SHAPED = (find_cards, find_national_ids, find_ibans)
_LEAD = re.compile(rf"[^\d\n]{{0,{_LONG_GAP}}}(?=\d)")  # words before the first digits of the next text
# Words after the first piece's digits must speak of the value's pieces ("... digits, and the rest"): "Total: 2358
# 1240 items" then "4789 8442 more items arrived" passed the Luhn check as a card.
_PIECE_CUE = re.compile(r"\b(?:card|visa|master\s?card|amex|digits?|numbers?|iban|account|carte|num[ée]ros?|chiffres?|"
                        r"karte|ziffern?|nummer|konto|tarjeta|d[íi]gitos?|n[úu]meros?|cuenta|compte|rest|first|last|"
                        r"premiers?|derniers?|ersten|letzten|primeros?|[úu]ltimos?)\b", re.I)
_COUNTS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}

Slot = tuple[int, int | None]  # (message index, content part index or None for a string content)
Piece = tuple[Slot, int, int]  # a slot and the span, in its text, of one piece of a value


@dataclass
class _Stretch:
    """A stretch of one slot's text, folded, and the part of it [lo, hi) that goes into a run's joined text."""

    slot: Slot
    text: str  # the slot's whole text
    off: int  # where the folded stretch starts in `text`
    raw_len: int  # its length in `text`
    folded: str
    pos: np.ndarray | None
    lo: int = 0
    hi: int = 0

    def source(self, start: int, end: int) -> tuple[int, int]:
        """The span of the slot's text that folded[start:end] comes from."""
        if start >= end:
            at = self.source(start - 1, start)[1] if start else self.off
            return at, at
        if self.pos is None:
            return self.off + start, self.off + end
        a, b = _source(self.pos, len(self.folded), self.raw_len, start, end)
        return self.off + a, self.off + b


def _stretch(slot: Slot, text: str, side: str) -> _Stretch:
    """The folded end of a text ("tail" or "head"), long enough for a seam whatever invisible characters it
    holds, or all of it ("all")."""
    need = _SEAM + _LONG_GAP + 64
    size = 4 * need
    while True:
        if side == "all" or size >= len(text):
            sub, off = text, 0
        elif side == "head":
            sub, off = text[:size], 0
        else:
            sub, off = text[-size:], len(text) - size
        folded, pos = (_fold_short if len(sub) < scan.LONG else _fold)(sub)
        if len(folded) >= need or len(sub) == len(text):
            return _Stretch(slot, text, off, len(sub), folded, pos, 0, len(folded))
        size *= 4


@functools.lru_cache(maxsize=8192)
def _is_piece(text: str) -> bool:
    """A short text with digits: it may be a middle piece of a value sent over several texts."""
    if len(text) > 4 * _PIECE:
        return False
    folded = _fold_short(text)[0].strip(_STRIP)
    return 0 < len(folded) <= _PIECE and any("0" <= ch <= "9" for ch in folded)


def _glued(left: str, right: str) -> bool:
    """Whether the pieces read as one token (an email cut at its "@" or a dot of its domain), not two words."""
    if not left or not right:
        return False
    a, b = left[-1], right[0]
    if (a == "@" and b.isalnum()) or (b == "@" and a.isalnum()):
        return True
    token = left.rsplit(None, 1)[-1] if left.strip() else ""
    return "@" in token and ((a == "." and b.isalnum()) or (a.isalnum() and b == "." and right[1:2].isalnum()))


def _trail(text: str) -> int | None:
    """How many characters of words follow the last digit of `text` (None: no digit within `_LONG_GAP`)."""
    i = len(text)
    while i > 0 and len(text) - i <= _LONG_GAP and not "0" <= text[i - 1] <= "9" and text[i - 1] != "\n":
        i -= 1
    return len(text) - i if i > 0 and "0" <= text[i - 1] <= "9" else None


@dataclass(frozen=True)
class _Run:
    """Consecutive texts joined: the folded text the recognizers read, where each junction is in it and how
    many characters of words it leaves out, and each stretch's place in it."""

    slots: tuple[Slot, ...]
    stretches: tuple[_Stretch, ...]
    joined: str
    starts: tuple[int, ...]  # where each stretch's [lo, hi) starts in `joined`
    junctions: tuple[int, ...]  # the seams: where the joiner before each stretch but the first is in `joined`
    bridged: tuple[int, ...]


def _join(items: Sequence[tuple[Slot, str]]) -> _Run:
    """Join a run of texts: the end of the first, the middle ones whole, the start of the last."""
    parts = [_stretch(items[0][0], items[0][1], "tail")]
    parts += [_stretch(slot, text, "all") for slot, text in items[1:-1]]
    parts.append(_stretch(items[-1][0], items[-1][1], "head"))
    joiners: list[str] = []
    bridged: list[int] = []
    for left, right in zip(parts, parts[1:], strict=False):
        piece = left.folded[left.lo:left.hi]
        if _glued(piece, right.folded):
            joiners.append("")
            bridged.append(0)
            continue
        left.hi = left.lo + len(piece.rstrip(_STRIP))
        words = 0
        trail = _trail(left.folded[left.lo:left.hi])
        lead = _LEAD.match(right.folded)
        if trail is not None and lead is not None and trail + lead.end() <= _LONG_GAP and (
                trail == 0
                or _PIECE_CUE.search(left.folded[left.hi - trail:left.hi] + " " + right.folded[:lead.end()])):
            left.hi -= trail
            right.lo = lead.end()
            words = trail + lead.end()
        joiners.append(" ")
        bridged.append(words)
    # context kept before the first piece and after the last: `_SEAM` characters, and the rest of a token cut
    first, last = parts[0], parts[-1]
    first.lo = max(0, first.hi - _SEAM)
    while first.lo > 0 and first.hi - first.lo < _SEAM + 64 and not first.folded[first.lo - 1].isspace():
        first.lo -= 1
    last.hi = min(len(last.folded), last.lo + _SEAM)
    while last.hi < len(last.folded) and last.hi - last.lo < _SEAM + 64 and not last.folded[last.hi].isspace():
        last.hi += 1
    chunks: list[str] = []
    starts: list[int] = []
    junctions: list[int] = []
    size = 0
    for k, part in enumerate(parts):
        if k:
            junctions.append(size)  # the seam: a hit holding characters both sides of it is split across texts
            chunks.append(joiners[k - 1])
            size += len(joiners[k - 1])
        starts.append(size)
        chunks.append(part.folded[part.lo:part.hi])
        size += part.hi - part.lo
    return _Run(tuple(s for s, _ in items), tuple(parts), "".join(chunks), tuple(starts), tuple(junctions),
                tuple(bridged))


@functools.lru_cache(maxsize=4096)
def _across(text: str, junctions: tuple[int, ...], bridged: tuple[int, ...]) -> tuple[Hit, ...]:
    """Shaped hits (cards, ids, IBANs, emails) in a run's joined text that hold characters both sides of a
    junction, where the words left out there allow their kind. Cached, like `detect_text`, for a chat's history."""
    found = [h for rec in _SHAPED for h in rec(text)] + [h for h in find_contacts(text) if h.label == "EMAIL"]
    out = []
    for h in _resolve(found):
        crossed = [k for k, at in enumerate(junctions) if h.start < at < h.end]
        if crossed and (h.kind in _CHECKED or all(bridged[k] <= _GAP for k in crossed)):
            out.append(h)
    return tuple(out)


def _runs(seq: Sequence[tuple[Slot, str]]) -> Iterator[Sequence[tuple[Slot, str]]]:
    """Runs of consecutive texts: each seam in one run; a run goes on through texts that may be pieces of a
    value, up to `_RUN` texts; one cut there starts again a few texts back, so a value across the cut is
    whole in the next."""
    pieces = [_is_piece(t) for _, t in seq]
    i = 0
    while i < len(seq) - 1:
        j = i + 1
        while j < len(seq) - 1 and pieces[j] and j - i < _RUN - 1:
            j += 1
        yield seq[i:j + 1]
        i = j if not pieces[j] or j == len(seq) - 1 else max(i + 1, j - _RUN // 2)


def _field(first: Slot, slot: Slot) -> str:
    """How a detection's field names a later text of a run ("part 2", "message 3")."""
    if slot[0] == first[0]:
        return f"part {slot[1]}"
    return f"message {slot[0]}" + ("" if slot[1] is None else f" part {slot[1]}")


def seam_values(query: str | Messages) -> Iterator[tuple[Where, str, Hit, tuple[Piece, ...]]]:
    """Shaped values that exist only across texts: message contents and their parts in order, and user turns
    in order (a value sent over several turns with answers between). For each: where to report it (the
    first text's place, "content+" and the other texts'), the joined text as written and the hit's span in
    it (for the placeholder's original), and every piece: the slot and the span of the piece in its text."""
    if isinstance(query, str):
        return
    seq: list[tuple[Slot, str]] = []
    users: list[tuple[Slot, str]] = []
    for i, m in enumerate(query):
        content = m.get("content")
        texts: list[tuple[Slot, str]] = []
        if isinstance(content, str):
            texts.append(((i, None), content))
        elif isinstance(content, list):
            texts += [((i, j), p["text"]) for j, p in enumerate(content)
                      if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
        seq += texts
        if m.get("role") == "user":
            users += texts
    seen_runs: set[tuple[Slot, ...]] = set()
    seen: set[tuple[str, tuple[Piece, ...]]] = set()
    for items in [*_runs(seq), *_runs(users)]:
        slots = tuple(s for s, _ in items)
        if slots in seen_runs:
            continue
        seen_runs.add(slots)
        for found in _run_values(tuple(items)):
            key = (found[2].kind, found[3])
            if key not in seen:
                seen.add(key)
                yield found


@functools.lru_cache(maxsize=4096)
def _run_values(items: tuple[tuple[Slot, str], ...]) -> tuple[tuple[Where, str, Hit, tuple[Piece, ...]], ...]:
    """The values split across one run of texts (see `seam_values`). Cached: a chat's earlier runs come back
    every turn."""
    run = _join(items)
    hits = _across(run.joined, run.junctions, run.bridged)
    if not hits:
        return ()
    slots = run.slots
    where = (slots[0][0], "content+" + "+".join(_field(slots[0], s) for s in slots[1:]), slots[0][1])
    # the joined text as written, for the placeholder's original value
    raw: list[str] = []
    raw_at: list[tuple[int, int]] = []  # per stretch: where it starts in the raw joined text, and in its slot
    size = 0
    for k, part in enumerate(run.stretches):
        if k:
            joiner = run.joined[run.junctions[k - 1]:run.starts[k]]
            raw.append(joiner)
            size += len(joiner)
        a, b = part.source(part.lo, part.hi)
        raw_at.append((size, a))
        raw.append(part.text[a:b])
        size += b - a
    text = "".join(raw)
    out = []
    for h in hits:
        pieces: list[Piece] = []
        for k, part in enumerate(run.stretches):
            lo, hi = max(h.start, run.starts[k]), min(h.end, run.starts[k] + part.hi - part.lo)
            if lo < hi:
                a, b = part.source(part.lo + lo - run.starts[k], part.lo + hi - run.starts[k])
                pieces.append((part.slot, a, b))
        if len(pieces) < 2:
            continue
        first, last = pieces[0], pieces[-1]
        k0, k1 = slots.index(first[0]), slots.index(last[0])
        start = raw_at[k0][0] + first[1] - raw_at[k0][1]
        end = raw_at[k1][0] + last[2] - raw_at[k1][1]
        out.append((where, text, Hit(h.kind, start, end, h.label, h.explanation), tuple(pieces)))
    return tuple(out)


def seam_hits(query: str | Messages) -> Iterator[tuple[Where, str, Hit, tuple[Slot, int, int], tuple[Slot, int, int]]]:
    """`seam_values` as pairs of pieces: the first of a pair takes the placeholder, the second goes. A value
    in more than two pieces comes as several pairs (pieces 1 and 2, 3 and 4, …; an odd last piece paired
    with an empty span after it), so every piece is replaced and the placeholder stands once per pair."""
    for where, text, h, pieces in seam_values(query):
        pairs = [(pieces[0], pieces[1])]
        rest = pieces[2:]
        pairs += [(rest[k], rest[k + 1] if k + 1 < len(rest) else (rest[k][0], rest[k][2], rest[k][2]))
                  for k in range(0, len(rest), 2)]
        for one, two in pairs:
            yield where, text, h, one, two


def detect(query: str | Messages, tools: Tools | None = None,
           response_format: Mapping[str, Any] | None = None, stop: Sequence[str] | str | None = None,
           tool_choice: Any = None) -> PrivacyReport:
    """Classify a query (a string, or OpenAI-style messages, with the request's tool definitions, response
    format, stop sequences and tool choice) as sensitive or not, with every detection."""
    report = PrivacyReport()
    for (i, fld, j), text in _texts(query, tools, response_format, stop, tool_choice):
        for h in detect_text(text):
            report.detections.append(Detection(h.kind, i, j, h.start, h.end, h.label, h.explanation, fld))
    for (i, fld, j), _, h, pieces in seam_values(query):
        report.detections.append(Detection(h.kind, i, j, h.start, h.end, h.label,
                                           h.explanation + f", split across {_COUNTS.get(len(pieces), len(pieces))}"
                                           " texts", fld))
    return report


# ---------------------------------------------------------------- redaction

_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z_]*_\d+\]")
_TOKEN = re.compile(r"\[([A-Z][A-Z_]*)_(\d+)\]")
_PARTIAL = re.compile(r"\[[A-Z_0-9]*")  # what may be the start of a placeholder cut at a chunk's end
# Values compared as written, character for character: a password differs from its upper-cased copy.
_EXACT_LABELS = frozenset({"SECRET", "PASSWORD"})
_CASEFOLD_LABELS = frozenset({"EMAIL", "ADDRESS"})


def value_key(label: str, value: str) -> tuple[str, str]:
    """What makes two mentions one value: a card or IBAN is its digits and letters whatever the spacing,
    an email or address its case-folded words; secrets stay exact. A model quoting `4539148803436467`
    back must get the placeholder that `4539 1488 0343 6467` got, or restoring would not find it."""
    if label in _EXACT_LABELS:
        return label, value
    value = _fold(value)[0]
    if label in _CASEFOLD_LABELS:
        if label == "EMAIL":  # "jane.roe [at] fastmail [dot] com" is jane.roe@fastmail.com
            value = email_address(value)
        return label, " ".join(value.casefold().split())
    return label, re.sub(r"[\W_]", "", value).upper()


def reserved_tokens(texts: Iterable[str]) -> set[str]:
    """Placeholder-shaped tokens already written in a request ("keep [EMAIL_1] literal"): a generated
    placeholder must not be one of them, or restoring would turn the user's own token into a value."""
    return {m.group() for t in texts for m in _PLACEHOLDER.finditer(t)}


def request_tokens(query: str | Messages, tools: Tools | None = None, response_format: Mapping[str, Any] | None = None,
                   stop: Sequence[str] | str | None = None, tool_choice: Any = None) -> set[str]:
    """`reserved_tokens` of every text of a request."""
    return reserved_tokens(t for _, t in _texts(query, tools, response_format, stop, tool_choice))


class Placeholders:
    """The typed placeholders of one request: the same value (see `value_key`) always gets the same one, and
    later values get the next free number, so placeholders handed out mid-plan never collide (with each
    other, nor with `reserved` tokens the request itself holds)."""

    def __init__(self, mapping: Mapping[str, str] | None = None, reserved: Iterable[str] = ()) -> None:
        """Continue from `mapping` (placeholder -> original), e.g. the one the privacy check made."""
        self.mapping: dict[str, str] = dict(mapping or {})
        self.reserved: set[str] = set(reserved) - set(self.mapping)
        self._by_key: dict[tuple[str, str], str] = {}
        self._count: dict[str, int] = {}
        for token, original in self.mapping.items():
            m = _TOKEN.fullmatch(token)
            if m:
                self._by_key.setdefault(value_key(m.group(1), original), token)
                self._count[m.group(1)] = max(self._count.get(m.group(1), 0), int(m.group(2)))

    def token(self, label: str, value: str) -> str:
        """The placeholder for `value`, handing out a new one the first time it is seen."""
        key = value_key(label, value)
        token = self._by_key.get(key)
        if token is None:
            while token is None or token in self.reserved:
                self._count[label] = self._count.get(label, 0) + 1
                token = f"[{label}_{self._count[label]}]"
            self._by_key[key] = token
            self.mapping[token] = value
        return token


def splice(text: str, spans: Iterable[tuple[int, int, str]]) -> str:
    """`text` with each span replaced by its token, right to left, exactly as `text[:start] + token +
    text[end:]` span after span would do, in one pass (a copy of the text per span took seconds for thousands
    of spans). Spans passed in may overlap (a learned detection covers a passage that holds others): then the
    text after the last start is kept as pieces (string, start, end), the first one last."""
    ordered = sorted(spans)
    out, prev = [], 0
    for start, end, token in ordered:
        if start < prev:
            break
        out += (text[prev:start], token)
        prev = end
    else:  # none overlaps another (the usual case): one slice between each two
        out.append(text[prev:])
        return "".join(out)
    tail: list[tuple[str, int, int]] = []
    at = len(text)  # the text is text[:at] followed by the pieces
    for start, end, token in reversed(ordered):
        if end <= at:
            tail.append((text, end, at))
        else:  # the span reaches past `at`: its end falls in the pieces
            drop = end - at
            while drop and tail:
                piece, lo, hi = tail[-1]
                if hi - lo <= drop:
                    tail.pop()
                    drop -= hi - lo
                else:
                    tail[-1] = (piece, lo + drop, hi)
                    drop = 0
        tail.append((token, 0, len(token)))
        at = start
    return text[:at] + "".join(piece[lo:hi] for piece, lo, hi in reversed(tail))


@overload
def redact(messages: str, report: PrivacyReport) -> tuple[str, dict[str, str]]: ...
@overload
def redact(messages: Messages, report: PrivacyReport) -> tuple[list[dict[str, Any]], dict[str, str]]: ...
def redact(messages: str | Messages, report: PrivacyReport, tools: Tools | None = None,
           response_format: Mapping[str, Any] | None = None, stop: Sequence[str] | str | None = None,
           tool_choice: Any = None) -> tuple[str | list[dict[str, Any]], dict[str, str]]:
    """Replace each detected span with a typed placeholder; return (redacted copy, placeholder -> original).

    The same value (see `value_key`) gets the same placeholder everywhere, so a model can still tell that
    two mentions are one thing. A string query comes back as a string, messages as a new list (the input
    is untouched). Values found in `tools` or `response_format` get their placeholders in the mapping; the
    definitions themselves are rewritten where the call is sent (`strategies.redaction.Redactor`).
    """
    texts = dict(_texts(messages, tools, response_format, stop, tool_choice))
    texts.update((where, text) for where, text, *_ in seam_values(messages))
    placeholders = Placeholders(reserved=reserved_tokens(texts.values()))
    spans: dict[Where, list[tuple[int, int, str]]] = {}
    for d in report.detections:
        where = (d.message, d.field, d.part)
        token = placeholders.token(d.label, texts[where][d.start:d.end])
        spans.setdefault(where, []).append((d.start, d.end, token))
    mapping = placeholders.mapping
    if isinstance(messages, str):
        return splice(messages, spans.get((0, "content", None), [])), mapping
    out = [dict(m) for m in messages]
    copied: set[tuple[int, str]] = set()

    def own(i: int, key: str) -> Any:
        """Message `i`'s content parts or tool calls, copied the first time one of them changes: once per
        message, not once per part or call (a message of thousands of parts, each with a value)."""
        if (i, key) not in copied:
            copied.add((i, key))
            out[i][key] = copy.deepcopy(out[i][key])
        return out[i][key]

    for (i, fld, j), sp in spans.items():
        # a tool definition, the response format, decoded arguments or a value split across two texts: the
        # mapping has the value, and the call is rewritten where it is sent (`Redactor`)
        if i is None or "+" in fld or fld.endswith("(decoded)"):
            continue
        if fld == "name":
            out[i]["name"] = splice(out[i]["name"], sp)
        elif fld != "content":  # tool_calls.<k>.arguments: placeholders are plain [A-Z_0-9], the JSON stays valid
            fn = own(i, "tool_calls")[int(fld.split(".")[1])]["function"]
            fn["arguments"] = splice(fn["arguments"], sp)
        elif j is None:
            out[i]["content"] = splice(out[i]["content"], sp)
        else:
            part = own(i, "content")[j]
            part["text"] = splice(part["text"], sp)
    return out, mapping


def restore(text: str, mapping: Mapping[str, str]) -> str:
    """Put the original values back wherever the model repeated a placeholder; unknown ones stay."""
    if not mapping:
        return text
    return _PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)


class Restorer:
    """Streaming `restore`: feed text deltas, get restored text; a placeholder split across chunks
    (`"... [IB"` + `"AN_1] ..."`) is held back until it is complete, so clients never see half a token."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        """`mapping` is the one `redact` returned for the request being answered."""
        self.mapping = mapping  # read live: a Redactor adds placeholders while the plan runs
        self._buf = ""
        self._size = -1  # the mapping's size when `_longest` was measured
        self._longest = 0

    def _longest_token(self) -> int:
        """The longest placeholder's length, measured again only when the mapping's size changed (it only
        grows): once per chunk, a pass over thousands of placeholders cost more than the chunk itself."""
        if len(self.mapping) != self._size:
            self._size = len(self.mapping)
            self._longest = max(map(len, self.mapping), default=0)
        return self._longest

    def feed(self, delta: str) -> str:
        """Restored text that is safe to emit now."""
        self._buf += delta
        cut = self._buf.rfind("[")
        if cut != -1 and self._buf.find("]", cut) == -1 and len(self._buf) - cut < self._longest_token() \
                and _PARTIAL.fullmatch(self._buf, cut):
            ready, self._buf = self._buf[:cut], self._buf[cut:]
        else:
            ready, self._buf = self._buf, ""
        return restore(ready, self.mapping)

    def flush(self) -> str:
        """Whatever is still held back, at the end of the stream."""
        ready, self._buf = self._buf, ""
        return restore(ready, self.mapping)
