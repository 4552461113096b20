"""The search for known values in a call sent to an untrusted model: the same replacements as a search value by
value (kept below as `value_by_value`), in time that grows with the text and the values, not their product.

A request may hold thousands of values (an address book pasted into the prompt): searched one by one, 4,571
emails in 64 KB held the server's event loop for 4 s, and a 4 MB body for far longer."""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from line_count import lines_run

from moai.gate.privacy import REDACTABLE, detect_text, reserved_tokens
from moai.strategies import known_values, redaction
from moai.strategies.known_values import KnownValues
from moai.strategies.redaction import Redactor

# ------------------------------------------------------------------ the search it must agree with


@functools.cache
def pattern_of(token: str, original: str) -> re.Pattern[str] | None:
    """The other forms of a known value, as `KnownValues.form` writes them (unchanged by the index)."""
    return KnownValues().form(token, original)

def encoded_of(token: str, original: str) -> list[re.Pattern[str]]:
    """The percent-encoded forms of a known value, as `encoded_forms` and `encoded_pattern` write them: the
    value quoted, quoted for a query, and an email with "@" as %40, those that differ from it, each with the hex
    digits of its %xx in either case."""
    forms = [quote(original, safe="", errors="surrogatepass"), quote_plus(original, errors="surrogatepass")]
    if token[1:].rsplit("_", 1)[0] == "EMAIL":
        forms.append(original.replace("@", "%40"))
    return [re.compile(re.sub(r"%([0-9A-Fa-f]{2})", lambda m: "%" + "".join(f"[{c.upper()}{c.lower()}]"
                                                                            if c.isalpha() else c for c in m[1]),
                              re.escape(form)))
            for form in dict.fromkeys(forms) if form != original]


def value_by_value(r: Redactor, text: str, extra: Sequence[tuple[int, int, str]] = ()) -> str:
    """`Redactor._text` as a search for each known value in turn: a `find` and a `finditer` of its pattern
    over the whole text per value, each span checked against every span taken, then one slice per span."""
    hits = detect_text(text)
    r._unhideable.update(h.kind for h in hits if h.kind not in REDACTABLE)
    r._placeholders.reserved |= reserved_tokens([text]) - set(r.mapping)
    spans = list(extra) + [(h.start, h.end, r._placeholders.token(h.label, text[h.start:h.end]))
                           for h in hits if h.kind in REDACTABLE]
    for token, original in sorted(r.mapping.items(), key=lambda p: -len(p[1])):
        at = text.find(original) if original else -1
        found = []
        while at != -1:
            found.append((at, at + len(original)))
            at = text.find(original, at + len(original))
        for encoded in encoded_of(token, original) if original else []:
            found += [m.span() for m in encoded.finditer(text)]
        form = pattern_of(token, original) if original else None
        if form is not None:
            found += [m.span() for m in form.finditer(text)]
        for at, end in found:
            if all(end <= s or at >= e for s, e, _ in spans):
                spans.append((at, end, token))
    for start, end, token in sorted(spans, reverse=True):
        text = text[:start] + token + text[end:]
    return text


def assert_same(mapping: dict[str, str], texts: Sequence[str], reserved: Sequence[str] = (),
                extras: Sequence[Sequence[tuple[int, int, str]]] = ()) -> list[str]:
    """Both searches over the same texts in turn (the mapping grows as new values are found): the same
    texts out, the same placeholders handed out."""
    new, old = Redactor(mapping, reserved), Redactor(mapping, reserved)
    outs = []
    for k, text in enumerate(texts):
        extra = extras[k] if k < len(extras) else ()
        got, want = new._text(text, extra), value_by_value(old, text, extra)
        assert got == want, (text, extra)
        assert new.mapping == old.mapping and list(new.mapping) == list(old.mapping)
        assert new._placeholders.reserved == old._placeholders.reserved
        outs.append(got)
    return outs


# ------------------------------------------------------------------ chosen cases

