"""Values a model reads whole though they are written to slip past a scan: invisible and format characters,
other scripts' digits, compatibility forms, combining marks and look-alike letters inside a card number or an
email; and values sent in pieces over several messages or content parts, or with words between the pieces."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moai.gate import privacy
from moai.gate.privacy import detect, redact
from moai.providers.base import ChatParams
from moai.strategies.privacy_guard import privacy_guard

CARD = "4539 1488 0343 6467"  # Luhn-valid Visa, made up
EMAIL = "jane.roe@fastmail.com"


def _digits(zero: int) -> str:
    """CARD written with the ten digits that start at code point `zero`."""
    return "".join(chr(zero + int(c)) if c.isdigit() else c for c in CARD)


def _between(sep: str) -> str:
    return CARD.replace(" ", sep)


def _on_each(mark: str, text: str) -> str:
    return "".join(c + mark if c.isalnum() else c for c in text)


CARDS = {
    "left-to-right marks": _between("\u200e "),
    "right-to-left marks, no spaces": _between("\u200f"),
    "bidi embedding and override": _between("\u202a ").replace("6467", "6467\u202c"),
    "bidi isolates": "4539\u2066 1488\u2069 0343\u2067 6467\u2069",
    "tag characters": "4539\U000e0020 1488\U000e0041 0343\U000e007f 6467",
    "variation selectors and grapheme joiner": "4539\ufe0f 1488\u034f 0343\ufe00 6467",
    "hair spaces": _between("\u200a"),
    "ogham spaces": _between("\u1680"),
    "line and paragraph separators": "4539\u20281488\u20290343\u20286467",
    "arabic-indic digits": _digits(0x660),
    "persian digits": _digits(0x6F0),
    "devanagari digits": _digits(0x966),
    "mathematical bold digits": _digits(0x1D7CE),
    "mathematical monospace digits": _digits(0x1D7F6),
    "struck-through digits": _on_each("\u0336", CARD),
    "keycap digits": _on_each("\ufe0f\u20e3", CARD),
}

EMAILS = {
    "small commercial at": "jane.roe\ufe6bfastmail.com",
    "ideographic full stop": "jane.roe@fastmail\u3002com",
    "halfwidth ideographic full stop": "jane.roe@fastmail\uff61com",
    "cyrillic look-alikes": "j\u0430ne.r\u043ee@f\u0430stm\u0430il.c\u043em",
    "greek look-alikes": "jane.r\u03bfe@fastmail.c\u03bfm",
    "combining underline": _on_each("\u0332", "jane.roe") + "@fastmail.com",
    "tag character": "jane\U000e0020.roe@fastmail.com",
    "marks around the at": "jane.roe\u200e@\u200ffastmail.com",
}


def user(*texts: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": t} for t in texts]


def sent(params: ChatParams) -> str:
    return json.dumps(params.messages, ensure_ascii=False)


def found_whole(before: str, value: str, after: str, kind: str, token: str) -> None:
    """`value` between `before` and `after` is found as written, and redaction replaces all of it."""
    text = before + value + after
    report = detect(text)
    assert report.kinds == [kind]
    [d] = report.detections
    assert (d.start, d.end) == (len(before), len(before) + len(value))  # the span is the value as written
    redacted, mapping = redact(text, report)
    assert redacted == before + token + after
    assert mapping == {token: value}


@pytest.mark.parametrize("value", CARDS.values(), ids=CARDS.keys())
def test_a_card_number_hidden_in_unicode_is_found_and_wholly_redacted(value: str) -> None:
    found_whole("Please charge my card ", value, " tomorrow.", "payment_card", "[CARD_1]")


@pytest.mark.parametrize("value", EMAILS.values(), ids=EMAILS.keys())
def test_an_email_hidden_in_unicode_is_found_and_wholly_redacted(value: str) -> None:
    found_whole("You can write to me at ", value, " any time.", "contact", "[EMAIL_1]")


def test_a_local_only_mix_keeps_a_unicode_hidden_card_local() -> None:
    messages = user(f"My card: {CARDS['left-to-right marks']}")
    assert privacy_guard(messages, "local_only", None).max_tier == "local"


def test_one_value_written_two_ways_gets_one_placeholder() -> None:
    text = f"Card {_digits(0x660)}, that is {CARD}."
    redacted, mapping = redact(text, detect(text))
    assert redacted == "Card [CARD_1], that is [CARD_1]."


@pytest.mark.parametrize("text", [
    "اشتريت ٣ كتب بسعر ١٢٠ ريالاً في عام ٢٠٢٣، وسأعود في الساعة ٥ مساءً.",
    "मैंने २०२३ में ३ किताबें खरीदीं, जिनकी कीमत १२० रुपये थी, और अगले साल फिर आऊँगा।",
    "В 2023 году я купил 3 книги за 1200 рублей, а потом ещё 15 тетрадей для школы.",
    "Пишите в наш канал @ромашка, там 250 участников и новости каждый день.",
    "Στην Ελλάδα αγόρασα 3 βιβλία για 25 ευρώ το 2023.",
    "Le ﬁchier contient 12 lignes, l'épisode Ⅻ dure 45 min et le bureau fait 40 m² au nº 5.",
])
def test_ordinary_text_in_other_scripts_with_numbers_is_not_flagged(text: str) -> None:
    assert not detect(text).sensitive


# ---------------------------------------------------------------- values sent in pieces

SPLIT_CARDS = {
    "four user messages": user("4539", "1488", "0343", "6467"),
    "four messages after a lead-in": user("Here is my card number, in pieces:", "4539", "1488", "0343", "6467",
                                          "Can you check it?"),
    "four content parts": [{"role": "user", "content": [{"type": "text", "text": t}
                                                         for t in ("My card:", "4539", "1488", "0343", "6467")]}],
    "four user turns with answers between": [
        {"role": "user", "content": "my card starts 4539"}, {"role": "assistant", "content": "Go on, please."},
        {"role": "user", "content": "then 1488"}, {"role": "assistant", "content": "Noted. Next group?"},
        {"role": "user", "content": "0343"}, {"role": "assistant", "content": "And the last four digits?"},
        {"role": "user", "content": "6467"},
    ],
    "long words between two halves": user("The first eight digits of my Visa are 4539 1488.",
                                          "The last eight digits are 0343 6467"),
}


@pytest.mark.parametrize("messages", SPLIT_CARDS.values(), ids=SPLIT_CARDS.keys())
def test_a_card_sent_in_pieces_is_found_and_every_piece_redacted(messages: list[dict[str, Any]]) -> None:
    report = detect(messages)
    assert report.kinds == ["payment_card"]
    assert privacy_guard(messages, "local_only", None).max_tier == "local"
    guard = privacy_guard(messages, "redact", None)
    assert guard.redactor is not None
    out = sent(guard.redactor.apply(ChatParams(messages=messages)))
    assert not any(group in out for group in CARD.split()) and "[CARD_1]" in out
    assert guard.redactor.restore("[CARD_1]") == CARD


def test_each_piece_is_located_in_its_own_text() -> None:
    messages = user("Card number:", "4539", "\u200e1488\u200e", "0343", "6467.")
    [(_, joined, hit, pieces)] = list(privacy.seam_values(messages))
    assert joined[hit.start:hit.end].replace("\u200e", "") == CARD
    assert pieces == (((1, None), 0, 4), ((2, None), 1, 6), ((3, None), 0, 4), ((4, None), 0, 4))


def test_an_email_cut_after_its_at_sign_is_found_and_redacted() -> None:
    messages = user("my email is marguerite.lefebvre@", "orange-pro.fr")
    report = detect(messages)
    assert report.kinds == ["contact"]
    [(_, _, _, pieces)] = list(privacy.seam_values(messages))
    assert pieces == (((0, None), 12, 32), ((1, None), 0, 13))
    guard = privacy_guard(messages, "redact", None)
    assert guard.redactor is not None
    out = sent(guard.redactor.apply(ChatParams(messages=messages)))
    assert "lefebvre" not in out and "orange-pro" not in out
    assert guard.redactor.restore("[EMAIL_1]") == "marguerite.lefebvre@orange-pro.fr"


@pytest.mark.parametrize("messages", [
    user("My IBAN starts DE44 5001 0517", "and then it continues with 5407 3249 31"),
    user("My IBAN:", "DE44", "5001 0517", "5407 3249 31"),
])
def test_an_iban_sent_in_pieces_is_found(messages: list[dict[str, Any]]) -> None:
    assert detect(messages).kinds == ["iban"]


def test_long_words_between_pieces_join_only_values_with_a_checksum() -> None:
    # a US SSN has no check digit: pieces with a few words between still join, a long explanation does not
    assert detect(user("My SSN is 536 22", "then 1234")).kinds == ["national_id"]
    assert not detect(user("My SSN is 536 22", "and the remaining four digits after that are: 1234")).sensitive


@pytest.mark.parametrize("messages", [
    # two numbers whose digits would make a Visa-shaped number, but the Luhn check fails
    user("I paid 4539 1488 last month.", "This month it was 0343 6468."),
    # the same with the long lead-in allowed only for checked values
    user("The first eight digits of my Visa are 4539 1488.", "The last eight digits are 0343 6468"),
    # short numbers in a row of messages
    user("We were 12 at dinner", "7", "2024", "15 more came later", "3"),
    # an address with no "@" at the seam is not glued to the next message
    user("Write to jane.roe", "fastmail.com is where I work"),
])
def test_unrelated_numbers_and_words_across_messages_are_not_joined(messages: list[dict[str, Any]]) -> None:
    assert not detect(messages).sensitive
