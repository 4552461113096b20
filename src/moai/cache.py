"""Response cache: answer a repeated (or, optionally, paraphrased) request without calling any model.

Two levels:

* **exact** — a SHA-256 of everything that can change the answer: the mix, the candidate models left
  after the hard constraints, the weights, the privacy level, the messages and every generation
  parameter. A hit costs a dictionary lookup.
* **semantic** (opt-in) — when the conversation before the last user message is identical (same
  *scope*) and the last user message embeds within ``threshold`` cosine similarity of a cached one,
  and no cheap check calls them look-alikes (different numbers, one content word swapped, a reversed
  direction). Sensitive requests never take part: a paraphrase of someone else's card number must not
  return their answer.

Privacy: the key and the scope include the request's privacy level (the least-trusted tier it may use,
after the privacy guard) and whether it carries sensitive data, so a request that is restricted to
local models never receives an answer cached at a less private level, and vice versa.

Tenants: each API key has its own entries (``per_key``, on by default), so one key never receives an answer
another key's request paid for, nor learns what it asked; requests without a key share theirs. A
conversation pinned to a model (sessions) is only answered from that model's entries, so a hit never moves
it to another model.

Bounded in size (LRU) and in time (TTL). A request opts out with ``moai: {cache: false}``; it then
neither reads nor writes. Configure with a ``cache:`` block in the mix instructions' settings, else with
``MOAI_CACHE=off|exact|semantic`` (default ``off``), ``MOAI_CACHE_TTL_S``, ``MOAI_CACHE_MAX_ENTRIES``,
``MOAI_CACHE_THRESHOLD`` and ``MOAI_CACHE_PER_KEY`` (``false`` shares entries across keys).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import ValidationError

from moai.catalog import PRIVACY_RANK
from moai.config import CacheSettings, ConfigError

if TYPE_CHECKING:
    from moai.mixture import Prepared
    from moai.strategies.executor import Execution

Mode = Literal["off", "exact", "semantic"]
Status = Literal["hit", "semantic", "miss", "bypass"]
Embed = Callable[[Sequence[str]], np.ndarray]

DEFAULT_THRESHOLD = 0.9  # chosen on data/paraphrases/pairs.jsonl; see benchmarks/cache.py
SEMANTIC_MAX_CHARS = 1000  # longer queries (documents, code) are exact-only: one changed line changes the answer
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


@dataclass
class CacheEntry:
    """One cached answer and where it came from (for the trace)."""

    key: str
    scope: str
    text: str
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    model: str | None
    source_id: str
    created: float
    expires: float
    vector: np.ndarray | None = None
    query: str | None = None  # the last user message, kept for the look-alike check
    hits: int = 0
    owner: str | None = None  # the API key (id) whose request wrote it: its request id is not shown to others


@dataclass
class Lookup:
    """The outcome of one lookup; memoised on the request so the server header and the engine agree."""

    status: Status
    key: str = ""
    scope: str = ""
    query: str | None = None  # the last user message, when the request may take part in semantic caching
    entry: CacheEntry | None = None
    similarity: float | None = None
    vector: np.ndarray | None = field(default=None, repr=False)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


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


def merge_tool_calls(calls: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Join streamed tool-call fragments (OpenAI deltas keyed by ``index``) into whole calls."""
    if not calls:
        return None
    merged: dict[int, dict[str, Any]] = {}
    for n, c in enumerate(calls):
        i = c.get("index", n)
        m = merged.setdefault(i, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        m["id"] = c.get("id") or m["id"]
        fn = c.get("function") or {}
        m["function"]["name"] = fn.get("name") or m["function"]["name"]
        m["function"]["arguments"] += fn.get("arguments") or ""
    return [merged[i] for i in sorted(merged)]


def default_embed() -> Embed:
    """MiniLM sentence embeddings (the gate's encoder) with the model's full 256-token window."""
    from moai.gate.encoder import MiniLMEncoder

    encoder = MiniLMEncoder(max_tokens=256)
    return encoder.encode


_ENV_ACCEPTS = {  # what each variable takes, for the one-line error a bad value gets
    "mode": "off, exact or semantic",
    "ttl_s": "a number of seconds greater than 0",
    "max_entries": "a whole number of at least 1",
    "threshold": "a number greater than 0 and at most 1",
    "per_key": "true or false (also 1/0, yes/no, on/off)",
}


def _env_name(name: str) -> str:
    return "MOAI_CACHE" if name == "mode" else f"MOAI_CACHE_{name.upper()}"


def cache_settings(config: Any) -> CacheSettings:
    """The config's ``settings.cache`` block, else settings from the ``MOAI_CACHE*`` variables (an empty one
    counts as unset). A bad value is a ConfigError naming the variable and what it accepts."""
    block = getattr(getattr(config, "settings", None), "cache", None) or getattr(config, "cache", None)
    if block is not None:
        return block if isinstance(block, CacheSettings) else CacheSettings.model_validate(dict(block))
    values: dict[str, Any] = {"mode": "off"}
    for name in _ENV_ACCEPTS:
        raw = os.environ.get(_env_name(name), "").strip()
        if raw:
            values[name] = raw.lower() if name in ("mode", "per_key") else raw
    for name, value in values.items():
        try:
            CacheSettings.model_validate({name: value})
        except ValidationError:
            raise ConfigError(f"{_env_name(name)}={value!r} is not valid: use {_ENV_ACCEPTS[name]}") from None
    return CacheSettings.model_validate(values)


class ResponseCache:
    """Thread-safe in-process cache; one per engine (``Mixture.cache``)."""

    def __init__(self, mode: Mode = "exact", ttl_s: float = 3600.0, max_entries: int = 1024,
                 threshold: float = DEFAULT_THRESHOLD, embed: Embed | None = None,
                 clock: Callable[[], float] = time.monotonic, counter: Any = None, per_key: bool = True) -> None:
        self.mode: Mode = mode
        self.per_key = per_key  # partition entries by API key: tenants never see each other's answers
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.threshold = threshold
        self._embed = embed
        self.clock = clock
        self.counter = counter  # prometheus Counter labelled (mix, result), or None
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._scopes: dict[str, dict[str, CacheEntry]] = {}  # scope -> key -> entry (semantic candidates)
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {"hit": 0, "semantic": 0, "miss": 0, "bypass": 0}

    @classmethod
    def from_config(cls, config: Any, counter: Any = None) -> ResponseCache:
        """Settings from a ``cache:`` block when the config has one, else from ``MOAI_CACHE*`` variables."""
        c = cache_settings(config)
        return cls(mode=c.mode, ttl_s=c.ttl_s, max_entries=c.max_entries, threshold=c.threshold, counter=counter,
                   per_key=c.per_key)

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised rows; the encoder is loaded on first use, never at import."""
        if self._embed is None:
            self._embed = default_embed()
        v = np.asarray(self._embed(list(texts)), dtype=np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._scopes.clear()

    # ------------------------------------------------------------------ keys

    @staticmethod
    def privacy_level(prep: Prepared) -> tuple[str, bool]:
        """(least-trusted tier the request may reach, carries sensitive data)."""
        tiers = [c.privacy for c in prep.ctx.candidates]
        tier = max(tiers, key=lambda t: PRIVACY_RANK[t]) if tiers else "local"
        report = prep.ctx.privacy
        return tier, bool(report is not None and report.sensitive)

    def keys(self, prep: Prepared) -> tuple[str, str, str | None]:
        """(exact key, semantic scope, last user message or None when semantic matching is not allowed)."""
        ctx, p = prep.ctx, prep.ctx.params
        tier, sensitive = self.privacy_level(prep)
        base = {
            "mix": ctx.mix_name, "strategy": ctx.mix.strategy, "tier": tier, "sensitive": sensitive,
            "tenant": prep.api_key if self.per_key else None,
            "models": sorted(c.name for c in ctx.candidates), "weights": ctx.weights.model_dump(),
            "params": {"max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p, "stop": p.stop,
                       "seed": p.seed, "tools": p.tools, "tool_choice": p.tool_choice,
                       "response_format": p.response_format,
                       # only when set, so that keys stored before these options existed still match
                       **{k: v for k in ("frequency_penalty", "presence_penalty", "logit_bias", "parallel_tool_calls",
                                         "reasoning_effort") if (v := getattr(p, k)) is not None}},
        }
        key = _sha(_canonical({**base, "messages": p.messages}))
        last = p.messages[-1] if p.messages else {}
        query = _text(last.get("content")) if last.get("role") == "user" else ""
        scope = _sha(_canonical({**base, "context": p.messages[:-1]}))
        content = last.get("content")
        text_only = isinstance(content, str) or (  # an image question is only ever answered from an exact hit
            isinstance(content, list) and all(isinstance(c, dict) and c.get("type") == "text" for c in content))
        allowed = (self.mode == "semantic" and not sensitive and text_only and bool(query.strip())
                   and len(query) <= SEMANTIC_MAX_CHARS)
        return key, scope, (query if allowed else None)

    # ------------------------------------------------------------------ lookup / store

    def lookup(self, prep: Prepared) -> Lookup:
        """Exact, then semantic; memoised on ``prep.cache`` (embedding happens in the caller's thread)."""
        if prep.cache is not None:
            return prep.cache
        if not prep.use_cache:
            return self._done(prep, Lookup("bypass"))
        key, scope, query = self.keys(prep)
        # a conversation stays on its model (or the one it escalated to this turn): another model's answer is no hit
        pinned = prep.ctx.session_pick or prep.ctx.session_model
        now = self.clock()
        with self._lock:
            entry = self._get(key, now, pinned)
            if entry is not None:
                return self._done(prep, Lookup("hit", key, scope, query, entry, 1.0))
            has_candidates = query is not None and bool(self._scopes.get(scope))
        if not has_candidates:
            return self._done(prep, Lookup("miss", key, scope, query))
        assert query is not None
        vec = self.embed([query])[0]
        with self._lock:
            scored: list[tuple[float, CacheEntry]] = []
            for e in list(self._scopes.get(scope, {}).values()):
                if e.expires <= now:
                    self._drop(e.key)
                elif e.vector is not None and e.query is not None and (pinned is None or e.model == pinned):
                    scored.append((float(np.dot(e.vector, vec)), e))
            scored.sort(key=lambda se: -se[0])
            for sim, e in scored:
                if sim < self.threshold:
                    break
                if lookalike(query, e.query or "") is None:
                    self._entries.move_to_end(e.key)
                    e.hits += 1
                    return self._done(prep, Lookup("semantic", key, scope, query, e, sim, vec))
        best = scored[0][0] if scored else None
        return self._done(prep, Lookup("miss", key, scope, query, similarity=best, vector=vec))

    async def alookup(self, prep: Prepared) -> Lookup:
        """``lookup`` without blocking the event loop on the encoder (exact hits stay on the loop)."""
        if prep.cache is not None:
            return prep.cache
        if self.mode == "semantic" and prep.use_cache:
            return await asyncio.to_thread(self.lookup, prep)
        return self.lookup(prep)

    def store(self, prep: Prepared, ex: Execution) -> bool:
        """Keep a successful final answer, also one the final step passed on (the fanout's pick, the cascade's
        accepted try, the draft the critic approved). Rescued, empty or opted-out answers are not kept, nor one
        passed on because the judge or critic that should have vetted it failed or gave no usable verdict."""
        look = prep.cache
        if look is None or look.status != "miss":
            return False
        ans = ex.answer
        if ans.status not in ("ok", "passthrough") or ans.step != ex.plan.final or not (ans.text or ans.tool_calls):
            return False
        unvetted = prep.ctx.unvetted or any(r.status == "failed" and r.role in ("judge", "critic") for r in ex.results)
        if ans.status == "passthrough" and unvetted:
            return False
        vector = look.vector
        if look.query is not None and vector is None:
            vector = self.embed([look.query])[0]
        now = self.clock()
        entry = CacheEntry(look.key, look.scope, ans.text, merge_tool_calls(ans.tool_calls), ans.finish_reason,
                           ans.model, prep.id, now, now + self.ttl_s, vector, look.query, owner=prep.api_key)
        with self._lock:
            self._drop(entry.key)
            self._entries[entry.key] = entry
            if vector is not None:
                self._scopes.setdefault(entry.scope, {})[entry.key] = entry
            while len(self._entries) > self.max_entries:
                self._drop(next(iter(self._entries)))
        return True

    async def astore(self, prep: Prepared, ex: Execution) -> bool:
        look = prep.cache
        if look is not None and look.query is not None and look.vector is None:
            return await asyncio.to_thread(self.store, prep, ex)
        return self.store(prep, ex)

    def _get(self, key: str, now: float, model: str | None = None) -> CacheEntry | None:
        """The live entry under ``key``; with ``model``, only one that model wrote."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            self._drop(key)
            return None
        if model is not None and entry.model != model:
            return None
        self._entries.move_to_end(key)
        entry.hits += 1
        return entry

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            scope = self._scopes.get(entry.scope)
            if scope is not None:
                scope.pop(key, None)
                if not scope:
                    del self._scopes[entry.scope]

    def _done(self, prep: Prepared, look: Lookup) -> Lookup:
        prep.cache = look
        self.counts[look.status] += 1
        if self.counter is not None:
            self.counter.labels(prep.ctx.mix_name, look.status).inc()
        return look

    # ------------------------------------------------------------------ replay

    def replay(self, prep: Prepared, look: Lookup) -> Iterator[Any]:
        """The cached answer as the engine's own stream: deltas, then an Execution costing nothing."""
        from moai.providers.base import Delta
        from moai.strategies.executor import Execution
        from moai.strategies.plan import StepResult

        entry = look.entry
        assert entry is not None
        plan = prep.plan
        now = time.time()
        final = plan.step(plan.final)
        ans = StepResult(step=final.id, role=final.role, model=entry.model, status="cached", text=entry.text,
                         tool_calls=entry.tool_calls, finish_reason=entry.finish_reason, start=prep.started, end=now)
        plan.results[final.id] = ans  # a stream's x-moai-model names the cached answer's model, not today's pick
        age = self.clock() - entry.created
        how = "exact match" if look.status == "hit" else f"similar question (cosine {look.similarity:.3f})"
        # another key's request (a cache shared with per_key: false) is not named: its id and time are its own
        first = (f"in {entry.source_id} {age:.0f}s ago" if entry.owner == prep.api_key
                 else "for another API key")
        plan.notes.append(f"answered from the response cache: {how}, first answered by {entry.model} {first}; "
                          "no model was called")
        calls = [{**c, "index": i} for i, c in enumerate(entry.tool_calls)] if entry.tool_calls else None
        yield Delta(text=entry.text, tool_calls=calls)
        yield Delta(finish_reason=entry.finish_reason)
        yield Execution(plan, ans, [ans])