EMAIL, CARD = "jane.roe@fastmail.com", "4539 1488 0343 6467"
KNOWN = {
    "[EMAIL_1]": EMAIL,
    "[EMAIL_2]": "jane.roe@fastmail.com.au",  # holds EMAIL_1
    "[EMAIL_3]": "roe@fastmail.com",  # inside EMAIL_1
    "[EMAIL_4]": "Jo@x.io",
    "[CARD_1]": CARD,
    "[CARD_2]": "4539148803436467",  # the same digits as CARD_1, another placeholder
    "[IBAN_1]": "DE44 5001 0517 5407 3249 31",
    "[PASSWORD_1]": "Blue!3830x",
    "[PASSWORD_2]": "3830",  # inside PASSWORD_1 and nothing else
    "[SECRET_1]": "x",
    "[SSN_1]": "123-45-6789",
}


@pytest.mark.parametrize("text", [
    f"Mail {EMAIL} or {EMAIL.upper()} now",
    "write to jane.roe [at] fastmail [dot] com, Jane.Roe (AT) FastMail (DOT) com or jane.roe chez fastmail point com",
    "jane.roe ＠ fastmail ． com / jane.roe  at  fastmail  dot  com / jane.roe@fastmail.com.au / roe@fastmail.com",
    "xjane.roe@fastmail.comx and jane.roe@fastmail.co",
    "Card 4539-1488-0343-6467, 4539/1488/0343/6467, 4539_1488_0343_6467, 4539..1488..0343..6467 and 4539148803436467",
    "too far: 4539    1488 0343 6467; glued: A4539 1488 0343 6467 and 4539 1488 0343 6467B; 45391488034364670",
    "IBAN de44500105175407324931 and DE44-5001-0517-5407-3249-31 and DE44 5001 0517 5407 3249 31",
    "[EMAIL_1]jane.roe@fastmail.com[CARD_1]4539 1488 0343 6467[PASSWORD_1]Blue!3830x[SECRET_1]",
    "pw Blue!3830x, 3830, blue!3830x, xx x",
    "ids 123-45-6789 and 123456789 and 123 45 6789",
    "",
])
def test_the_same_replacements_as_a_search_value_by_value(text: str) -> None:
    assert_same(KNOWN, [text])


def test_a_value_containing_another_is_replaced_whole() -> None:
    out = assert_same(KNOWN, ["mail jane.roe@fastmail.com.au and Jane.Roe@FastMail.com"])[0]
    assert out == "mail [EMAIL_2] and [EMAIL_1]"


def test_spelled_out_emails_and_separated_cards_get_their_placeholders() -> None:
    text = "jane.roe [at] fastmail [dot] com paid with 4539/1488/0343/6467"
    out = assert_same(KNOWN, [text])[0]
    assert "fastmail" not in out and "1488" not in out
    # whatever the detector makes of them, they are the known values in other forms
    assert sorted(Redactor(KNOWN)._known.spans(KNOWN, text, [])) == [(0, 32, "[EMAIL_1]"), (43, 62, "[CARD_1]")]


def test_values_found_in_one_text_are_searched_for_in_the_next() -> None:
    """The mapping grows as the detector finds values: the next text is searched for them too, in their other
    forms (a model quoting an email in capitals, a card without spaces)."""
    texts = ["Reach me at ana.maria.lopez@correo.es, card 4929 1234 5678 9012 3456",
             "ANA.MARIA.LOPEZ@CORREO.ES / ana.maria.lopez [at] correo [dot] es / 4929123456789012 3456",
             "keep [EMAIL_1] literal; ana.maria.lopez@correo.es"]
    outs = assert_same({}, texts, reserved=["[EMAIL_1]"])
    assert "lopez" not in outs[1].lower()


def test_extra_spans_and_empty_ones_are_kept_as_before() -> None:
    text = "first half 4539 1488 then jane.roe@fastmail.com and 0343 6467"
    extras = [[(11, 20, "[CARD_9]"), (47, 47, ""), (15, 30, "[X_1]"), (60, 61, "")]]
    assert_same(KNOWN, [text], extras=extras)


