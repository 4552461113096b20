"""Known values that are prefixes of one another (`aaaab`, `aaaaab`, …; `jane@x.com`, `jane.roe@x.com`; cards
sharing their first digits): found in time that grows with the text and what is found, not with the text times
the longest chain of such values, and with the same replacements as a search for each value in turn."""

from __future__ import annotations

import random
from collections.abc import Mapping

from line_count import lines_run

from moai.strategies import known_values
from moai.strategies.known_values import KnownValues, encoded_forms, encoded_pattern


def one_by_one(mapping: Mapping[str, str], text: str) -> list[tuple[int, int, str]]:
    """`KnownValues.spans` as a search for each value in turn, longest first: where it is written (`find`),
    its percent-encoded forms, then its other forms; a span that overlaps one already taken is left."""
    out: list[tuple[int, int, str]] = []
    rank = {token: k for k, token in enumerate(mapping)}
    for token in sorted((t for t in mapping if mapping[t]), key=lambda t: (-len(mapping[t]), rank[t])):
        original = mapping[token]
        found = []
        at = text.find(original)
        while at != -1:
            found.append((at, at + len(original)))
            at = text.find(original, at + len(original))
        for form in encoded_forms(token[1:].rsplit("_", 1)[0], original):
            found += [m.span() for m in encoded_pattern(form).finditer(text)]
        pattern = KnownValues().form(token, original)
        if pattern is not None:
            found += [m.span() for m in pattern.finditer(text)]
        for start, end in found:
            if all(end <= s or start >= e for s, e, _ in out):
                out.append((start, end, token))
    return sorted(out)


def chain_work(mapping: dict[str, str], text: str) -> int:
    known = KnownValues()
    known.sync(mapping)  # the index is built once per request, not per text: only the search is counted
    return lines_run(lambda: known.spans(mapping, text, []), known_values)


def test_a_chain_of_passwords_costs_no_more_than_a_short_one() -> None:
    """60 passwords `aaaa…ab` of lengths 5 to 64 in 8 KB of "a": each offset began a walk down the whole
    chain (0.46 s at 32 KB against 0.03 s for a search value by value)."""
    text = "a" * 8192
    work = {n: chain_work({f"[PASSWORD_{k}]": "a" * (k - 1) + "b" for k in range(5, 5 + n)}, text) for n in (15, 60)}
    assert work[60] < 2 * work[15] + 200, work
    assert work[60] < 2000, work


def test_a_chain_of_emails_and_of_numbers_costs_no_more_than_a_short_one() -> None:
    """The same for emails (their first words a chain) and for cards or ids read over runs of letters and
    digits (`1 1 1 1 …`: every run starts a candidate)."""
    emails = {n: {f"[EMAIL_{k}]": "a" * (k - 1) + "b@x.com" for k in range(5, 5 + n)} for n in (15, 60)}
    cards = {n: {f"[CARD_{k}]": "1" * (k - 1) + "2" for k in range(9, 9 + n)} for n in (15, 60)}
    for mappings, text in ((emails, "a" * 8192), (cards, "1 " * 4096)):
        work = {n: chain_work(mappings[n], text) for n in (15, 60)}
        assert work[60] < 1.2 * work[15] + 200, work


def test_chains_give_the_replacements_of_a_search_value_by_value() -> None:
    """Values that are prefixes, suffixes and parts of one another, under every label kind, added a few at a
    time between texts (the index takes new values as the request goes on)."""
    rng = random.Random(31)
    for _ in range(150):
        stem = rng.choice(["a", "ab", "jane", "4539", "x.y"])
        pool: list[tuple[str, str]] = []
        for k in range(rng.randrange(2, 12)):
            body = stem * rng.randrange(1, 5) + rng.choice(["", "b", "1", stem[:1], "%", " +"]) * rng.randrange(3)
            label = rng.choice(["PASSWORD", "SECRET", "EMAIL", "CARD", "NIR"])
            if label == "EMAIL":
                body += rng.choice(["@x.com", "@x.co", ".roe@x.com", "@x.com.au", "@a.b"])
            elif label in ("CARD", "NIR"):
                body = body.replace("a", "9").replace("j", "7") + "12345678"[:rng.randrange(9)]
            pool.append((f"[{label}_{k + 1}]", body))
        words = [v for _, v in pool] + [stem, " ", "[at]", " dot ", "-", "%40", "+", "A", "B", stem.upper()]
        mapping: dict[str, str] = {}
        known = KnownValues()
        for token, value in pool:
            mapping[token] = value
            if rng.random() < 0.5:
                continue  # several values added before the next text
            text = "".join(rng.choice(words) for _ in range(rng.randrange(1, 16)))
            assert sorted(known.spans(mapping, text, [])) == one_by_one(mapping, text), (mapping, text)
