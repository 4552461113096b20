"""Known values that are prefixes of one another (`aaaab`, `aaaaab`, …; `jane@x.com`, `jane.roe@x.com`; cards
sharing their first digits): where they are not written, found in time that grows with the text, not with the text
times the longest chain of such values; where a chain is written at every offset, every value of it is a
candidate there, and the time grows with those candidates. The replacements are those of a search for each value
in turn, whether the trie is walked or its heads found by automata; automata are built only where they pay."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest
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


def test_ids_are_read_from_the_start_of_a_long_run_only() -> None:
    """60 ids written with dashes (`1-1-1-…`), their letters a chain of "1"s, and one run of "1"s: the run's start
    is the one place a candidate can be, and what lies inside the run is not read (the automata reported each
    of its offsets for every id, then threw them away: 0.225 s at 32 KB, 0.008 s before)."""
    mapping = {f"[CARD_{k}]": "-".join("1" * k) for k in range(9, 69)}
    work = {n: chain_work(mapping, "1" * n) for n in (2048, 8192)}
    assert work[8192] < 1.5 * work[2048] + 200, work


class _CountedAutomaton:
    """An automaton that counts how many were built."""

    built = 0

    def __new__(cls) -> object:
        cls.built += 1
        return _AUTOMATON()


_AUTOMATON = known_values.ahocorasick.Automaton


def test_many_values_build_no_automaton_for_a_first_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 random values and a first text: a walk reads it at a few nodes per offset, and building the values
    into automata would cost more than that walk (50,000 values: 0.36–0.70 s against 0.17–0.20 s, 30 MB more)."""
    monkeypatch.setattr(_CountedAutomaton, "built", 0)
    monkeypatch.setattr(known_values.ahocorasick, "Automaton", _CountedAutomaton)
    rng = random.Random(5)
    mapping = {f"[PASSWORD_{k}]": "".join(rng.choice("abcdefXYZ0123!$") for _ in range(12)) for k in range(5000)}
    text = " ".join(rng.choice(list(mapping.values())) for _ in range(300))
    assert len(KnownValues().spans(mapping, text, [])) == 300
    assert _CountedAutomaton.built == 0
    chain = {f"[PASSWORD_{k}]": "a" * (k - 1) + "b" for k in range(5, 65)}
    KnownValues().spans(chain, "a" * 100, [])  # a chain: the automata read it
    assert _CountedAutomaton.built > 0


@pytest.mark.parametrize("read_by", ["walk", "automata"])
def test_chains_give_the_replacements_of_a_search_value_by_value(read_by: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values that are prefixes, suffixes and parts of one another, under every label kind, added a few at a
    time between texts (the index takes new values as the request goes on); every trie walked, or every one
    read by automata (runs of letters and digits too, where they are short)."""
    monkeypatch.setattr(known_values, "_WALK_STEPS", 0 if read_by == "automata" else 10**9, raising=False)
    monkeypatch.setattr(known_values, "_BUILD_COST", 0 if read_by == "automata" else 10**9, raising=False)
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
