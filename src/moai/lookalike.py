"""Look-alike queries: two questions that embed almost alike but ask different things.

The semantic response cache answers a new question with a stored answer only when no check here calls the two
look-alikes: different numbers or arithmetic, a negation, one content word swapped, an added qualifier, or a
relation reversed. Each check reads the queries' words, numbers (also spelled out) and arithmetic.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

_WORD = re.compile(r"[a-z0-9]+")
_NEGATION = re.compile(r"\b(?:not|no|never|without|cannot|can't|don't|doesn't|isn't|aren't|won't|shouldn't)\b")
# Words that relate two things: the same words on the other side of one ask the opposite question
# ("km in 5 miles" / "miles in 5 km", "divide A by B", "faster than"). Synonyms share one spelling.
_RELATIONS = {"in": "in", "to": "to", "into": "to", "by": "by", "from": "from", "than": "than", "per": "per",
              "of": "of", "vs": "vs", "versus": "vs"}
# Function words and the filler that paraphrases add or drop ("what's the best way to ..."): not content.
_FILLER_WORDS = (
    "a an the is are was were be been do does did how what which who whom why when where can could would should s "
    "i me my you your to of in on for with by at from and or it its this that these those some any there their them "
    "please way ways best good right steps step tell give show share explain describe mean meaning use using get make"
)
_FILLER = frozenset(_FILLER_WORDS.split())
# Words a paraphrase adds without asking for more: the kind of answer restated ("which *city* is the capital"),
# framing ("in simple terms", "the concept of", "the word 'x'"), or the means ("the code / command to").
# A word outside this list that only one question has narrows or widens it ("worst-case", "and Spanish").
_LIGHT_WORDS = (
    "city country place person people artist name year date day number amount kind type concept idea term word "
    "definition simple simply plain basic basically brief briefly short quick actually exactly really just also "
    "code command syntax snippet find know see called appear seem work technology process"
)
_LIGHT = frozenset(_LIGHT_WORDS.split())
_UNIT_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
               "sixteen seventeen eighteen nineteen")
_UNITS = {w: i for i, w in enumerate(_UNIT_WORDS.split())}
_TENS_WORDS = "twenty thirty forty fifty sixty seventy eighty ninety"
_TENS = {w: 10 * i for i, w in enumerate(_TENS_WORDS.split(), start=2)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}
# Arithmetic: symbols ('%' left out: far more often a percentage than a remainder), and the words that stand
# for an operator between two operands ("17 minus 23")
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[a-z]+|[-+*/^=<>×÷()]")
_OPERATORS = {"-": "-", "+": "+", "*": "*", "×": "*", "/": "/", "÷": "/", "^": "^", "=": "=", "<": "<", ">": ">",
              "(": "(", ")": ")"}
_WORD_OPERATORS = {("plus",): "+", ("minus",): "-", ("times",): "*", ("multiplied", "by"): "*",
                   ("divided", "by"): "/", ("over",): "/", ("to", "the", "power", "of"): "^", ("mod",): "%",
                   ("modulo",): "%", ("equals",): "="}


Token = tuple[str, str, int, int]  # (text, kind: num | word | op, start, end)


def _tokens(text: str) -> list[Token]:
    """Numbers, words and arithmetic symbols, with spelled-out numbers as numbers ('twenty-three' -> '23'). A
    hyphen or slash inside a word ('worst-case', 'gpt-4', 'and/or') is not arithmetic."""
    raw = list(_TOKEN.finditer(text.lower()))
    out: list[Token] = []
    for i, m in enumerate(raw):
        tok = m.group()
        if tok in _OPERATORS:
            if tok in "-/":
                prev = raw[i - 1] if i and raw[i - 1].end() == m.start() else None
                nxt = raw[i + 1] if i + 1 < len(raw) and raw[i + 1].start() == m.end() else None
                if prev is not None and nxt is not None and any(
                        t.group().isalpha() and len(t.group()) > 1 for t in (prev, nxt)):
                    continue
            out.append((_OPERATORS[tok], "op", m.start(), m.end()))
        else:
            out.append((tok, "num" if tok[0].isdigit() else "word", m.start(), m.end()))
    return _number_words(out)


def _number_words(tokens: list[Token]) -> list[Token]:
    """Runs of number words as one number: 'seventeen times twenty-three' compares like '17 times 23', 'one
    hundred and five' like '105', '5 million' like 'five million'."""
    out: list[Token] = []
    total = current = 0.0
    last: str | None = None  # the previous number word of the run: unit, teen, tens or scale
    start = end = 0

    def flush() -> None:
        nonlocal total, current, last
        if last is not None:
            value = total + current
            out.append((str(int(value)) if value.is_integer() else str(value), "num", start, end))
        total = current = 0.0
        last = None

    for i, tok in enumerate(tokens):
        word, kind, s, e = tok
        nxt = tokens[i + 1][0] if i + 1 < len(tokens) else ""
        if kind == "num" and nxt in _SCALES and re.fullmatch(r"\d+(?:\.\d+)?", word):
            flush()  # '5 million': a number the scale word multiplies
            current, last, start, end = float(word), "digits", s, e
            continue
        if word == "and" and last == "scale" and (nxt in _UNITS or nxt in _TENS):
            continue  # 'one hundred and five'
        if kind != "word" or not (word in _UNITS or word in _TENS or word in _SCALES):
            flush()
            out.append(tok)
            continue
        now = "scale" if word in _SCALES else "tens" if word in _TENS else "unit" if _UNITS[word] < 10 else "teen"
        # 'three four' and 'twenty thirty' are two numbers; 'twenty three' and 'three hundred' are one
        if last is not None and now != "scale" and (last in ("unit", "teen", "digits")
                                                     or (last == "tens" and now != "unit")):
            flush()
        if last is None:
            start = s
        end = e
        if now == "scale" and _SCALES[word] == 100:
            current = (current or 1) * 100
        elif now == "scale":
            total += (current or 1) * _SCALES[word]
            current = 0.0
        else:
            current += _TENS.get(word, _UNITS.get(word, 0))
        last = now
    flush()
    return out


