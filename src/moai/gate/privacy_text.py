"""Text helpers every privacy recognizer shares: the `Hit` they yield, word sets, sentence spans, and the cues
that tell a disclosure from talk about nobody.

A general question about a topic, a template with `[placeholders]`, fiction and made-up example data, and
words quoted to be translated are about nobody; the asker speaking of themself or someone close (first
person) is what turns a topic into a disclosure. Sentences are cut as a reader cuts them: not after
abbreviations (M. Girard, Sr. Molina) nor inside numbers (18.2).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from moai.gate import privacy_scan as scan
from moai.gate.privacy_scan import gated

KINDS: tuple[str, ...] = ("payment_card", "national_id", "iban", "secret", "contact", "health", "confidential")


@dataclass(frozen=True)
class Hit:
    """One recognizer match inside one text (offsets are into that text)."""

    kind: str
    start: int
    end: int
    label: str  # placeholder stem: EMAIL, IBAN, CARD, SSN, ...
    explanation: str


_I = re.IGNORECASE


def words(s: str) -> frozenset[str]:
    """A word set from a whitespace-separated string (long lexicons stay readable)."""
    return frozenset(s.split())


# ---------------------------------------------------------------- shared helpers

GENERIC_QUESTION = re.compile(
    r"^\s*[¿¡]?\s*(?:what|how|why|when|where|who|which|is it|are there|can you explain|explain|define|describe|"
    r"tell me about|dis-moi|raconte|erzähl|beschreib|cuéntame|háblame|"
    r"qu'est-ce|que (?:signifie|veut dire)|comment|pourquoi|quel(?:le)?s?|qui|où|"
    r"was (?:ist|sind|bedeutet)|wie|warum|welche[rs]?|wer|wo|"
    r"qué|cómo|por qué|cuál(?:es)?|quién|dónde|explica)\b", _I,
)
# GENERIC_QUESTION at a position of a text (`match(text, pos)`: its "^" holds only at the text's start).
GENERIC_AT = re.compile(GENERIC_QUESTION.pattern.removeprefix("^"), GENERIC_QUESTION.flags)
# The asker speaking about themself or someone close: what turns a topic question into a disclosure.
FIRST_PERSON = gated(re.compile(
    r"\b(?:I|I'm|I've|my|me|j'ai|je|mon|ma|mes|ich|mein\w*|mir|mich|yo|mi|mis|me|tengo|estoy)\b", _I,
))
# Fiction, role-play and exercises: "in my novel the heroine has leukemia", "a villain reveals the password".
FICTION = gated(re.compile(
    # Bare "story", "histoire", "historia" (also a medical history) or "nouvelle" (also "new") are not enough.
    r"\b(?:novel|short story|screenplay|fiction\w*|villain|heroine|protagonist|role-?play|"
    r"(?:in|for) (?:my|a|the) (?:story|game|script)|(?:a|the|my) character|"
    r"roman|personnage|héroïne|protagoniste|dans (?:mon|un|le) (?:histoire|récit|scénario)|"
    r"drehbuch|romanfigur|hauptfigur|heldin|bösewicht|in (?:meiner|einer) geschichte|"
    r"novela|cuento|guion|personaje|protagonista|villano|heroína|en (?:mi|un|una) (?:relato|historia de ficción)|"
    # made-up example data: "fake employees", "données fictives", "erfundene Namen", "datos ficticios"
    r"made[- ]up|invented|fake (?:data|names?|people|employees?|patients?|customers?|records?)|"
    r"(?:dummy|mock|sample|synthetic|test) (?:data|records|dataset)|fictifs?|fictives?|inventée?s?|"
    r"erfunden\w*|fiktiv\w*|fictici[oa]s?|inventad[oa]s?)\b",
    _I,
))
# "[Employee Name]", "<Company>", "{{patient}}": a template to fill in, about nobody yet.
# (Markdown links, HTML tags and code subscripts have other shapes and do not count.)
_TEMPLATE_SLOT = re.compile(
    r"\[[A-Za-zÀ-ÿ][\w .'/-]{1,38}\](?!\()|<(?:[A-ZÀ-Ý][\w .'-]{1,30}|[a-z]+[ _][\w .'-]{1,30})>|"
    r"\{\{?\s*[A-Za-z][\w .-]{1,30}\}\}?"
)


def is_template(text: str) -> bool:
    """Two or more placeholders: the judgement calls count a template as benign, however HR-like its words.
    (Counting stops at two: a long text with many brackets is read once, and only as far as needed.)"""
    return scan.memo(text, is_template, lambda: next(islice(_TEMPLATE_SLOT.finditer(text), 1, None), None)
                     is not None)


# "Translate 'I have diabetes' into French": the quoted words are material to translate, about nobody, as
# long as nothing outside the quotes speaks of the asker ("... for my mother" does).
_TRANSLATE = gated(re.compile(
    r"\b(?:translat\w*|tradu\w*|übersetz\w*|into (?:english|french|german|spanish|italian|portuguese)|"
    r"(?:en|in|al) (?:anglais|français|allemand|espagnol|englisch|französisch|deutsch|spanisch|inglés|francés|"
    r"alemán|español))\b", _I,
))
_QUOTED = re.compile(
    r"'([^'\n]{3,300})'|\"([^\"\n]{3,300})\"|“([^”\n]{3,300})”|«([^»\n]{3,300})»|„([^“”\n]{3,300})[“”]"
)


def translated_quotes(text: str) -> list[tuple[int, int]]:
    """Spans of quoted passages the text asks to have translated (empty when it asks nothing of the kind)."""
    return scan.memo(text, translated_quotes, lambda: _translated_quotes(text))  # type: ignore[no-any-return]


def _translated_quotes(text: str) -> list[tuple[int, int]]:
    if not scan.search(_TRANSLATE, text):
        return []
    spans = [(m.start(), m.end()) for m in _QUOTED.finditer(text)]
    if not spans:
        return []
    # the text without the quoted passages (joined once: cutting them out one by one copied the text each time)
    rest = "".join(text[a:b] for a, b in zip([0] + [q for _, q in spans], [p for p, _ in spans] + [len(text)],
                                             strict=True))
    if FIRST_PERSON.search(rest) or not _TRANSLATE.search(rest):  # (read once: not worth an index of its own)
        return []
    return spans


_ABBREV = words("mr mrs ms dr sr sra st m mme mlle hr fr nr no vs etc ca bzw inc ltd av avda")
_ABBREV_LEN = max(map(len, _ABBREV))
_END = re.compile(r"[.!?]+|\n")
# The ends of sentences as `sentences` finds them, in one pattern: a line break; a whole run of [.!?] before a
# space or the end, unless it is a lone "." after a one-character word or an abbreviation (spelt in ASCII
# letters either case, as `str.lower` reads them: "ſt." is no "St."). It starts with the character it ends at,
# so `re` skips ahead to the next one, and reads the context only there.
_ENDS = re.compile(
    r"[\n.!?](?:(?<=\n)|(?<![.!?]{2})(?:[.!?]+|(?<=[!?])|(?<!\b\w\.)"
    + "".join(f"(?<!\\b{''.join(f'[{c.upper()}{c}]' for c in a)}\\.)" for a in sorted(_ABBREV))
    + r")(?![.!?])(?=\s|\Z))"
)


def first_person_from(text: str, pos: int) -> bool:
    """`FIRST_PERSON.search(text[pos:])`, remembering where the last search found its match: an address on
    each line of a long text asked for the rest of the text each time."""
    if len(text) < scan.LONG:
        return FIRST_PERSON.search(text, pos) is not None
    last = scan.memo(text, first_person_from, list)  # [searched from, match start or None]
    if not (last and last[0] <= pos and (last[1] is None or pos <= last[1])):
        m = scan.search(FIRST_PERSON, text, pos)
        last[:] = [pos, m.start() if m else None]
    return last[1] is not None


def near(rx: re.Pattern[str], text: str, start: int, end: int, window: int = 60) -> bool:
    """Whether `rx` matches within `window` characters of the span."""
    return scan.search(rx, text, max(0, start - window), min(len(text), end + window)) is not None


def _ends_sentence(text: str, m: re.Match[str]) -> bool:
    """Whether an `_END` match ends a sentence: a line break, or [.!?] before a space that does not follow an
    abbreviation or a single letter. The word before the dot is read back a few characters only (it never
    starts before the sentence: what ends a sentence is no word character), not re-read from the sentence's
    start, which made a long run of "Dr. Dr. ..." quadratic."""
    if m.group() == "\n":
        return True
    if m.end() < len(text) and not text[m.end()].isspace():
        return False
    if m.group() != ".":
        return True
    i = m.start()
    while i > 0 and m.start() - i <= _ABBREV_LEN and (text[i - 1].isalnum() or text[i - 1] == "_"):
        i -= 1
    word = text[i:m.start()]
    return not word or (m.start() - i > _ABBREV_LEN or (word.lower() not in _ABBREV and len(word) != 1))


def sentences(text: str) -> Iterator[tuple[int, int]]:
    """Sentence spans, not cut after abbreviations (M. Girard, Sr. Molina) or inside numbers (18.2)."""
    start = 0
    for m in _END.finditer(text):
        if _ends_sentence(text, m):
            yield start, m.end()
            start = m.end()
    if start < len(text):
        yield start, len(text)


def sentence_around(text: str, at: int, start: int = 0) -> tuple[int, int]:
    """The span `sentences` gives for the sentence holding position `at` (not inside a run of [.!?]), given a
    sentence start `start` <= `at`. Read around `at` (back in doubling steps), not from the text's start: a
    sentence's ends depend only on the characters around them."""
    width = 256
    lo = at
    while lo > start:
        lo = max(start, at - width)
        while lo > start and text[lo - 1] in ".!?":  # a run of [.!?] is read whole, as a full scan reads it
            lo -= 1
        end = None
        for m in _ENDS.finditer(text, lo):
            if m.start() >= at:
                break
            end = m.end()
        if end is not None:
            start = end
            break
        width *= 2
    m = _ENDS.search(text, at)
    return start, m.end() if m else len(text)
