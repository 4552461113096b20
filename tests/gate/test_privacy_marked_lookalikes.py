"""A look-alike letter carrying a combining mark in an email (`jа́ne@x.com`: a Cyrillic "а" and U+0301) reads as
the Latin letter, as the look-alike alone and a mark on a Latin letter do: the email is found and replaced whole,
its span covering the mark."""

from __future__ import annotations

import pytest

from moai.gate.privacy import detect, detect_text, redact


@pytest.mark.parametrize("email", [
    "j\u0430\u0301ne@x.com",  # Cyrillic а + combining acute
    "j\u0430\u0301\u0301ne.roe@x.com",  # two marks
    "j\u0430\u0301\u200bne@x.com",  # a mark, then an invisible character
    "jane@x\u0430\u0301mple.com",  # in the domain
    "\u043e\u0301pa@x.com",  # a Cyrillic о with a mark at the start
    "iv\u0430\u0301n.petrov@mail.ru",
])
def test_an_email_with_a_marked_lookalike_is_found_and_replaced_whole(email: str) -> None:
    text = f"write to {email} today"
    hits = [(text[h.start:h.end], h.label) for h in detect_text(text) if h.kind == "contact"]
    assert hits == [(email, "EMAIL")]
    redacted, mapping = redact(text, detect(text))
    assert redacted == "write to [EMAIL_1] today"
    assert mapping == {"[EMAIL_1]": email}


@pytest.mark.parametrize(("text", "value"), [
    ("write to j\u0430ne@x.com today", "j\u0430ne@x.com"),  # the look-alike alone
    ("write to ja\u0301ne@x.com today", "ja\u0301ne@x.com"),  # a mark on a Latin letter
    ("write to jáne@x.com today", "jáne@x.com"),
    ("Пишите на почта@пример.рф", "почта@пример.рф"),  # no Latin letter: no look-alike read
])
def test_emails_found_before_stay_found(text: str, value: str) -> None:
    assert [text[h.start:h.end] for h in detect_text(text) if h.kind == "contact"] == [value]


def test_marked_cyrillic_prose_without_an_email_stays_as_written() -> None:
    from moai.gate.privacy import _fold

    text = "Он сказа\u0301л, что по\u0301чта придёт, and wrote x@ later"
    folded, pos = _fold(text)
    assert folded == text and pos is None
