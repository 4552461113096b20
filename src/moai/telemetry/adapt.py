"""Live statistics that flow back into routing: latency, time-to-first-token, errors, feedback.

Each process updates its statistics at once from its own calls, and every few seconds rebuilds them from
the shared database (the calls and feedback tables), so that replicas on one PostgreSQL converge on the
same view and a restart resumes where it left off. The policy reads ``snapshot()``; the executor asks
``healthy()`` (a circuit breaker per model: open after repeated failures, half-open probe after a
cool-down, closed again on success). A model that answered 429 is no less healthy, so that is not counted as
a failure; it is only left alone until its ``Retry-After`` has passed (``observe_rate_limit``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from moai.providers.base import MAX_RETRY_AFTER_S, RATE_LIMIT_COOLDOWN_S
from moai.telemetry.feedback import normalise_score, predicted_quality
from moai.telemetry.records import CallRecord, FeedbackRecord, RequestRecord
from moai.telemetry.store import TelemetryStore

PRIOR_STRENGTH = 10.0  # feedback pseudo-counts behind the gate's own estimate
FEEDBACK_GAP_SPAN = 1000  # feedback ids missing this close below the newest one are looked for again
FEEDBACK_TAIL = 64  # the newest feedback ids checked again at each refresh (SQLite reuses a deleted newest id)


def _models_called(s: Session) -> list[str]:
    """Every model with calls on record, by a skip scan of the (model, ended_at) index: one index seek per model.
    ``SELECT DISTINCT model`` read every call there is, every refresh (a second at a million calls)."""
    first = select(func.min(CallRecord.model).label("model")).cte("called", recursive=True)
    after = select(select(func.min(CallRecord.model)).where(CallRecord.model > first.c.model).scalar_subquery()
                   ).where(first.c.model.is_not(None))
    called = first.union_all(after)
    return [m for (m,) in s.execute(select(called.c.model).where(called.c.model.is_not(None))) if m]


MIN_PROMPT_SPREAD = 32.0  # tokens (weighted std): prompts closer in size than this give no slope, only a mean
GENUINE_TTFT = 0.9  # a first token later than this share of the call is the whole call (an unstreamed answer)


@dataclass
class PromptLine:
    """An exponentially weighted least-squares line, seconds ≈ a + b × prompt tokens.

    Kept as running sufficient statistics (weight, weighted means, centred co-moments: the weighted Welford form,
    which loses no precision over a long history), so that one long prompt moves the slope, not the level that
    short prompts are charged. With too little spread in the prompts' sizes the line is their mean; a and b are
    never negative."""

    decay: float = 0.7
    weight: float = 0.0
    mean_x: float = 0.0
    mean_y: float = 0.0
    cxx: float = 0.0  # Σ w (x − mean_x)²
    cxy: float = 0.0  # Σ w (x − mean_x)(y − mean_y)

    def add(self, x: float | None, y: float) -> None:
        """One sample; a prompt of unknown size counts as a typical one (at the mean), moving the level only."""
        x = self.mean_x if x is None else float(x)
        self.weight = self.decay * self.weight + 1.0
        self.cxx *= self.decay
        self.cxy *= self.decay
        dx = x - self.mean_x
        self.mean_x += dx / self.weight
        self.mean_y += (y - self.mean_y) / self.weight
        self.cxx += dx * (x - self.mean_x)
        self.cxy += dx * (y - self.mean_y)

    def coefficients(self) -> tuple[float, float] | None:
        """(a, b), or None before any sample."""
        if not self.weight:
            return None
        level = max(0.0, self.mean_y)
        if self.cxx / self.weight < MIN_PROMPT_SPREAD ** 2 or self.cxy <= 0:
            return level, 0.0
        b = self.cxy / self.cxx
        a = self.mean_y - b * self.mean_x
        if a < 0:  # the least-squares line through the origin instead
            a = 0.0
            b = max(0.0, (self.cxy + self.weight * self.mean_x * self.mean_y)
                    / (self.cxx + self.weight * self.mean_x ** 2))
        return a, b

    def predict(self, prompt_tokens: int | None = None) -> float | None:
        """Seconds for a prompt of this size (None: a typical one, the weighted mean size)."""
        ab = self.coefficients()
        if ab is None:
            return None
        x = self.mean_x if prompt_tokens is None else max(0, prompt_tokens)
        return ab[0] + ab[1] * x


@dataclass
class ModelStats:
    alpha: float = 0.3
    s_per_token: float | None = None  # EWMA of generation time per output token
    # time to the first token (the prompt's prefill) by prompt size: from streamed calls, and from whole calls
    # less their generation once its speed is known
    prefill: PromptLine = field(default_factory=PromptLine)
    # whole-call latency by prompt size: the estimate while the generation speed is not known
    whole: PromptLine = field(default_factory=PromptLine)
    error_rate: float = 0.0
    calls: int = 0
    consecutive_failures: int = 0
    opened_at: float | None = None  # circuit breaker opened (None: closed)
    probing: bool = False
    probe_at: float | None = None  # when the half-open probe was let through
    last_call: float | None = None  # when the last answered or failed call ended
    feedback_n: float = 0.0
    feedback_residual: float = 0.0  # Σ (observed − predicted quality)
    warm: bool = False  # the first successful call (connection set-up, model load) is not representative
    last_ok: float | None = None
    limited_until: float | None = None  # rate limited (429) until then: tried after the other models

    def __post_init__(self) -> None:
        self.prefill.decay = self.whole.decay = 1 - self.alpha

    def _ewma(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.alpha) * old + self.alpha * new

    def decayed_error_rate(self, now: float, half_life_s: float) -> float:
        """The error rate, halved for every ``half_life_s`` without a call: a model that failed for a while and
        then got no traffic (its rate kept it out) is tried again, instead of being shut out for good."""
        if self.last_call is None or not math.isfinite(half_life_s):
            return self.error_rate
        return self.error_rate * 0.5 ** (max(0.0, now - self.last_call) / half_life_s)

    def observe(self, ok: bool, latency_s: float, ttft_s: float | None, output_tokens: int, now: float,
                failure_threshold: int, error_half_life_s: float = math.inf,
                prompt_tokens: int | None = None) -> None:
        self.calls += 1
        before = self.decayed_error_rate(now, error_half_life_s) if self.calls > 1 else None
        self.error_rate = self._ewma(before, 0.0 if ok else 1.0)
        self.last_call = max(self.last_call or now, now)
        if ok and not self.warm:
            self.warm = True
            self.last_ok = now
            self.consecutive_failures, self.opened_at, self.probing, self.probe_at = 0, None, False, None
            return
        if ok:
            self.last_ok = now
            self._observe_latency(latency_s, ttft_s, output_tokens, prompt_tokens)
            self.consecutive_failures = 0
            self.opened_at = None
            self.probing, self.probe_at = False, None
        else:
            self.consecutive_failures += 1
            if self.consecutive_failures >= failure_threshold or self.probing:
                self.opened_at = now
                self.probing, self.probe_at = False, None

    def _observe_latency(self, latency_s: float, ttft_s: float | None, output_tokens: int,
                         prompt_tokens: int | None) -> None:
        """Split an answered call into its prompt's prefill and its generation. A first token that came with
        (nearly) the whole answer is no first-token time: an unstreamed call reports its whole latency there.
        Such a call's prefill is its latency less its generation at the known speed."""
        size = prompt_tokens if prompt_tokens is not None and prompt_tokens > 0 else None  # 0: not counted
        self.whole.add(size, latency_s)
        first = ttft_s if ttft_s is not None and ttft_s < GENUINE_TTFT * latency_s else None
        if first is not None:
            # per-token speed only from streamed calls long enough to separate it from the first token
            if output_tokens >= 8:
                self.s_per_token = self._ewma(self.s_per_token, (latency_s - first) / output_tokens)
            self.prefill.add(size, first)
        elif self.s_per_token is not None:
            self.prefill.add(size, max(0.0, latency_s - self.s_per_token * max(0, output_tokens)))

    def expected_latency_s(self, output_tokens: int, prompt_tokens: int | None = None) -> float | None:
        """Prefill for a prompt of ``prompt_tokens`` (None: a typical one) plus generation of ``output_tokens``;
        the whole-call line by prompt size while the generation speed is not known."""
        prefill = self.prefill.predict(prompt_tokens)
        if self.s_per_token is not None and prefill is not None:
            return prefill + self.s_per_token * output_tokens
        return self.whole.predict(prompt_tokens)


