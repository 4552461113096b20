"""Redaction and restoring cost time in proportion to what they read: the text, its parts, the stream's chunks; not
the text times its values (a 4 MB body holds tens of thousands of them, and the work runs on the event loop).
Measured as work done (characters copied, lines run, keys read), never by the clock.

Also: the values a request revealed are found again in a later call when a trusted model wrote them
percent-encoded in a link (`?email=marguerite.lefebvre%40orange-pro.fr`), or with "arobase" for "@"."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from line_count import lines_run
from test_redaction_scaling import assert_same

from moai.gate import privacy
from moai.gate.privacy import Restorer, detect, redact, restore
from moai.providers.base import ChatParams
from moai.strategies.redaction import Redactor

# ------------------------------------------------------------------ measuring work


class Counted(str):
    """A text that counts the characters its slices and concatenations copy (their results count on)."""

    copied = 0

    def __getitem__(self, key: Any) -> Counted:
        out = str.__getitem__(self, key)
        Counted.copied += len(out)
        return Counted(out)

    def __add__(self, other: str) -> Counted:
        out = str.__add__(self, other)
        Counted.copied += len(out)
        return Counted(out)


def emails(n: int) -> list[str]:
    return [f"person{i}.name@{['orange.fr', 'gmx.de', 'fastmail.com'][i % 3]}" for i in range(n)]


# ------------------------------------------------------------------ redact: the text built once


def test_redact_copies_the_text_about_once_however_many_values_it_holds() -> None:
    """Each span replaced by slicing the whole text again copied the text once per value: 16,000 values in 340 KB
    took half a second, a 4 MB body minutes."""
    text = "; ".join(f"write to {e} today" for e in emails(1500))
    report = detect(text)
    assert len(report.detections) == 1500
    want = redact(text, report)
    Counted.copied = 0
    got = redact(Counted(text), report)
    assert got == want and "person" not in got[0]
    assert Counted.copied < 3 * len(text), Counted.copied


@pytest.mark.parametrize("spans", [
    [(0, 3), (5, 9)],
    [(2, 8), (4, 6)],  # one inside another
    [(1, 5), (3, 9), (3, 3), (10, 12)],  # overlapping, empty
    [(0, 12), (0, 12), (6, 12)],
])
def test_overlapping_spans_are_replaced_as_one_after_another(spans: list[tuple[int, int]]) -> None:
    """A learned detection covers a passage that holds others: the spans overlap, and the text comes out as
    replacing them one by one from the right made it."""
    text = "abcdefghijkl"
    report = privacy.PrivacyReport([privacy.Detection("secret", 0, None, a, b, "SECRET", "test") for a, b in spans])
    placeholders = privacy.Placeholders()
    want = text
    for start, end, token in sorted(((a, b, placeholders.token("SECRET", text[a:b])) for a, b in spans), reverse=True):
        want = want[:start] + token + want[end:]
    assert redact(text, report) == (want, placeholders.mapping)
    assert redact([{"role": "user", "content": text}], report)[0][0]["content"] == want


def parts_message(n: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": f"mail {e}"} for e in emails(n)]}]


def calls_message(n: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": "look them up"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"c{k}", "type": "function", "function": {"name": "find", "arguments": f'{{"email": "{e}"}}'}}
                for k, e in enumerate(emails(n))]}]


@pytest.mark.parametrize("make", [parts_message, calls_message], ids=["content parts", "tool calls"])
def test_a_message_is_copied_once_not_once_per_part_with_a_value(make: Callable[[int], list[dict[str, Any]]]) -> None:
    """The whole list of parts (or tool calls) was deep-copied for each part holding a value: n parts, n copies
    of n parts."""
    work = {}
    for n in (40, 160):
        messages = make(n)
        report = detect(messages)
        work[n] = lines_run(lambda m=messages, r=report: redact(m, r), copy)
    assert work[160] < 6 * work[40], work  # a copy per part would be sixteen times


@pytest.mark.parametrize("make", [parts_message, calls_message], ids=["content parts", "tool calls"])
def test_each_part_gets_its_placeholder_and_the_input_is_untouched(make: Callable[[int], list[dict[str, Any]]]) -> None:
    messages = make(5)
    before = copy.deepcopy(messages)
    out, mapping = redact(messages, detect(messages))
    assert messages == before
    assert "person" not in str(out) and len(mapping) == 5
    key = "content" if make is parts_message else "tool_calls"
    m = out[-1][key]
    assert m is not messages[-1][key] and all(a is not b for a, b in zip(m, messages[-1][key], strict=True))
    assert "person" in str(messages)


# ------------------------------------------------------------------ restoring a stream


class Watched(dict[str, str]):
    """A mapping that counts the keys read by going through it."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.keys_read = 0

    def __iter__(self) -> Iterator[str]:
        for key in super().__iter__():
            self.keys_read += 1
            yield key