@dataclass(frozen=True)
class _Parsed:
    """One query, read for the look-alike checks."""

    numbers: tuple[str, ...]
    expression: tuple[str, ...]
    words: tuple[str, ...]  # content words in order, without numbers and the words that served as operators


@functools.lru_cache(maxsize=4096)  # a lookup compares one query with several stored ones: each is read once
def _parse(text: str) -> _Parsed:
    tokens = _tokens(text)
    operand = [kind == "num" or (kind == "word" and len(t) == 1) for t, kind, _, _ in tokens]
    ops: list[tuple[str, int, int]] = []  # (operator, first token, last token)
    i = 0
    while i < len(tokens):
        if tokens[i][1] == "op":
            ops.append((tokens[i][0], i, i))
        else:
            for phrase, op in _WORD_OPERATORS.items():  # only between two operands: 'how many times' is no product
                j = i + len(phrase)
                if (i > 0 and operand[i - 1] and j < len(tokens) and operand[j]
                        and tuple(t[0] for t in tokens[i:j]) == phrase):
                    ops.append((op, i, j - 1))
                    i = j - 1
                    break
        i += 1
    consumed = {n for _, first, last in ops for n in range(first, last + 1)}
    words = tuple(_content([t for n, (t, kind, _, _) in enumerate(tokens) if kind == "word" and n not in consumed]))
    numbers = tuple(t for t, kind, _, _ in tokens if kind == "num")
    if not any(op not in "()" for op, _, _ in ops):  # brackets alone are prose: 'explain recursion (simply)'
        return _Parsed(numbers, (), words)
    marked: dict[int, str] = {}
    for op, first, last in ops:
        marked[first] = op
        for n in (first - 1, last + 1):
            if not 0 <= n < len(tokens) or n in marked:
                continue
            touching = tokens[n][3] == tokens[first][2] if n < first else tokens[last][3] == tokens[n][2]
            if operand[n] or touching:  # 'len(x)', 'n-1'
                marked[n] = tokens[n][0]
    for n in sorted(marked):  # '2x': a coefficient written against its variable
        if n > 0 and n - 1 not in marked and tokens[n - 1][1] == "num" and tokens[n - 1][3] == tokens[n][2]:
            marked[n - 1] = tokens[n - 1][0]
    return _Parsed(numbers, tuple(marked[n] for n in sorted(marked)), words)


