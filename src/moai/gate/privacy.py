"""Sensitive-data detection and redaction: the check behind moai's promise that queries carrying
sensitive data are answered only by trusted (local/private) models.

`detect` scans every message of a query (all roles: a secret in a system prompt leaks just as well; content,
participant names and tool-call arguments) and the request's tool definitions, and returns a
`PrivacyReport`: sensitive or not, the kinds found, and each detection's place and reason for the
decision trace. Explanations never quote the sensitive value, so a trace can be logged safely.

`redact` swaps each detected span for a typed placeholder (`[EMAIL_1]`, `[IBAN_1]`) so a mix with
`sensitive_data: redact` may still use a cloud model; `restore` / `Restorer` put the originals back into
the model's answer, whole or streamed. The recognizers themselves live in `privacy_rules`.
"""

from __future__ import annotations

import bisect
import copy
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

from moai.gate import privacy_scan as scan
from moai.gate.privacy_context import find_confidential, find_health
from moai.gate.privacy_learned import find_semantic
from moai.gate.privacy_rules import KINDS, Hit, find_cards, find_contacts, find_ibans, find_national_ids, find_secrets

__all__ = ["KINDS", "REDACTABLE", "Detection", "Placeholders", "PrivacyReport", "Restorer", "detect", "redact",
           "request_tokens", "reserved_tokens", "restore", "seam_hits", "value_key"]

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