@dataclass
class LiveStats:
    """Per-model statistics with a circuit breaker; thread-safe."""

    failure_threshold: int = 3
    cooldown_s: float = 30.0
    stale_s: float = 120.0  # latency not refreshed for this long is forgotten, so the model gets re-tried
    error_half_life_s: float = 60.0  # the error rate halves every minute without calls (ModelStats.decayed_error_rate)
    window: int = 50  # calls per model read back from the database
    feedback_settle_s: float = 60.0  # how long a missing feedback id (a commit in flight) is looked for again
    models: dict[str, ModelStats] = field(default_factory=dict)
    feedback_rows_read: int = 0  # feedback rows the last refresh fetched: only those it had not read before
    # a key's ratings move routing for that key only (with the keyless ones, which move it for everyone); False:
    # every rating moves it for everyone
    feedback_per_key: bool = True
    # api key id → model → (ratings, Σ residual): the keyed ratings (the keyless ones are in ``models``)
    keyed: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    # api key id → model → the calls of its requests, through this process since it started, that fed the model's
    # live statistics (``observe``): each step the model answered, each answer of it a step set aside for another
    # model's, and each failed attempt at it (a provider's retries in place make one); not the attempts a model
    # refused (400/422) or throttled (429), nor calls cancelled, nor cache hits. What /moai/stats tells a key,
    # which must not learn the others' traffic from a shared model's count
    key_calls: dict[str, dict[str, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _refresh_lock: threading.Lock = field(default_factory=threading.Lock)
    # running totals per (api key id, or None for keyless requests and when ratings are not per key; model)
    _feedback: dict[tuple[str | None, str], _FeedbackTally] = field(default_factory=dict)
    # request id → its feedback rows counted in those totals: (feedback id, the totals it went to, residual)
    _feedback_counted: dict[str, tuple[tuple[int, _FeedbackTally | None, float], ...]] = field(default_factory=dict)
    _feedback_source: str | None = None  # the database they were read from
    _feedback_top: int = 0  # the highest feedback id read
    _feedback_gaps: dict[int, float] = field(default_factory=dict)  # missing id → when first missed (monotonic)
    _feedback_tail: dict[int, tuple[str, float]] = field(default_factory=dict)  # newest ids read → (request, score)
    # the tallies summed up, keyless per model and keyed (``keyed``'s value): None once a tally changes
    _totals: tuple[dict[str, tuple[float, float]], dict[str, dict[str, tuple[float, float]]]] | None = None

    def _get(self, model: str) -> ModelStats:
        if model not in self.models:
            self.models[model] = ModelStats()
        return self.models[model]

    def observe(self, model: str, ok: bool, latency_s: float, ttft_s: float | None = None,
                output_tokens: int = 0, now: float | None = None, prompt_tokens: int | None = None,
                api_key: str | None = None) -> None:
        """One call's outcome; ``prompt_tokens`` (None: not known) sets its prefill apart from other prompts';
        ``api_key``: the id of the key whose request made it (counted in ``key_calls``)."""
        with self._lock:
            if api_key is not None:
                mine = self.key_calls.setdefault(api_key, {})
                mine[model] = mine.get(model, 0) + 1
            self._get(model).observe(ok, latency_s, ttft_s, output_tokens, now or time.time(),
                                     self.failure_threshold, self.error_half_life_s, prompt_tokens)

    def observe_refusal(self, model: str) -> None:
        """A call the model refused for the request's own sake (an unreadable part, too long a prompt) says
        nothing about its health: it is not counted, and a half-open probe it used is handed back, so that the
        next request probes rather than the circuit staying shut."""
        with self._lock:
            st = self.models.get(model)
            if st is not None and st.probing:
                st.probing, st.probe_at = False, None

    def observe_cancelled(self, model: str) -> None:
        """A call cut short (its client left) is no verdict on the model either: a probe it used is handed back."""
        self.observe_refusal(model)

    def observe_rate_limit(self, model: str, retry_after: float | None, now: float | None = None) -> None:
        """The model answered 429: leave it alone for ``retry_after`` seconds (a few when it did not say).

        Not a failure: the error rate and the breaker are untouched, and a half-open probe it used is handed back.
        """
        wait = RATE_LIMIT_COOLDOWN_S if retry_after is None else retry_after
        with self._lock:
            st = self._get(model)
            st.probing = False
            until = (now or time.time()) + wait
            st.limited_until = max(st.limited_until or until, until)

    def observe_feedback(self, model: str, score: float, predicted: float | None, scale: str | None = None,
                         api_key: str | None = None) -> None:
        """One rating (a bare score, or one on a declared scale: see ``normalise_score``) moves the model's quality:
        for requests of ``api_key`` only, when ratings count per key (one tenant's votes are not another's)."""
        residual = normalise_score(score, scale) - (predicted if predicted is not None else 0.5)
        with self._lock:
            st = self._get(model)
            if api_key is None or not self.feedback_per_key:
                st.feedback_n += 1
                st.feedback_residual += residual
                return
            mine = dict(self.keyed.get(api_key, {}))  # copied: the dicts may be the refresh's, which it reuses
            n, total = mine.get(model, (0.0, 0.0))
            mine[model] = (n + 1, total + residual)
            self.keyed = {**self.keyed, api_key: mine}

    def _held(self, st: ModelStats | None, now: float) -> tuple[str | None, bool]:
        """(why the model is held back now, None when it is not; whether calling it now is its circuit's probe)."""
        if st is not None and st.limited_until is not None and now < st.limited_until:
            return f"rate limited for {st.limited_until - now:.0f}s more", False
        if st is None or st.opened_at is None:
            return None, False
        # a probe with no verdict after a whole cool-down (its call lost on the way) is no longer waited for
        stuck = st.probing and st.probe_at is not None and now - st.probe_at >= self.cooldown_s
        if now - st.opened_at >= self.cooldown_s and (not st.probing or stuck):
            return None, True
        return "circuit open", False

    def healthy(self, model: str, now: float | None = None) -> bool:
        """Closed: yes. Open: no, until the cool-down passes; then one probe call is let through. Rate limited:
        no, until its ``Retry-After`` has passed (asked first, so that no probe is reserved for a call not sent)."""
        now = now or time.time()
        with self._lock:
            st = self.models.get(model)
            why, probe = self._held(st, now)
            if probe and st is not None:
                st.probing, st.probe_at = True, now
            return why is None

    def held_back(self, model: str, now: float | None = None) -> str | None:
        """Why ``healthy`` would say no now (its circuit open and cooling off, or a rate limit running), without
        reserving a probe: what a decision shown, not acted on, may ask. None: it would be called."""
        now = now or time.time()
        with self._lock:
            return self._held(self.models.get(model), now)[0]

    def state(self, model: str) -> str:
        st = self.models.get(model)
        if st is None or st.opened_at is None:
            return "closed"
        return "half-open" if st.probing else "open"

    def snapshot(self, output_tokens: int = 256, now: float | None = None,
                 api_key: str | None = None, prompt_tokens: int | None = None) -> dict[str, dict[str, float]]:
        """What the policy reads: model → expected latency, error rate, quality shift (from the keyless ratings
        and, when ratings count per key, those of ``api_key``'s requests). The latency and time to first token
        are for a prompt of ``prompt_tokens`` (None: a typical one for the model): a long prompt's prefill is
        not charged to a short one."""
        now = now or time.time()
        with self._lock:
            mine = self.keyed.get(api_key, {}) if api_key is not None and self.feedback_per_key else {}
            out: dict[str, dict[str, float]] = {}
            for name, st in self.models.items():
                n, total = mine.get(name, (0.0, 0.0))  # posterior shift: normal–normal shrinkage towards the gate
                delta = (st.feedback_residual + total) / (PRIOR_STRENGTH + st.feedback_n + n)
                entry: dict[str, float] = {"error_rate": st.decayed_error_rate(now, self.error_half_life_s),
                                           "quality_delta": delta}
                lat = st.expected_latency_s(output_tokens, prompt_tokens)
                if lat is not None and st.last_ok is not None and now - st.last_ok < self.stale_s:
                    entry["latency_s"] = lat
                ttft = st.prefill.predict(prompt_tokens)
                if ttft is not None:
                    entry["ttft_s"] = ttft
                if st.s_per_token is not None:
                    entry["s_per_token"] = st.s_per_token
                entry["open"] = 0.0 if st.opened_at is None else 1.0
                if st.limited_until is not None and now < st.limited_until:
                    entry["rate_limited_s"] = st.limited_until - now
                out[name] = entry
            return out

    # ---------------------------------------------------------------- shared state through the database

    def refresh(self, store: TelemetryStore) -> None:
        """Rebuild every model's statistics from the newest calls and all feedback in the shared database.

        Only answered ("ok") and failed calls count: "refused" ones (the request's own fault) and "rate_limited"
        ones (a 429) say nothing about the model's health, and skipped or cancelled ones were never a verdict on
        it. A model's latest 429 on record, by any replica, holds it back here too until its ``Retry-After`` has
        passed (``RATE_LIMIT_COOLDOWN_S`` when it did not say); a cool-down seen by this process is kept.

        Feedback is read incrementally: each refresh fetches only the rows it has not read yet (by id), plus the
        newest ``FEEDBACK_TAIL`` ids' (id, request, score), and keeps running per-model totals, which equal a
        full re-read's (the sums are exact, so the order rows arrive in does not matter). An id missing below
        newer ones (a replica's commit still in flight on PostgreSQL) is looked for again for
        ``feedback_settle_s``. Rows deleted other than by a new rating of their request (retention deletes old ones)
        stay counted until the process restarts: what feedback taught is not forgotten because it aged."""
        with self._refresh_lock:
            fresh: dict[str, ModelStats] = {}
            now = time.time()
            with Session(store.engine) as s:
                # the 429s whose Retry-After may still run, on their partial index (a literal status, so that the
                # index is usable; not grouped by model in SQL, where the (model, ended_at) index would be walked)
                limited: dict[str, float] = {}
                for model, ended, wait in s.execute(
                        select(CallRecord.model, CallRecord.ended_at, CallRecord.retry_after_s)
                        .where(text("calls.status = 'rate_limited'"),
                               CallRecord.ended_at > now - max(MAX_RETRY_AFTER_S, RATE_LIMIT_COOLDOWN_S))):
                    until = ended + (RATE_LIMIT_COOLDOWN_S if wait is None else wait)
                    if model and until > max(now, limited.get(model, 0.0)):
                        limited[model] = until
                models = _models_called(s)
                for model in models:
                    rows = s.execute(
                        select(CallRecord.status, CallRecord.latency_ms, CallRecord.ttft_ms,
                               CallRecord.completion_tokens, CallRecord.ended_at, CallRecord.prompt_tokens)
                        .where(CallRecord.model == model, CallRecord.status.in_(("ok", "failed")))
                        .order_by(CallRecord.ended_at.desc()).limit(self.window)
                    ).all()
                    st = ModelStats()
                    for status, lat_ms, ttft_ms, out_tok, ended, in_tok in reversed(rows):
                        st.observe(status == "ok", lat_ms / 1000, ttft_ms / 1000 if ttft_ms else None, out_tok,
                                   ended, self.failure_threshold, self.error_half_life_s, in_tok)
                    fresh[model] = st
                self._read_new_feedback(s, store.url)
            if self._totals is None:  # the tallies changed since they were last summed up
                shared: dict[str, tuple[float, float]] = {}
                keyed: dict[str, dict[str, tuple[float, float]]] = {}
                for (owner, model), tally in self._feedback.items():
                    (shared if owner is None else keyed.setdefault(owner, {}))[model] = (
                        float(tally.n), tally.residual.value)
                self._totals = shared, keyed
            shared, keyed = self._totals
            for model in {*shared, *(m for models in keyed.values() for m in models)}:
                st = fresh.setdefault(model, ModelStats())
                st.feedback_n, st.feedback_residual = shared.get(model, (0.0, 0.0))
            with self._lock:
                for model, st in fresh.items():
                    old = self.models.get(model)
                    if old is not None and old.probing:
                        st.probing, st.probe_at = True, old.probe_at
                    mine = old.limited_until if old is not None else None
                    st.limited_until = max(mine or 0.0, limited.get(model, 0.0)) or None
                    self.models[model] = st
                self.keyed = keyed

    def _read_new_feedback(self, s: Session, source: str) -> None:
        """Bring the per-model totals up to date with the feedback table, reading only what changed.

        Read in full: the rows not read yet (all of them the first time). Also checked, as (id, request, score)
        only: the newest ``FEEDBACK_TAIL`` ids, because SQLite hands the id of a deleted newest row to the next
        insert (a request re-rated at once: ``add_feedback`` replaces a request's rating). A new rating of a
        request rated before may have replaced older rows too: the rows of those requests still there are looked
        up, and the ones gone are taken out of the totals again."""
        newest = s.scalar(select(func.max(FeedbackRecord.id))) or 0
        if source != self._feedback_source or newest < self._feedback_top - FEEDBACK_TAIL:  # another database
            self._feedback, self._feedback_counted, self._feedback_tail, self._totals = {}, {}, {}, None
            self._feedback_top, self._feedback_gaps, self._feedback_source = 0, {}, source
        top, gaps, tail = self._feedback_top, self._feedback_gaps, self._feedback_tail
        fetched, redo = 0, set(gaps)
        if top:  # the tail: rows deleted, or replaced under the same id, since they were read
            seen = {fid: (rid, score) for fid, rid, score in s.execute(
                select(FeedbackRecord.id, FeedbackRecord.request_id, FeedbackRecord.score)
                .where(FeedbackRecord.id > top - FEEDBACK_TAIL, FeedbackRecord.id <= top))}
            fetched += len(seen)
            redo.update(fid for fid in seen if fid not in tail)  # an id read before deleted, and used again
            for fid, (rid, score) in list(tail.items()):
                if seen.get(fid) != (rid, score):
                    self._uncount(rid, fid)
                    del tail[fid]
                    if fid in seen:
                        redo.add(fid)
        if newest <= top and not redo:
            self.feedback_rows_read = fetched
            return
        unread = FeedbackRecord.id > top
        if redo:
            unread = or_(unread, FeedbackRecord.id.in_(sorted(redo)))
        rows = s.execute(
            select(FeedbackRecord.id, FeedbackRecord.request_id, RequestRecord.model, RequestRecord.decision,
                   FeedbackRecord.score, RequestRecord.api_key)
            .join(RequestRecord, FeedbackRecord.request_id == RequestRecord.id)
            .where(unread).order_by(FeedbackRecord.id)
        ).all()
        fetched += len(rows)
        rerated = {rid for _, rid, *_ in rows if rid in self._feedback_counted}
        still_there: set[int] = set()
        for chunk in _chunks(sorted(rerated), 500):
            still_there.update(s.scalars(select(FeedbackRecord.id).where(FeedbackRecord.request_id.in_(chunk))))
        fetched += len(still_there)
        for rid in rerated:  # rows replaced by a newer rating are no longer counted
            for fid, _, _ in self._feedback_counted.get(rid, ()):
                if fid not in still_there:
                    self._uncount(rid, fid)
                    tail.pop(fid, None)
        now = time.monotonic()
        for fid, rid, model, decision, score, api_key in rows:
            gaps.pop(fid, None)
            if fid > top:
                for missing in range(max(top + 1, fid - FEEDBACK_GAP_SPAN), fid):  # perhaps committed later
                    gaps[missing] = now
                top = fid
            tally, residual = None, 0.0
            if model and score is not None and math.isfinite(score):
                predicted = predicted_quality(decision, model)
                residual = normalise_score(score) - (predicted if predicted is not None else 0.5)
                owner = api_key if self.feedback_per_key else None
                tally = self._feedback.setdefault((owner, model), _FeedbackTally())
                tally.n += 1
                self._totals = None
                tally.residual.add(residual)
            self._feedback_counted[rid] = (*self._feedback_counted.get(rid, ()), (fid, tally, residual))
            tail[fid] = (rid, score)
        self._feedback_top = top
        self._feedback_gaps = {i: t for i, t in gaps.items()
                               if now - t < self.feedback_settle_s and i > top - FEEDBACK_GAP_SPAN}
        self._feedback_tail = {fid: v for fid, v in tail.items() if fid > top - FEEDBACK_TAIL}
        self.feedback_rows_read = fetched

    def _uncount(self, rid: str, fid: int) -> None:
        """Take feedback row ``fid`` (of request ``rid``) out of the totals: it was deleted or replaced."""
        kept = []
        for entry in self._feedback_counted.get(rid, ()):
            if entry[0] != fid:
                kept.append(entry)
            elif entry[1] is not None:
                self._totals = None
                entry[1].n -= 1
                entry[1].residual.add(-entry[2])
        if kept:
            self._feedback_counted[rid] = tuple(kept)
        else:
            self._feedback_counted.pop(rid, None)


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class _ExactSum:
    """A float sum that does not depend on the order its terms came in: Shewchuk's exact partials (as in
    ``math.fsum``), so running totals built a few rows at a time equal one full re-read's, bit for bit."""

    __slots__ = ("partials",)

    def __init__(self) -> None:
        self.partials: list[float] = []

    def add(self, x: float) -> None:
        partials, i = self.partials, 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]

    @property
    def value(self) -> float:
        return math.fsum(self.partials)


@dataclass
class _FeedbackTally:
    n: int = 0
    residual: _ExactSum = field(default_factory=_ExactSum)  # Σ (observed − predicted quality)

