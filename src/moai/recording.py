"""The end of every request: one telemetry record (with a row per model call, billed failed tries included),
live statistics and metrics, live tuning, and the session's model; for answered, failed, refused and cancelled
requests alike."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from moai.config import Config
from moai.providers.base import ProviderRateLimited, is_refusal
from moai.refusals import UnknownModel, refusal
from moai.strategies.executor import Executor
from moai.strategies.outcome import Execution, Spend, attempt_spend, total_spend
from moai.telemetry.adapt import LiveStats
from moai.telemetry.metrics import Metrics
from moai.telemetry.records import CallRecord, RequestRecord
from moai.telemetry.store import TelemetryStore
from moai.telemetry.writer import TelemetryWriter
from moai.tuning.live import LiveTuner, not_decided_by_knob
from moai.upstream_errors import redacted

if TYPE_CHECKING:
    from moai.config import Mix
    from moai.mixture import Prepared

log = logging.getLogger("moai")


def _model_cut_short(prep: Prepared, results: list[Any]) -> str | None:
    """The model a cancelled request was being answered by, as its row and ``/metrics`` name it (its calls name
    it too: a request filed under no model hid which model its clients walk away from): the final step's, once
    it had started, else the model of the call started last, a call still running before one that had answered.
    None when no model had been called."""
    called = [r for r in results if r.model and r.status not in ("skipped", "passthrough")]
    final = next((r for r in called if r.step == prep.plan.final), None)
    if final is not None:
        return final.model
    return max(called, key=lambda r: (r.status != "ok", r.start)).model if called else None


class Recording:
    """The recording of a Mixture's requests (its ``config``, ``executor``, ``store``, ``writer``, ``stats``,
    ``metrics``, ``tuners``, ``stopping`` and ``resolve``)."""

    config: Config
    executor: Executor
    store: TelemetryStore | None
    writer: TelemetryWriter | None
    stats: LiveStats
    metrics: Metrics
    tuners: dict[str, LiveTuner]
    stopping: Callable[[], bool]
    _sessions: OrderedDict[tuple[str | None, str, str], str]

    if TYPE_CHECKING:
        def resolve(self, model: str) -> tuple[str, Mix]: ...

    def _record(self, prep: Prepared, status: str, error: str | None, results: list[Any],
                answer_model: str | None, http_status: int) -> RequestRecord:
        now = time.time()
        final = next((r for r in results if r.step == prep.plan.final), None)
        total = total_spend(results)  # billed failed tries included: each is on its call's row below
        rec = RequestRecord(
            id=prep.id, mix=prep.ctx.mix_name, strategy=prep.plan.strategy, model=answer_model,
            status=status, http_status=http_status, stream=prep.stream,
            prompt_tokens=total.usage.prompt_tokens, completion_tokens=total.usage.completion_tokens,
            latency_ms=(now - prep.started) * 1000,
            ttft_ms=(final.start + final.ttft_s - prep.started) * 1000 if final and final.ttft_s else None,
            cost_usd=total.cost_usd, energy_kwh=total.energy_kwh, co2_g=total.co2_g, error=self._stored(error),
            decision=prep.ctx.decision.to_json() if prep.ctx.decision else None, api_key=prep.api_key,
            session=self.store.session_digest(prep.ctx.session) if self.store is not None else None,
        )
        for r in results:
            # a row per model call (a provider's retries in place are part of their call), each with what the
            # upstream billed for it, so that the rows add up to the request
            answered = Spend()
            for a in r.attempts:  # every failed attempt is a call of its own: live statistics need them
                if "error" not in a:
                    answered = attempt_spend(a)  # billed tries before the answer: the answering call's row
                    continue
                start = a.get("start", r.start)
                # a refusal of the request itself, or a 429, is kept apart: neither says the model is unhealthy
                status = "refused" if is_refusal(a.get("status")) else "failed"
                if a.get("status") == ProviderRateLimited.status:
                    status = "rate_limited"
                spent = attempt_spend(a)
                # a failed step's usage (a stream that broke mid-answer, a call cut short) is its last attempt's
                if r.status == "failed" and a is r.attempts[-1] and a["model"] == r.model:
                    spent.add(Spend(r.usage, r.cost_usd, r.energy_kwh, r.co2_g))
                rec.calls.append(CallRecord(
                    step=r.step, role=r.role, model=a["model"], status=status, started_at=start,
                    ended_at=start + a["latency_ms"] / 1000, latency_ms=a["latency_ms"], error=self._stored(a["error"]),
                    prompt_tokens=spent.usage.prompt_tokens, completion_tokens=spent.usage.completion_tokens,
                    cost_usd=spent.cost_usd, energy_kwh=spent.energy_kwh, co2_g=spent.co2_g,
                    retry_after_s=a.get("retry_after_s") if status == "rate_limited" else None,
                ))
            if (r.status == "failed" and r.attempts) or r.status in ("skipped", "passthrough"):
                continue  # its calls are its attempts' rows; a skipped step, or one reusing an answer, made none
            answered.add(Spend(r.usage, r.cost_usd, r.energy_kwh, r.co2_g))
            rec.calls.append(CallRecord(
                step=r.step, role=r.role, model=r.model, status=r.status, started_at=r.start, ended_at=r.end,
                latency_ms=r.latency_ms, ttft_ms=r.ttft_s * 1000 if r.ttft_s else None,
                prompt_tokens=answered.usage.prompt_tokens, completion_tokens=answered.usage.completion_tokens,
                cost_usd=answered.cost_usd, energy_kwh=answered.energy_kwh, co2_g=answered.co2_g,
                error=self._stored(r.error),
            ))
        return rec

    def _stored(self, error: str | None) -> str | None:
        """An upstream's error as the database keeps it: without the API keys moai sent it (an upstream may echo
        its request's headers) or other credentials, which the report and backups would spread."""
        return redacted(error, self.config) if error else error

    def _observe(self, prep: Prepared, status: str, results: list[Any], answer_model: str | None) -> None:
        """Feed live statistics and metrics from every attempt of every step (a refused request is no failure
        of the model: it neither counts in the error rate nor trips the breaker; nor does a 429, whose cool-down
        the executor has already set)."""
        for r in results:
            for a in r.attempts:
                failed = "error" in a
                if failed and is_refusal(a.get("status")):
                    self.stats.observe_refusal(a["model"])
                    continue
                if failed and a.get("status") == ProviderRateLimited.status:
                    continue
                if failed or a.get("model") != r.model:
                    self.stats.observe(a["model"], not failed, a.get("latency_ms", 0) / 1000, api_key=prep.api_key)
            if r.model and r.status == "ok":
                self.stats.observe(r.model, True, r.latency_ms / 1000, r.ttft_s, r.usage.completion_tokens,
                                   prompt_tokens=r.usage.prompt_tokens, api_key=prep.api_key)
            elif r.model and r.status == "cancelled":
                self.stats.observe_cancelled(r.model)
        decided = prep.ctx.decision.model if prep.ctx.decision else None
        self.metrics.observe_request(prep.ctx.mix_name, status, time.time() - prep.started, results, decided,
                                     answer_model)

    def _observe_safely(self, prep: Prepared, status: str, results: list[Any], answer_model: str | None) -> None:
        """``_observe``, where a failure is logged, not raised: live statistics and metrics are derived, the
        record is not, and a request whose metrics failed must still be stored."""
        try:
            self._observe(prep, status, results, answer_model)
        except Exception:  # noqa: BLE001 - a fault of moai's own, logged; the record is written all the same
            log.exception("request %s: statistics and metrics not updated", prep.id)

    async def _persist(self, rec: RequestRecord) -> None:
        if self.writer is not None:
            await self.writer.write(rec)

    def _tune(self, prep: Prepared, results: list[Any]) -> None:
        """Feed a served request to its mix's live tuner; a change replaces the mix for the next requests. A request
        the knob did not decide is left out (``not_decided_by_knob``: its own models or weights, a session's model,
        its privacy): ten requests pinned to the cheapest model read as a cost share of 1, tripling the cost weight."""
        name = prep.ctx.mix_name
        tuner = self.tuners.get(name)
        if tuner is None or not_decided_by_knob(prep.ctx):
            return
        ok = [r for r in results if r.status == "ok" and r.model]
        if not ok:
            return
        prompt = max(r.usage.prompt_tokens for r in ok)
        completion = max(r.usage.completion_tokens for r in ok)
        dearest = max((c.cost_usd(prompt, completion) for c in prep.ctx.candidates), default=0.0)
        change = tuner.observe(total_spend(results).cost_usd, time.time() - prep.started, dearest)
        if change is not None:
            self.config.mixes[name] = tuner.apply(self.config.mixes[name])
            self.metrics.observe_tuning(name, change.knob, change.new)

    async def record(self, prep: Prepared, ex: Execution) -> None:
        prep.recorded = True  # the client leaving while the record is written must not count it twice
        self._observe_safely(prep, "ok", ex.results, ex.answer.model)
        try:
            self._tune(prep, ex.results)
        except Exception:  # noqa: BLE001 - as metrics: the answer is stored all the same
            log.exception("request %s: live tuning not updated", prep.id)
        if prep.ctx.session and ex.answer.model:
            key = (prep.api_key, prep.ctx.mix_name, prep.ctx.session)
            self._sessions[key] = ex.answer.model
            self._sessions.move_to_end(key)
            while len(self._sessions) > 100_000:
                self._sessions.popitem(last=False)
        if self.store is not None:
            await self._persist(self._record(prep, "ok", None, ex.results, ex.answer.model, 200))

    async def record_failure(self, prep: Prepared, error: str, results: list[Any], http_status: int = 502) -> None:
        if prep.recorded:  # answered and counted; only storing it failed (the database), which is counted apart
            return
        results = results or list(prep.plan.results.values())
        for r in results:
            self._bill_partial(r)
            if r.status == "failed" and not r.end:  # in flight when the request was cut short (its time limit)
                r.end, r.error = time.time(), error
                if r.attempts and r.model:  # after failed tries: the one in flight is a try of its own
                    r.attempts.append({"model": r.model, "start": r.start, "error": error,
                                       "latency_ms": (r.end - r.start) * 1000})
        # every model refused the request itself (a prompt past every context, an image to text-only models): the
        # client's to change, stored and counted as a refusal like those caught before any model ran
        status = "refused" if is_refusal(http_status) and http_status != 499 else "error"
        self._observe_safely(prep, status, results, None)
        if self.store is not None:
            await self._persist(self._record(prep, status, error, results, None, http_status))

    async def record_refusal(self, body: Any, error: Exception, api_key: str | None = None,
                             session: str | None = None, started: float | None = None) -> str | None:
        """Count and store a request that ``prepare`` refused (or failed on) before any model ran, so that
        refusals show in ``/metrics`` and in the report's errors like every other request. Returns the id it is
        stored under; None when ``body.model`` names no mix or model (there is nothing to file it under)."""
        try:
            mix_name, mix = self.resolve(body.model)
        except UnknownModel:
            return None
        http_status, code, message = refusal(error)
        status = "refused" if http_status < 500 else "error"
        started = started if started is not None else time.time()
        self.metrics.observe_refusal(mix_name, status, code, time.time() - started)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        if self.store is not None:
            session = session or body.user
            await self._persist(RequestRecord(
                id=request_id, mix=mix_name, strategy=mix.strategy, model=None, status=status,
                http_status=http_status, stream=bool(body.stream), prompt_tokens=0, completion_tokens=0,
                latency_ms=(time.time() - started) * 1000, cost_usd=0.0, energy_kwh=0.0, co2_g=0.0, error=message,
                api_key=api_key, session=self.store.session_digest(session) if mix.sessions != "off" else None,
            ))
        return request_id

    def _bill_partial(self, r: Any) -> bool:
        """Cost what a step had sent and generated when it broke off (its stream failed, its client left, its time
        ran out): the upstream bills the prompt it read (estimated while no usage came) and what it generated,
        streamed or not. True when the step had spent any."""
        if r.status != "failed" or r.model is None or not r.usage.total_tokens:
            return False
        if not r.cost_usd:
            card, (p, c) = self.config.models[r.model], (r.usage.prompt_tokens, r.usage.completion_tokens)
            seconds = max(0.0, (r.end or time.time()) - r.start) if r.start else 0.0
            r.cost_usd = card.cost_usd(p, c)
            r.energy_kwh, r.co2_g = self.executor.carbon.estimate(card, p, c, seconds, r.cpu_s)
        return True

    def _bill_running(self, r: Any) -> None:
        """The energy of a call stopped before it returned anything: a local model computed all that time (its
        tokens are unknown; a cloud call's energy is only estimated from tokens, so it stays 0)."""
        card = self.config.models.get(r.model) if r.model else None
        if card is not None and r.start and not r.energy_kwh:
            seconds = max(0.0, r.end - r.start)
            r.energy_kwh, r.co2_g = self.executor.carbon.estimate(card, 0, 0, seconds, None)

    def record_cancelled(self, prep: Prepared) -> None:
        """Record a request cut short by its client, with the usage generated until then (no await: the
        task is being cancelled, so the record is handed to the writer thread)."""
        if prep.recorded:  # the answer was complete and is being stored as answered
            return
        results = list(prep.plan.results.values())
        for r in results:
            if self._bill_partial(r):
                r.status = "cancelled"
                r.end = time.time()
            elif r.status == "failed" and not r.end:  # waiting for its model: it ends here, with nothing sent
                r.status, r.end = "cancelled", time.time()
                self._bill_running(r)
        model = _model_cut_short(prep, results)
        self._observe_safely(prep, "cancelled", results, model)
        if self.writer is not None:
            # stopped by the shutdown (its client is answered 503: another replica may take it), or its client left
            # (also while the server drains: that client is answered nothing)
            stopped = self.stopping() and not prep.client_gone
            why, status = ("server shutting down", 503) if stopped else ("client disconnected", 499)
            rec = self._record(prep, "cancelled", why, results, model, status)
            try:
                self.writer.submit_nowait(rec)
            except queue.Full:  # the task is being cancelled and cannot wait: a thread waits for room instead
                threading.Thread(target=self.writer.submit, args=(rec,), daemon=True).start()