# One character for one character (so spans stay valid in the original): no-break and thin spaces as
# spaces (French writes "52 000 €" with U+202F), dash variants as "-", full-width ASCII ("４５３９", "＠",
# "．") as ASCII: a model reads them all as the plain characters.
_NORMALIZE = str.maketrans(
    {**{chr(0xFF01 + i): chr(0x21 + i) for i in range(94)},
     **{c: " " for c in "\u00a0\u2007\u2009\u202f\u2002\u2003\u3000"},
     **{c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2212"}}
)
# Characters a model does not see (zero-width spaces and joiners, soft hyphens): dropped before the scan,
# or "4539\u200b1488\u200b…" and "jane\u200b@…" would be split for the recognizers and whole for the model.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200d\u2060-\u2064\ufeff]")
_INVISIBLE_CODES = np.array([0xAD, 0x180E, 0x200B, 0x200C, 0x200D, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0xFEFF],
                            dtype=np.uint32)


@functools.lru_cache(maxsize=4096)
def detect_text(text: str) -> tuple[Hit, ...]:
    """All non-overlapping hits in one text. Cached: a chat resends its whole history every turn, and
    only the new message should cost anything."""
    if text.isascii() or _INVISIBLE.search(text) is None:
        return _detect_visible(text)
    # Scan without the invisible characters, then map the spans back onto the text as written.
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    visible = ~np.isin(codes, _INVISIBLE_CODES)
    keep = np.flatnonzero(visible).tolist()
    if not keep:
        return ()
    return tuple(Hit(h.kind, keep[h.start], keep[h.end - 1] + 1, h.label, h.explanation)
                 for h in _detect_visible(codes[visible].tobytes().decode("utf-32-le")) if h.end > h.start)


def _detect_visible(text: str) -> tuple[Hit, ...]:
    text = scan.translate(text, _NORMALIZE)
    try:
        hits = _resolve([h for rec in RECOGNIZERS for h in rec(text)])
        # The learned opinion covers a whole passage, so it stays out of span resolution (it would shadow the
        # precise hits inside it) and only adds a kind the rules did not find.
        found = {h.kind for h in hits}
        hits += [h for h in find_semantic(text) if h.kind not in found]
        return tuple(hits)
    finally:
        scan.release(text)  # the recognizers of this text are done with its index


# Characters either side of the seam between two consecutive texts that are scanned together for values
# with a shape: a card split across content parts, or across two turns, is whole again for the model.
_SEAM = 48
_SHAPED = (find_cards, find_national_ids, find_ibans)
_LEAD = re.compile(r"[^\d\n]{0,24}(?=\d)|")  # words before the next digits ("second half: ")


Slot = tuple[int, int | None]  # (message index, content part index or None for a string content)
Seam = tuple[Where, str, int, tuple[Slot, int], tuple[Slot, int]]


def _seams(query: str | Messages) -> list[Seam]:
    """For each pair of consecutive message texts (contents and their parts; and of consecutive user
    turns): where to report it, the end of one and the start of the next joined by a space, the seam's
    offset in that, and each side's slot with the offset its piece starts at."""
    if isinstance(query, str):
        return []
    seq: list[tuple[Slot, str, bool]] = []
    for i, m in enumerate(query):
        content, user = m.get("content"), m.get("role") == "user"
        if isinstance(content, str):
            seq.append(((i, None), content, user))
        elif isinstance(content, list):
            seq.extend(((i, j), p["text"], user) for j, p in enumerate(content)
                       if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    users = [x for x in seq if x[2]]
    pairs = list(zip(seq, seq[1:], strict=False))
    pairs += [p for p in zip(users, users[1:], strict=False) if p not in pairs]
    out: list[Seam] = []
    for (one, a, _), (two, b, _) in pairs:
        end = len(a.rstrip(" .,;:!?\n"))
        lo = max(0, end - _SEAM)
        left, right, ro = a[lo:end], b[:_SEAM], 0
        if left[-1:].isdigit():  # "first half: 4539 1488" + "second half: 0343 6467": the digits go on
            ro = len(_LEAD.match(right).group())  # type: ignore[union-attr]
            right = right[ro:]
        where = (one[0], "content+" + (f"part {two[1]}" if two[0] == one[0] else f"message {two[0]}"), one[1])
        out.append((where, f"{left} {right}", len(left), (one, lo), (two, ro)))
    return out


def seam_hits(query: str | Messages) -> Iterator[tuple[Where, str, Hit, tuple[Slot, int, int], tuple[Slot, int, int]]]:
    """Shaped values that exist only across a seam (see `_seams`): where, the joined text, the hit (offsets
    into it), and each side's slot with the span of its piece of the value in that slot's text."""
    for where, text, at, (one, lo), (two, ro) in _seams(query):
        for h in _across(text, at):
            yield where, text, h, (one, lo + h.start, lo + at), (two, ro, ro + h.end - at - 1)


@functools.lru_cache(maxsize=4096)
def _across(text: str, at: int) -> tuple[Hit, ...]:
    """Shaped hits in `text` that contain offset `at`. Cached, like `detect_text`, for a chat's history."""
    norm = _INVISIBLE.sub(" ", text).translate(_NORMALIZE)
    return tuple(h for h in _resolve([h for rec in _SHAPED for h in rec(norm)]) if h.start < at < h.end)


def detect(query: str | Messages, tools: Tools | None = None,
           response_format: Mapping[str, Any] | None = None, stop: Sequence[str] | str | None = None,
           tool_choice: Any = None) -> PrivacyReport:
    """Classify a query (a string, or OpenAI-style messages, with the request's tool definitions, response
    format, stop sequences and tool choice) as sensitive or not, with every detection."""
    report = PrivacyReport()
    for (i, fld, j), text in _texts(query, tools, response_format, stop, tool_choice):
        for h in detect_text(text):
            report.detections.append(Detection(h.kind, i, j, h.start, h.end, h.label, h.explanation, fld))
    for (i, fld, j), _, h, _, _ in seam_hits(query):
        report.detections.append(Detection(h.kind, i, j, h.start, h.end, h.label,
                                           h.explanation + ", split across two texts", fld))
    return report


# ---------------------------------------------------------------- redaction

_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z_]*_\d+\]")
_TOKEN = re.compile(r"\[([A-Z][A-Z_]*)_(\d+)\]")
# Values compared as written, character for character: a password differs from its upper-cased copy.
_EXACT_LABELS = frozenset({"SECRET", "PASSWORD"})
_CASEFOLD_LABELS = frozenset({"EMAIL", "ADDRESS"})


def value_key(label: str, value: str) -> tuple[str, str]:
    """What makes two mentions one value: a card or IBAN is its digits and letters whatever the spacing,
    an email or address its case-folded words; secrets stay exact. A model quoting `4539148803436467`
    back must get the placeholder that `4539 1488 0343 6467` got, or restoring would not find it."""
    if label in _EXACT_LABELS:
        return label, value
    value = _INVISIBLE.sub("", value)
    if label in _CASEFOLD_LABELS:
        return label, " ".join(value.translate(_NORMALIZE).casefold().split())
    return label, re.sub(r"[\W_]", "", value.translate(_NORMALIZE)).upper()


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


def _replace_spans(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Right to left, so earlier offsets stay valid while later spans change length."""
    for start, end, token in sorted(spans, reverse=True):
        text = text[:start] + token + text[end:]
    return text


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
    texts.update((where, text) for where, text, *_ in seam_hits(messages))
    placeholders = Placeholders(reserved=reserved_tokens(texts.values()))
    spans: dict[Where, list[tuple[int, int, str]]] = {}
    for d in report.detections:
        where = (d.message, d.field, d.part)
        token = placeholders.token(d.label, texts[where][d.start:d.end])
        spans.setdefault(where, []).append((d.start, d.end, token))
    mapping = placeholders.mapping
    if isinstance(messages, str):
        return _replace_spans(messages, spans.get((0, "content", None), [])), mapping
    out = [dict(m) for m in messages]
    for (i, fld, j), sp in spans.items():
        # a tool definition, the response format, decoded arguments or a value split across two texts: the
        # mapping has the value, and the call is rewritten where it is sent (`Redactor`)
        if i is None or "+" in fld or fld.endswith("(decoded)"):
            continue
        if fld == "name":
            out[i]["name"] = _replace_spans(out[i]["name"], sp)
        elif fld != "content":  # tool_calls.<k>.arguments: placeholders are plain [A-Z_0-9], the JSON stays valid
            calls = copy.deepcopy(out[i]["tool_calls"])
            fn = calls[int(fld.split(".")[1])]["function"]
            fn["arguments"] = _replace_spans(fn["arguments"], sp)
            out[i]["tool_calls"] = calls
        elif j is None:
            out[i]["content"] = _replace_spans(out[i]["content"], sp)
        else:
            parts = copy.deepcopy(out[i]["content"])
            parts[j]["text"] = _replace_spans(parts[j]["text"], sp)
            out[i]["content"] = parts
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

    def feed(self, delta: str) -> str:
        """Restored text that is safe to emit now."""
        self._buf += delta
        cut = self._buf.rfind("[")
        longest = max((len(k) for k in self.mapping), default=0)
        if cut != -1 and "]" not in self._buf[cut:] and len(self._buf) - cut < longest \
                and re.fullmatch(r"\[[A-Z_0-9]*", self._buf[cut:]):
            ready, self._buf = self._buf[:cut], self._buf[cut:]
        else:
            ready, self._buf = self._buf, ""
        return restore(ready, self.mapping)

    def flush(self) -> str:
        """Whatever is still held back, at the end of the stream."""
        ready, self._buf = self._buf, ""
        return restore(ready, self.mapping)