def test_characters_that_ignore_case_reads_as_others() -> None:
    """re.IGNORECASE reads "ſ" as "s", "ı" as "i", the Kelvin sign as "k", "ς" as "σ"; a combining iota
    (U+0345) is no letter, yet matches an iota."""
    known = {"[EMAIL_1]": "sk.is@kiwi.io", "[NIR_1]": "ΣΙΣΙ12345678", "[NIR_2]": "ABCDEFGHK", "[EMAIL_2]": "ıα@ß.de"}
    texts = ["ſk.\u0131s@\u212aiwi.io and SK.IS [AT] KIWI [DOT] IO and İ",
             "σ\u0345σι12345678 and ΣΙ ΣΙ 1234 5678 and ς\u0345 ς ι1234-5678 and abcdefgh\u212a and abcdefghK",
             "ΙΑ@SS.DE ıα@ß.de IA@ß.DE"]
    assert_same(known, texts)


def test_unusual_emails_are_still_found() -> None:
    known = {"[EMAIL_1]": "a..b@x.com", "[EMAIL_2]": ".x@y.com", "[EMAIL_3]": "q@r.", "[EMAIL_4]": "a b@c d.e",
             "[EMAIL_5]": "w@  ", "[EMAIL_6]": "v@ u.t"}
    texts = ["a..b@x.com a . . b at x dot com .x@y.com [dot]x@y.com q@r.   next q [at] r [dot]  z",
             "a b@c d.e and a b at c d dot e and A B [at] C D (dot) E",
             "w@      z, w@  , w [at]   ; v@ u.t v@   u.t v @  u . t"]
    assert_same(known, texts)


def test_random_texts_give_the_same_replacements() -> None:
    """Texts made of known values in many forms, placeholders, separators and look-alike characters."""
    rng = random.Random(20240611)
    pool = [(label, v) for label, v in [
        ("EMAIL", EMAIL), ("EMAIL", "jane.roe@fastmail.com.au"), ("EMAIL", "roe@fastmail.com"), ("EMAIL", "Jo@x.io"),
        ("EMAIL", "p.k+tag@mail-box.co.uk"), ("EMAIL", "sſ.ı@kelvin.com"), ("EMAIL", "a..b@x.com"),
        ("CARD", CARD), ("CARD", "4539148803436467"), ("CARD", "4539 1488 0343 6467 123"),
        ("IBAN", "DE44 5001 0517 5407 3249 31"), ("SSN", "123-45-6789"), ("NIR", "ΙΙ12345678"), ("DNI", "12345678Z"),
        ("PHONE", "+33 6 12 34 56 78"), ("PASSWORD", "Blue!3830x"), ("PASSWORD", "3830"), ("SECRET", "x"),
        ("SECRET", "ab"), ("ADDRESS", "12 Mill Lane"), ("PHONE", "1234567"),
    ]]
    at_forms = ["@", " @ ", "＠", "[at]", " (AT) ", " at ", "  at  ", " chez ", " bei ", " arroba ", "{ at }", " at",
                "@@"]
    dot_forms = [".", " . ", "．", "[dot]", " (DOT) ", " dot ", " point ", " punkt ", " punto ", "<dot>", "..", " dot"]
    seps = ["", " ", "-", "/", "_", ".", "  ", "   ", "    ", " - ", "\u00a0", "\u0345", "·"]
    filler = ["hello ", "at ", "dot ", " ", "\n", "(", ")", "x", "A", "ſ", "ı", "K", "[EMAIL_1]", "[CARD_2]",
              "[PASSWORD_9]", "_", "1", "ς", "İ", "\u0345", ", "]

    def render(label: str, value: str) -> str:
        how = rng.randrange(6)
        if how == 0:
            return value
        if how == 1:
            return rng.choice([str.upper, str.lower, str.swapcase, str.title])(value)
        if label == "EMAIL" and how < 4:
            parts = re.split(r"([.@])", value)
            return "".join(rng.choice(at_forms) if p == "@" else rng.choice(dot_forms) if p == "." else
                           rng.choice([p, p.upper()]) for p in parts)
        if how < 5:
            chars = re.sub(r"[\W_]", "", value)
            return "".join(c + (rng.choice(seps) if rng.random() < 0.4 else "") for c in chars)
        return value[:rng.randrange(len(value) + 1)]

    for _ in range(120):
        chosen = rng.sample(pool, rng.randrange(1, 9))
        if rng.random() < 0.3:
            chosen.append(rng.choice(chosen))  # one value under two placeholders
        mapping = {f"[{label}_{k + 1}]": v for k, (label, v) in enumerate(chosen)}
        texts = []
        for _ in range(rng.randrange(1, 4)):
            bits = [render(*rng.choice(chosen)) if rng.random() < 0.5 else rng.choice(filler)
                    for _ in range(rng.randrange(1, 14))]
            texts.append("".join(bits))
        extras = [[(a, rng.choice([a, rng.randrange(a, len(t) + 1)]), rng.choice(["", "[CARD_7]"]))
                   for a in (rng.randrange(len(t) + 1) for _ in range(rng.randrange(4)))] for t in texts]
        assert_same(mapping, texts, reserved=rng.choice([(), ("[EMAIL_2]",)]), extras=extras)