def test_a_stream_reads_the_placeholders_once_not_once_per_chunk() -> None:
    """The longest placeholder was measured on every chunk: 2,000 chunks with 8,000 values took a second."""
    mapping = Watched({f"[EMAIL_{k}]": f"p{k}@x.org" for k in range(1, 3001)})
    restorer = Restorer(mapping)
    chunks = [f"word {k} [EMAIL_{k % 3000 + 1}] [EMA" if k % 2 else f"IL_{k}] more " for k in range(600)]
    out = "".join(restorer.feed(c) for c in chunks) + restorer.flush()
    assert out == restore("".join(chunks), mapping)
    assert mapping.keys_read <= 2 * len(mapping), mapping.keys_read


def test_a_placeholder_added_during_the_stream_is_held_back_whole() -> None:
    """The mapping grows while the plan runs: a longer placeholder, once added, is waited for when cut."""
    mapping: dict[str, str] = {"[EMAIL_1]": "a@b.io"}
    restorer = Restorer(mapping)
    assert restorer.feed("x [EMAIL_1] [PASSWORD_") == "x a@b.io [PASSWORD_"  # longer than any placeholder yet
    mapping["[PASSWORD_12]"] = "hunter2"
    assert restorer.feed("y [PASSWORD_1") == "y "
    assert restorer.feed("2] z") == "hunter2 z"
    assert restorer.flush() == ""


def test_a_stream_cut_anywhere_restores_as_the_whole_answer_does() -> None:
    rng = random.Random(5)
    mapping = {f"[{label}_{k}]": f"{label.lower()}-{k}" for label in ("EMAIL", "IBAN", "PASSWORD") for k in (1, 2, 13)}
    tokens = [*mapping, "[EMAIL_9]", "[", "]", "[EMAIL", " ", "text", "[email_1]", "\n"]
    for _ in range(200):
        answer = "".join(rng.choice(tokens) for _ in range(rng.randrange(1, 20)))
        cuts = sorted(rng.sample(range(len(answer) + 1), min(len(answer) + 1, rng.randrange(1, 6))))
        chunks = [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)], strict=True)]
        restorer = Restorer(mapping)
        assert "".join(restorer.feed(c) for c in chunks) + restorer.flush() == restore(answer, mapping), chunks


def test_restoring_looks_up_the_placeholders_written_not_every_value() -> None:
    mapping = Watched({f"[CARD_{k}]": f"4539 0000 0000 {k:04d}" for k in range(1, 5001)})
    text = "paid with [CARD_7] and [CARD_4999], not [CARD_9999] " * 3
    assert restore(text, mapping).count("4539 0000 0000 0007") == 3
    assert mapping.keys_read == 0
    assert lines_run(lambda: restore(text, mapping), privacy) < 50


# ------------------------------------------------------------------ values found again, percent-encoded

EMAIL = "marguerite.lefebvre@orange-pro.fr"


def sent(known: dict[str, str], text: str, role: str = "assistant") -> str:
    """What an untrusted model receives of `text`, written earlier in the plan, once the request revealed `known`."""
    params = ChatParams(messages=[{"role": "user", "content": "Summarise the answers below."},
                                  {"role": role, "content": text}])
    content = Redactor(known).apply(params).messages[1]["content"]
    assert isinstance(content, str)
    return content


def test_an_email_a_trusted_model_put_in_a_link_is_sent_as_its_placeholder() -> None:
    text = "Register here: https://events.example.com/signup?email=marguerite.lefebvre%40orange-pro.fr&lang=fr"
    out = sent({"[EMAIL_1]": EMAIL}, text)
    assert out == "Register here: https://events.example.com/signup?email=[EMAIL_1]&lang=fr"


