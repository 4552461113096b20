"""Response cache: answer a repeated (or, optionally, paraphrased) request without calling any model.

Two levels:

* **exact** — a SHA-256 of everything that can change the answer: the mix, the candidate models left
  after the hard constraints, the weights, the privacy level, the messages and every generation
  parameter. A hit costs a dictionary lookup.
* **semantic** (opt-in) — when the conversation before the last user message is identical (same
  *scope*) and the last user message embeds within ``threshold`` cosine similarity of a cached one,
  and no cheap check (``moai.lookalike``) calls them look-alikes (different numbers, one content word
  swapped, a reversed direction). Sensitive requests never take part: a paraphrase of someone else's
  card number must not return their answer.

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
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import ValidationError

from moai.catalog import PRIVACY_RANK
from moai.config import CacheSettings, ConfigError
from moai.lookalike import content_words, expression_of, lookalike, numbers_of
from moai.strategies.plan import REVIEW_ROLES

if TYPE_CHECKING:
    from moai.mixture import Prepared
    from moai.strategies.outcome import Execution

__all__ = [
    "DEFAULT_THRESHOLD", "SEMANTIC_MAX_CHARS", "CacheEntry", "Embed", "Lookup", "Mode", "ResponseCache", "Status",
    "cache_settings", "content_words", "default_embed", "expression_of", "lookalike", "merge_tool_calls",
    "numbers_of",
]

Mode = Literal["off", "exact", "semantic"]
Status = Literal["hit", "semantic", "miss", "bypass"]
Embed = Callable[[Sequence[str]], np.ndarray]

DEFAULT_THRESHOLD = 0.9  # chosen on data/paraphrases/pairs.jsonl; see benchmarks/cache.py
SEMANTIC_MAX_CHARS = 1000  # longer queries (documents, code) are exact-only: one changed line changes the answer


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
                                         "reasoning_effort") if (v := getattr(p, k)) is not None},
                       **p.sampling_extras()},
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
        unvetted = prep.ctx.unvetted or any(r.status == "failed" and r.role in REVIEW_ROLES for r in ex.results)
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
        from moai.strategies.outcome import Execution
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