def test_a_spelled_out_email_is_matched_as_its_pattern_would() -> None:
    """Where an email's pattern matches, and how far, against the walk and check that stand for it: words
    holding spaces, brackets and "at", separators in every spelling, with spaces around."""
    from moai.strategies.known_values import _SEP_RX, _Entry, _fold, _spelled_end, _Trie, _trie_hits

    rng = random.Random(11)
    word_bits = ["a", "A", "t", "at", "dot", " ", "  ", "x y", "(", "[", "]", "ſ", "S", "ı", "I", "-", "+"]
    text_bits = ["@", "＠", ".", "．", " ", "  ", "[", "]", "(", ")", "<", ">", "{", "}", "at", "AT", "dot", "DoT",
                 "chez", "bei", "arroba", "point", "punkt", "punto", "\n", "\t", "a", "A", "t", "s", "ſ", "i", "ı",
                 "x", "y", "-", "+"]
    for _ in range(400):
        words = ["".join(rng.choice(word_bits) for _ in range(rng.randrange(1, 3))) for _ in range(rng.randrange(2, 4))]
        seps = [rng.choice("@.") for _ in words[1:]]
        seps[rng.randrange(len(seps))] = "@"
        email = "".join(w + s for w, s in zip(words, seps + [""], strict=True))
        pattern = pattern_of("[EMAIL_1]", email)
        assert pattern is not None
        kinds = tuple(int(s == ".") for s in seps)
        cores = [_SEP_RX[k] for k in kinds]
        trie = _Trie()
        path: list[Any] = [_fold(words[0])]
        for kind, w in zip(kinds, words[1:], strict=True):
            path += [kind, _fold(w)]
        trie.insert(path, _Entry("spelled", "[EMAIL_1]", email, tuple(words), kinds))
        for _ in range(5):
            pieces = [rng.choice(words + text_bits) for _ in range(rng.randrange(1, 12))]
            if rng.random() < 0.5:
                pieces.insert(rng.randrange(len(pieces) + 1), email)
            text = "".join(pieces)
            starts = set(_trie_hits(text, trie).get(0, []))
            for i in range(len(text) + 1):
                m = pattern.match(text, i)
                assert _spelled_end(text, i, words, cores) == (m.end() if m else None), (email, text, i)
                assert m is None or i in starts, (email, text, i)


def test_a_number_with_any_separators_is_matched_as_its_pattern_would() -> None:
    from moai.strategies.known_values import _run_end, _Runs

    rng = random.Random(12)
    seps = ["", "", "", " ", "-", "_", "/", "  ", "   ", "    ", "\u0345", "·", ".", "\u00a0"]
    for _ in range(400):
        chars = "".join(rng.choice("ab12sSſkK\u212aıiI9") for _ in range(rng.randrange(8, 12)))
        pattern = pattern_of("[CARD_1]", chars)
        assert pattern is not None
        for _ in range(5):
            spelled = "".join(c + rng.choice(seps) for c in chars)
            text = "".join(rng.choice([spelled, spelled.upper(), chars, "x", " ", "-", "1", chars[:5], "_ "])
                           for _ in range(rng.randrange(1, 6)))
            runs = _Runs(text)
            run_at = {a: r for r, a in enumerate(runs.starts)}
            for i in range(len(text) + 1):
                m = pattern.match(text, i)
                if i not in run_at:
                    assert m is None, (chars, text, i)
                    continue
                got = _run_end(text, runs.starts, runs.offsets, run_at[i], chars)
                assert got == (m.end() if m else None), (chars, text, i)