@pytest.mark.parametrize("written", [
    "marguerite.lefebvre%2Brh%40orange-pro.fr",  # quote
    "marguerite.lefebvre%2brh%40orange-pro.fr",  # the same bytes, lower-case hex
    "marguerite.lefebvre+rh%40orange-pro.fr",  # only "@" encoded
])
def test_every_percent_encoding_of_an_email_is_found(written: str) -> None:
    out = sent({"[EMAIL_1]": "marguerite.lefebvre+rh@orange-pro.fr"}, f"mailto link: ?to={written}&subject=hi")
    assert out == "mailto link: ?to=[EMAIL_1]&subject=hi"


@pytest.mark.parametrize("written", ["Blue%20horse%2142%2F", "Blue+horse%2142%2f", "Blue+horse%2142%2F"])
def test_a_password_in_a_link_is_found(written: str) -> None:
    """Nothing around it says it is a password: it is found as the value the request revealed."""
    out = sent({"[PASSWORD_1]": "Blue horse!42/"}, f"notes at https://wiki.example/q?s={written}&lang=fr")
    assert out == "notes at https://wiki.example/q?s=[PASSWORD_1]&lang=fr"


def test_only_the_hex_digits_of_an_escape_may_change_case() -> None:
    known = {"[EMAIL_1]": EMAIL}
    assert sent(known, "MARGUERITE.LEFEBVRE%40ORANGE-PRO.FR x") != "[EMAIL_1] x"
    assert sent(known, "marguerite.lefebvre%40orange-pro.frx") == "[EMAIL_1]x"  # as the value itself is found


@pytest.mark.parametrize("text", ["jane.roe\narobase\nfastmail.com", "jane.roe\tarobase fastmail [dot] com",
                                  "jane.roe  AROBASE  fastmail  point  com"])
def test_arobase_is_a_spelled_out_at(text: str) -> None:
    assert sent({"[EMAIL_1]": "jane.roe@fastmail.com"}, f"contact: {text}") == "contact: [EMAIL_1]"


def test_encoded_forms_give_the_same_replacements_as_a_search_value_by_value() -> None:
    """Known values written percent-encoded, in either case of hex digits, next to their other forms and
    overlapping them: the same replacements as a search for each value and each of its forms in turn."""
    rng = random.Random(2024)
    pool = [("EMAIL", EMAIL), ("EMAIL", "p.k+tag@mail-box.co.uk"), ("EMAIL", "k+@x.io"), ("PASSWORD", "a b/c%2B"),
            ("PASSWORD", "ab+c"), ("CARD", "4539 1488 0343 6467"), ("IBAN", "DE44 5001 0517 5407 3249 31"),
            ("SECRET", "x y"), ("ADDRESS", "12 Mill Lane"), ("EMAIL", "é@ü.de")]
    filler = ["%", "%2", "%2B", "%40", "+", " ", "@", "x", "a", "[at]", " arobase ", "?q=", "&"]

    def render(value: str) -> str:
        form = rng.choice([value, quote(value, safe=""), quote_plus(value), value.replace("@", "%40"),
                           value[:rng.randrange(len(value) + 1)]])
        return "".join(c.lower() if rng.random() < 0.5 else c for c in form) if "%" in form else form

    for _ in range(150):
        chosen = rng.sample(pool, rng.randrange(1, 6))
        mapping = {f"[{label}_{k + 1}]": v for k, (label, v) in enumerate(chosen)}
        texts = ["".join(render(rng.choice(chosen)[1]) if rng.random() < 0.5 else rng.choice(filler)
                         for _ in range(rng.randrange(1, 12))) for _ in range(rng.randrange(1, 3))]
        assert_same(mapping, texts)


def test_values_found_later_are_found_percent_encoded_too() -> None:
    """The encoded forms are indexed on the first text that may hold one, then kept up to date as the detector
    finds new values."""
    texts = ["50% done, see jane.roe%40fastmail.com", "mail ana.lopez@correo.es", "?u=ana.lopez%40correo.es&v=1",
             "bo.li@web.de or bo.li%40web.de"]
    outs = assert_same({"[EMAIL_1]": "jane.roe@fastmail.com"}, texts)
    assert outs == ["50% done, see [EMAIL_1]", "mail [EMAIL_2]", "?u=[EMAIL_2]&v=1", "[EMAIL_3] or [EMAIL_3]"]