def numbers_of(text: str) -> tuple[str, ...]:
    """The numbers a query mentions, in order: '17*23' and '17*24' embed alike but must not share an answer,
    nor '17 minus 23' and '23 minus 17'."""
    return _parse(text).numbers


def expression_of(text: str) -> tuple[str, ...]:
    """The arithmetic in a query, in order: operators (symbols, or 'plus', 'divided by', 'to the power of'
    between two operands) with their operands. '2x + 3' and '3x + 2', or 'x^2' and '2^x', differ here."""
    return _parse(text).expression


def _content(words: Sequence[str]) -> list[str]:
    out = []
    for w in words:
        stem = w[:-1] if len(w) > 4 and w.endswith("s") else w
        if w not in _FILLER and stem not in _FILLER:
            out.append(stem)
    return out


def content_words(text: str) -> list[str]:
    """Lower-cased words minus filler, numbers and arithmetic words, with a crude plural strip (enough to
    compare two short queries)."""
    return list(_parse(text).words)


def _relations(words: Sequence[str]) -> dict[str, list[tuple[set[str], set[str]]]]:
    """For each relation word, the content words before and after each of its occurrences ('how to convert a
    string to an integer' has two: the swap is around the second)."""
    out: dict[str, list[tuple[set[str], set[str]]]] = {}
    for i, w in enumerate(words):
        rel = _RELATIONS.get(w)
        if rel is not None:
            out.setdefault(rel, []).append((set(_content(words[:i])), set(_content(words[i + 1 :]))))
    return out


def _swapped(a: str, b: str) -> tuple[str, str, str] | None:
    """(word, relation, word) when two content words change sides of the same relation word: 'km in 5 miles' /
    'miles in 5 km', 'string to integer' / 'integer to string', 'X faster than Y' / 'Y faster than X'."""
    ra, rb = _relations(_WORD.findall(a.lower())), _relations(_WORD.findall(b.lower()))
    for rel in sorted(ra.keys() & rb.keys()):
        for (before_a, after_a), (before_b, after_b) in product(ra[rel], rb[rel]):  # occurrences may not line up
            moved_back = (before_a & after_b) - after_a
            moved_front = (after_a & before_b) - before_a
            for x in sorted(moved_back):
                for y in sorted(moved_front):
                    if x != y:
                        return x, rel, y
    return None


def _negated(text: str) -> bool:
    """Odd number of negations: 'foods that are safe' vs 'foods that are not safe' embed almost alike."""
    return len(_NEGATION.findall(text.lower())) % 2 == 1


def lookalike(a: str, b: str) -> str | None:
    """Why two queries that embed alike are still different requests, or None.

    Sentence embeddings score a one-word substitution ('capital of Austria' vs 'of Australia', 'sort by
    key' vs 'by value'), a negation, operands in another order ('17 minus 23' vs '23 minus 17'), an added
    qualifier ('time complexity' vs 'worst-case time complexity') and a reversed relation ('string to
    integer' vs 'integer to string') as nearly identical: the classic false hits of semantic caches. These
    cheap checks catch them; a paraphrase that only rewords passes.
    """
    pa, pb = _parse(a), _parse(b)
    if pa.numbers != pb.numbers:
        return "different numbers"
    if pa.expression != pb.expression:
        return "different expression"
    if _negated(a) != _negated(b):
        return "one is negated"
    wa, wb = set(pa.words), set(pb.words)
    only_a, only_b = wa - wb, wb - wa
    if len(only_a) == 1 and len(only_b) == 1:
        return f"one word differs ({next(iter(only_a))} / {next(iter(only_b))})"
    extra = (only_b if not only_a else only_a if not only_b else set()) - _LIGHT
    if extra:
        return f"one asks for more ({', '.join(sorted(extra))})"
    swap = _swapped(a, b)
    if swap is not None:
        return f"reversed direction ({swap[0]} {swap[1]} {swap[2]})"
    return None