def test_spans_are_spliced_as_one_slice_after_another() -> None:
    from moai.strategies.known_values import splice

    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice("abcdef ") for _ in range(rng.randrange(0, 30)))
        spans = []
        for _ in range(rng.randrange(0, 6)):
            a = rng.randrange(len(text) + 1)
            spans.append((a, rng.randrange(a, len(text) + 1), rng.choice(["", "X", "[T_1]", "LONGER_TOKEN"])))
        want = text
        for start, end, token in sorted(spans, reverse=True):
            want = want[:start] + token + want[end:]
        assert splice(text, spans) == want, (text, spans)


def test_folding_finds_every_spelling_ignore_case_matches() -> None:
    """Two characters that a pattern with re.I takes for one another fold alike; a character that matches a
    letter or digit of a card is itself a letter or digit, but where the module says so; and folding keeps
    offsets. Read from `re` itself, so a Python with other case rules shows here."""
    from moai.strategies.known_values import _NOT_ONLY_LETTERS, _fold

    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    assert len(_fold(every)) == len(every)
    cased = [c for c in every if c.lower() != c or c.upper() != c]
    together = "".join(cased)
    letter = re.compile(r"[^\W_]")
    for c in cased:
        for t in re.findall(re.escape(c), together, re.I):
            assert _fold(t) == _fold(c), (c, t)
            if c.isalnum() and _fold(c) not in _NOT_ONLY_LETTERS:
                assert letter.fullmatch(t), (c, t)
    uncased = "".join(c for c in every[:0x3000] if c.lower() == c == c.upper())
    assert all(re.search(re.escape(c), uncased, re.I) is None for c in cased[:400])


def test_tool_call_arguments_get_the_originals_escaped() -> None:
    mapping = {f"[PASSWORD_{k}]": f'p"{k}\\' for k in range(1, 500)}
    r = Redactor(mapping)
    args = '{"a": "[PASSWORD_7]", "b": "[PASSWORD_499] [PASSWORD_1000]"}'
    assert json.loads(r.restore_arguments(args)) == {"a": 'p"7\\', "b": 'p"499\\ [PASSWORD_1000]'}


# ------------------------------------------------------------------ cost


def address_book(n: int) -> tuple[dict[str, str], str]:
    """`n` distinct emails and `n` distinct card numbers, each known, all in one text."""
    mapping, lines = {}, []
    for i in range(n):
        email = f"p{i}.n{i % 97}@{['fastmail.com', 'orange.fr', 'gmx.de', 'proton.me'][i % 4]}"
        body = f"453914{i:09d}"
        total = sum((2 * int(d) - 9 * (2 * int(d) > 9)) if k % 2 == 0 else int(d)
                    for k, d in enumerate(reversed(body)))
        digits = body + str(-total % 10)
        card = " ".join(digits[j:j + 4] for j in range(0, 16, 4))
        mapping[f"[EMAIL_{i + 1}]"], mapping[f"[CARD_{i + 1}]"] = email, card
        lines.append(f"{email}: {card}; ")
    return mapping, "".join(lines)


def test_work_grows_with_the_text_not_with_values_times_text() -> None:
    """Four times the values in four times the text: about four times the lines run (a search value by
    value, each span checked against every span taken, runs about sixteen times as many)."""
    work = {}
    for n in (300, 1200):
        mapping, text = address_book(n)
        detect_text(text)  # the privacy check read it already
        work[n] = lines_run(lambda m=mapping, t=text: Redactor(m)._text(t), redaction, known_values)
    assert work[1200] < 6 * work[300], work
