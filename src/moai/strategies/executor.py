"""The one executor: runs any plan with asyncio — independent steps concurrently, dependent ones in order.

Every strategy builds a ``Plan``; only this module calls providers. It owns the per-model concurrency
limits, fallbacks to the next model on retryable errors, per-step telemetry (tokens, latency, cost,
energy), and the streaming of the final step to the client.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from moai.catalog import ModelCard
from moai.providers import (
    ChatParams,
    Delta,
    ProviderError,
    ProviderRateLimited,
    Usage,
)
from moai.providers.base import (
    Queued,
    answered,
    is_refusal,
    prompt_usage,
    watch_retries,
    watched,
    with_estimates,
)
from moai.providers.registry import ProviderRegistry
from moai.providers.tool_calls import merge_tool_call_deltas
from moai.strategies.attempts import cut_when_served, failed_attempt, served_from, unserved
from moai.strategies.failed_models import not_called, note_left_out, usable, why_spared, worth_another_try
from moai.strategies.outcome import Execution, PlanFailed, why_failed
from moai.strategies.plan import Built, Passthrough, Plan, Skip, Step, StepResult
from moai.strategies.stragglers import finished_in_share, share_end
from moai.telemetry.carbon import CarbonModel


def _generated(text: str, refusal: str | None, tool_calls: list[dict[str, Any]] | None) -> str:
    """Everything a model wrote, for estimating its completion tokens."""
    functions = [c.get("function") or {} for c in tool_calls or []]
    return text + (refusal or "") + "".join(f"{f.get('name') or ''}{f.get('arguments') or ''}" for f in functions)


async def _build(step: Step, results: dict[str, StepResult]) -> Built:
    """A step's call; builders may be coroutines (the critique's program check runs its program first)."""
    built = step.build(results)
    return await built if inspect.isawaitable(built) else built


def _inputs_failed(step: Step, results: dict[str, StepResult]) -> bool:
    """Every dependency failed, and the step needs one that did not (a cascade's next try does not)."""
    return bool(step.deps) and not step.after_failure and not any(
        results[d].ok for d in step.deps if d in results)


def _why_no_inputs(step: Step, results: dict[str, StepResult]) -> str:
    """Why a step has nothing to build on: its inputs failed, or were skipped on purpose (an approved draft needs
    no second review), in which case their reason is passed on."""
    inputs = [results[d] for d in step.deps if d in results]
    if inputs and all(r.status == "skipped" for r in inputs):
        reasons = [r.error for r in inputs if r.error]
        return f"inputs skipped: {reasons[0]}" if reasons else "inputs skipped"
    return "dependencies failed"


def _passed(step: Step, built: Passthrough, results: dict[str, StepResult], now: float) -> StepResult:
    """The result of a step that reuses an earlier answer, its tool calls (and its writer's fingerprint) included."""
    source = results[built.source]
    return StepResult(step.id, step.role, source.model, "passthrough", text=built.text, start=now, end=now,
                      tool_calls=built.tool_calls, finish_reason=built.finish_reason,
                      system_fingerprint=source.system_fingerprint)


def _running(step: Step) -> StepResult:
    """A call in flight, as a request cut short now (its time limit, its client leaving) records it: ``end`` 0
    until the record sets it."""
    return StepResult(step.id, step.role, None, "failed", start=time.time(), error="interrupted")


def _indexed(calls: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Whole tool calls as one stream delta: OpenAI's deltas number each call."""
    return [{"index": i, **c} for i, c in enumerate(calls)] if calls else None


def _executed(plan: Plan, answer: StepResult, results: dict[str, StepResult]) -> Execution:
    """The outcome, once the plan has set right what only its run could tell (``Plan.settle``)."""
    if plan.settle is not None:
        plan.settle(results)
    return Execution(plan, answer, list(results.values()))


def _answered_with(plan: Plan, rescued: StepResult, results: dict[str, StepResult]) -> Iterator[Delta | Execution]:
    """What the final step yields when an earlier answer stands in for its own (``Plan.rescue``)."""
    plan.rescued = rescued
    yield Delta(text=rescued.text, tool_calls=_indexed(rescued.tool_calls),
                system_fingerprint=rescued.system_fingerprint)
    yield Delta(finish_reason="tool_calls" if rescued.tool_calls else "stop")
    yield _executed(plan, rescued, results)


def _restored_calls(redactor: Any, calls: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Tool calls an untrusted model wrote with placeholders, with the original values back in their arguments."""
    if not calls or redactor is None:
        return calls
    out = []
    for c in calls:
        fn = dict(c.get("function") or {})
        if isinstance(fn.get("arguments"), str):
            fn["arguments"] = redactor.restore_arguments(fn["arguments"])
        out.append({**c, "function": fn})
    return out


class Executor:
    def __init__(self, registry: ProviderRegistry, carbon: CarbonModel | None = None) -> None:
        self.registry = registry
        self.carbon = carbon or CarbonModel()

    def _account(self, res: StepResult, card: ModelCard) -> None:
        res.cost_usd = card.cost_usd(res.usage.prompt_tokens, res.usage.completion_tokens)
        res.energy_kwh, res.co2_g = self.carbon.estimate(
            card, res.usage.prompt_tokens, res.usage.completion_tokens, res.latency_ms / 1000, res.cpu_s
        )

    def _candidates(self, step: Step, plan: Plan | None = None, last: set[str] | None = None) -> Iterator[str]:
        """Models to try, in order (``usable``: not those that failed earlier in the request). Health is asked just
        before each try (asking may reserve a circuit's probe), and models with an open circuit or a rate limit
        still running are tried last rather than never, and put in ``last``: each gets one try, no retry in place."""
        models = usable(plan, step, plan.results) if plan is not None else list(step.models)
        note_left_out(plan, step, models)
        skipped = []
        for m in models:
            if self.registry.health(m):
                yield m
            else:
                skipped.append(m)
        if last is not None:
            last.update(skipped)
        yield from skipped

    def _spared(self, plan: Plan, step: Step, left_out: dict[str, set[str]]) -> set[str]:
        """The models of ``step``'s group to leave out: those not healthy (open circuit, rate limit), as long as
        one of the group is healthy. Asked once per group, when its first step is due, so that a half-open
        circuit's probe is reserved once and its step still sends it."""
        group = step.group
        assert group is not None
        if group not in left_out:
            models = dict.fromkeys(m for s in plan.steps if s.group == group for m in s.models)
            failed = {m for m in models if m in plan.failed}  # earlier in this request: as good as an open circuit
            health = {m: m not in failed and self.registry.health(m) for m in models}
            spared = {m for m, ok in health.items() if not ok} if any(health.values()) else set()
            left_out[group] = spared
            broken = spared - failed
            note = (f"breaker: left out {', '.join(sorted(broken))} (circuit open or rate limited; the rest of the "
                    f"{step.role}s are healthy)")
            if broken and note not in plan.notes:  # said once, however many layers leave the same models out
                plan.notes.append(note)
            for m in sorted(spared & failed):
                note = f"{m} failed earlier in this request: later steps did not call it again"
                if note not in plan.notes:
                    plan.notes.append(note)
        return left_out[group]

    def _failed(self, model: str, e: ProviderError, t0: float, retried: list[ProviderError],
                billed: bool = True, plan: Plan | None = None, queued: Queued | None = None) -> dict[str, Any]:
        """The failed attempt; a 429 is reported to the registry before the next model is tried, and a failure of
        the model (not a refusal of the request itself) to the plan, whose later steps leave the model out.
        ``billed``: the error's own usage counts (not for a stream that broke mid-answer: the step's usage has
        it)."""
        if isinstance(e, ProviderRateLimited):
            self.registry.rate_limited(model, e.retry_after)
        if plan is not None and not is_refusal(e.status):
            plan.failed[model] = plan.failed.get(model, True) and worth_another_try(e)
        return self._tries(failed_attempt(model, e, t0, queued), model, [*retried, e] if billed else retried,
                           retried)

    def _cut_short(self, res: StepResult, model: str, t0: float, retried: list[ProviderError]) -> None:
        """A call cut short (its client left, its time ran out) after its provider had retried in place: the tries
        before the one in flight were sent, and what they were billed (a prompt that timed out) would be lost
        with the local list. They become one failed attempt; the try in flight stays the step's own."""
        if retried:
            res.attempts.append(self._tries(failed_attempt(model, retried[-1], t0), model, retried, retried[:-1]))
            if retried[-1].last_sent:  # cut while waiting to retry: no try in flight, the step ended with that one
                res.usage, res.error, res.end = Usage(), str(retried[-1]), time.time()

    def _answered(self, model: str, start: float, retried: list[ProviderError]) -> dict[str, Any]:
        """The attempt that answered (from when its model began on it), with the tries it took."""
        return self._tries({"model": model, "start": start, "latency_ms": (time.time() - start) * 1000}, model,
                           retried, retried)

    def _tries(self, attempt: dict[str, Any], model: str, billed: list[ProviderError],
               retried: list[ProviderError]) -> dict[str, Any]:
        """Add to an attempt the failed tries its provider retried in place (each counts as a failed try) and
        what the upstream billed for its failed tries: a prompt read before a timeout, an answer with no
        choices. The call record and the request's cost include it, though no answer came of it."""
        if retried:
            attempt["retried"] = [{"error": str(e), "status": e.status} for e in retried]
        u = Usage()
        for e in billed:
            if e.usage is not None:
                u.add(e.usage)
        if u.total_tokens:
            card = self.registry.card(model)
            energy, co2 = self.carbon.estimate(card, u.prompt_tokens, u.completion_tokens,
                                               attempt["latency_ms"] / 1000, None)
            attempt.update(tokens={"input": u.prompt_tokens, "output": u.completion_tokens},
                           cost_usd=card.cost_usd(u.prompt_tokens, u.completion_tokens), energy_kwh=energy, co2_g=co2)
            if u.estimated:
                attempt["estimated"] = True
        return attempt

    @staticmethod
    def _note_estimate(plan: Plan | None, res: StepResult) -> None:
        """Say in the answer's reasons that a call's usage is moai's estimate, not the upstream's count."""
        if plan is not None and res.usage.estimated:
            plan.notes.append(f"usage: {res.model} ({res.step}) reported no usable token counts; they are estimated")

    def _redactor(self, plan: Plan | None, model: str) -> Any:
        if plan is None or plan.redactor is None or self.registry.card(model).privacy != "cloud":
            return None
        return plan.redactor

    async def _call(self, step: Step, params: ChatParams, plan: Plan | None = None,
                    res: StepResult | None = None) -> StepResult:
        """Non-streamed call with fallbacks along ``step.models``, kept in ``res`` as it goes (a request cut short
        records the model in flight and every failed try)."""
        res = res or StepResult(step=step.id, role=step.role, model=None, status="failed", start=time.time())
        last_resort: set[str] = set()
        for model in self._candidates(step, plan, last_resort):
            t0 = time.time()
            res.model, res.start = model, t0  # the try in flight
            redactor = self._redactor(plan, model)
            retried: list[ProviderError] = []
            queued = Queued()
            try:
                sent = redactor.apply(params, model) if redactor else params  # may refuse to send it
                queued.enter()  # the model's concurrency limit: waiting for it is not the model's latency
                async with self.registry.limit(model):
                    queued.leave()
                    res.usage = prompt_usage(sent)  # sent: what a request cut short now is billed for it
                    with watch_retries(retried, queued, one_try=model in last_resort):
                        out = await answered(model, self.registry.get(model).complete(sent))
                if redactor:
                    out.text = redactor.restore(out.text)
                    out.tool_calls = _restored_calls(redactor, out.tool_calls)
            except asyncio.CancelledError:
                # what it had generated when cut (a piece a token, as a stream counts them), with its prompt
                res.usage.completion_tokens = max(res.usage.completion_tokens, queued.pieces)
                self._cut_short(res, model, t0, retried)
                if queued.waiting:
                    unserved(res, model, t0, queued)
                else:
                    cut_when_served(res, model, t0, queued)
                raise
            except ProviderError as e:
                res.usage = Usage()  # what the failed try was billed is its attempt's
                res.attempts.append(self._failed(model, e, t0, retried, plan=plan, queued=queued))
                res.model, res.error = model, str(e)  # a failed step names the last model tried, as streamed
                if not e.retryable:
                    break
                continue
            served = served_from(t0, queued)
            res.attempts.append(self._answered(model, served, retried))
            if plan is not None:
                plan.failed.pop(model, None)  # it answers again
            # the answering model's own call, from when it began on it: failed attempts are recorded on their own
            res.start, res.queue_s = served, served - t0
            res.model, res.status, res.text, res.error = model, "ok", out.text, None
            res.usage = with_estimates(out.usage, sent, _generated(out.text, out.refusal, out.tool_calls))
            res.ttft_s, res.cpu_s = out.ttft_s, out.cpu_s
            self._note_estimate(plan, res)
            res.tool_calls, res.finish_reason, res.refusal = out.tool_calls, out.finish_reason, out.refusal
            res.system_fingerprint = out.system_fingerprint
            res.end = time.time()
            self._account(res, self.registry.card(model))
            return res
        res.end = time.time()
        return res

    def _left_behind(self, plan: Plan, res: StepResult, share_s: float) -> StepResult:
        """A proposer cut short once its layer's share of the request's time was spent and others had answered:
        billed what it was sent, and no verdict on its model (a client leaving is none either)."""
        res.status, res.end = "cancelled", time.time()
        res.error = f"left behind: no answer within its layer's share of the request's time ({share_s:.1f}s)"
        if res.model:
            self._account(res, self.registry.card(res.model))
        plan.notes.append(f"{res.step} ({res.model}) {res.error}; its layer went on without it")
        return res

    async def _run_steps(self, plan: Plan, results: dict[str, StepResult]) -> None:
        """Run every non-final step as soon as its dependencies are done."""
        pending = {s.id: s for s in plan.steps if s.id != plan.final}
        tasks: dict[str, asyncio.Task[StepResult]] = {}

        left_out: dict[str, set[str]] = {}  # group -> models with an open circuit that the group can spare

        async def run_one(step: Step) -> StepResult:
            await asyncio.gather(*(tasks[d] for d in step.deps if d in tasks))
            now = time.time()
            if _inputs_failed(step, results):
                r = StepResult(step.id, step.role, None, "skipped", start=now, end=now,
                               error=_why_no_inputs(step, results))
                results[step.id] = r
                return r
            if step.group is not None and step.models and set(step.models) <= self._spared(plan, step, left_out):
                r = StepResult(step.id, step.role, step.models[0], "skipped", start=now, end=now,
                               error=why_spared(plan, step))
                results[step.id] = r
                return r
            built = await _build(step, results)
            if built is None or isinstance(built, Skip):
                r = StepResult(step.id, step.role, None, "skipped", start=now, end=now,
                               error=built.reason if built else None)
            elif isinstance(built, Passthrough):
                r = _passed(step, built, results, now)
            elif step.models and not usable(plan, step, results):
                note_left_out(plan, step, [])
                r = not_called(step, now)
            else:
                results[step.id] = _running(step)
                call = self._call(step, built, plan, results[step.id])
                until = share_end(plan, step)
                if until is None:
                    r = await call
                else:
                    share_s = until - time.monotonic()
                    r = await finished_in_share(call, step, plan, tasks, results, until) or self._left_behind(
                        plan, results[step.id], share_s)
            results[step.id] = r
            return r

        for step in plan.steps:
            if step.id in pending:
                tasks[step.id] = asyncio.ensure_future(run_one(step))
        if tasks:
            await asyncio.gather(*tasks.values())
        for step in plan.steps:
            r = results.get(step.id)
            if r is not None and r.status == "failed" and not step.optional:
                raise PlanFailed(f"step {step.id} ({step.role}) failed: {why_failed(r)}", list(results.values()), [r])

    async def stream(self, plan: Plan, live: bool = True) -> AsyncIterator[Delta | Execution]:
        """Run the plan; yield the final answer's deltas, then one ``Execution``.

        ``live=False`` (non-streaming clients) makes the final call non-streamed too: upstream servers
        report exact usage on plain responses more reliably than on streams.
        """
        results = plan.results
        await self._run_steps(plan, results)
        final = plan.step(plan.final)
        if _inputs_failed(final, results):
            rescued = plan.rescue(results) if plan.rescue else None
            if rescued is None:
                inputs = [results[d] for d in final.deps if d in results]
                why = next((r.error for r in inputs if r.error), None)
                raise PlanFailed(f"every input of {final.id} failed" + (f" ({why})" if why else ""),
                                 list(results.values()), inputs)
        built = await _build(final, results)
        if isinstance(built, Skip) or (isinstance(built, ChatParams) and final.models
                                       and not usable(plan, final, results)):
            # nothing to ask (a chain whose first link no model could answer), or no model left to ask it
            note_left_out(plan, final, [])
            results[final.id] = left = (not_called(final, time.time()) if not isinstance(built, Skip) else
                                        StepResult(final.id, final.role, None, "skipped", start=time.time(),
                                                   end=time.time(), error=built.reason))
            rescued = plan.rescue(results) if plan.rescue else None
            if rescued is None:  # the status of the failures that left it so (every model rate limited: a 429)
                raise PlanFailed(f"final step {final.id} ({final.role}): {left.error}", list(results.values()),
                                 [r for r in results.values() if r.status == "failed"])
            plan.notes.append(f"{final.role} {left.error}; answered with {rescued.step}'s answer")
            for item in _answered_with(plan, rescued, results):
                yield item
            return
        if isinstance(built, Passthrough) or built is None:
            now = time.time()
            ans = (_passed(final, built, results, now) if isinstance(built, Passthrough)
                   else StepResult(final.id, final.role, None, "passthrough", start=now, end=now))
            results[final.id] = ans
            if ans.text or ans.tool_calls:
                yield Delta(text=ans.text, tool_calls=_indexed(ans.tool_calls),
                            system_fingerprint=ans.system_fingerprint)
            yield Delta(finish_reason=ans.finish_reason)
            yield _executed(plan, ans, results)
            return
        end: Delta | None = None  # the stream's last delta, held until the answer is known not to be empty
        if live:
            ans = StepResult(final.id, final.role, None, "failed", start=time.time())
            results[final.id] = ans
            async for item in self._stream_final(final, built, ans, plan):
                if item.finish_reason:
                    end = item
                    continue
                yield item
        else:
            results[final.id] = _running(final)
            ans = await self._call(final, built, plan, results[final.id])
            results[final.id] = ans
        empty = ans.ok and not ans.answered  # nothing to say: as good as failed when an earlier answer exists
        if not ans.ok or empty:
            rescued = plan.rescue(results) if plan.rescue else None
            if rescued is None and not empty:
                raise PlanFailed(f"final step {final.id} failed: {why_failed(ans)}", list(results.values()), [ans])
            if rescued is not None:
                if empty:
                    ans.error = "empty answer"
                plan.notes.append(f"{final.role} failed ({ans.error}); answered with {rescued.step}'s answer")
                for item in _answered_with(plan, rescued, results):
                    yield item
                return
        if not live:
            yield Delta(text=ans.text, tool_calls=ans.tool_calls, refusal=ans.refusal or "",
                        system_fingerprint=ans.system_fingerprint)
        yield end or Delta(finish_reason=ans.finish_reason)
        yield _executed(plan, ans, results)

    async def _stream_final(self, step: Step, params: ChatParams, ans: StepResult,
                            plan: Plan | None = None) -> AsyncIterator[Delta]:
        """Stream with transparent fallback before the first token; after it, errors propagate.

        Usage counts from the prompt estimate while a model streams; a model that fails before its first token
        leaves the step at zero tokens, and what its try was billed (a prompt that timed out) to its attempt, as
        unstreamed.
        """
        last_resort: set[str] = set()
        for model in self._candidates(step, plan, last_resort):
            t0 = time.time()
            started = False
            parts: list[str] = []
            refusal: list[str] = []
            tool_calls: list[dict[str, Any]] = []
            redactor = self._redactor(plan, model)
            restorer = redactor.restorer() if redactor else None
            held_calls: list[dict[str, Any]] = []  # under redaction: pieces merged, placeholders restored at the end
            ans.model, ans.system_fingerprint = model, None
            retried: list[ProviderError] = []
            queued = Queued()
            try:
                sent = redactor.apply(params, model) if redactor else params  # may refuse to send it
                queued.enter()
                async with self.registry.limit(model):
                    queued.leave()
                    ans.usage = prompt_usage(sent)  # counted as it streams, exact at the end
                    async for d in watched(self.registry.get(model).stream(sent), retried, model, queued,
                                           one_try=model in last_resort):
                        if restorer is not None:
                            d.text = restorer.feed(d.text) + (restorer.flush() if d.finish_reason else "")
                            if d.tool_calls:  # a placeholder may straddle two pieces of the arguments
                                merge_tool_call_deltas(held_calls, d.tool_calls)
                                d.tool_calls = None
                            if d.finish_reason and held_calls:
                                d.tool_calls = _restored_calls(redactor, held_calls)
                        if d.text or d.tool_calls or d.refusal:
                            if not started:
                                ans.ttft_s = time.time() - served_from(t0, queued)
                            started = True
                            parts.append(d.text)
                            refusal.append(d.refusal)
                            ans.usage.completion_tokens += 1
                            tool_calls.extend(d.tool_calls or [])
                        if d.usage:
                            ans.usage = d.usage
                        if d.cpu_s is not None:
                            ans.cpu_s = d.cpu_s
                        ans.system_fingerprint = d.system_fingerprint or ans.system_fingerprint
                        if d.finish_reason:
                            ans.finish_reason = d.finish_reason
                            if d.text or d.tool_calls or d.refusal:
                                yield Delta(text=d.text, tool_calls=d.tool_calls, refusal=d.refusal,
                                            system_fingerprint=ans.system_fingerprint)
                            continue  # the caller decides how the stream ends
                        yield d
            except asyncio.CancelledError:
                self._cut_short(ans, model, t0, retried)
                if queued.waiting:
                    unserved(ans, model, t0, queued)
                else:
                    cut_when_served(ans, model, t0, queued)
                raise
            except ProviderError as e:
                ans.attempts.append(self._failed(model, e, t0, retried, billed=not started, plan=plan,
                                                 queued=queued))
                ans.error = str(e)
                if not started:  # nothing was generated: what the try was billed is its attempt's
                    ans.usage, ans.cpu_s = Usage(), None
                if started or not e.retryable:
                    ans.end = time.time()
                    raise
                continue
            served = served_from(t0, queued)
            ans.attempts.append(self._answered(model, served, retried))
            if plan is not None:
                plan.failed.pop(model, None)
            ans.start, ans.queue_s = served, served - t0
            ans.model, ans.status, ans.error = model, "ok", None
            ans.text, ans.tool_calls, ans.refusal = "".join(parts), tool_calls or None, "".join(refusal) or None
            ans.end = time.time()
            # the upstream's counts where it sent them; the running count (1 a piece), else an estimate, where not
            ans.usage = with_estimates(ans.usage, sent, _generated(ans.text, ans.refusal, ans.tool_calls))
            self._note_estimate(plan, ans)
            self._account(ans, self.registry.card(model))
            yield Delta(finish_reason=ans.finish_reason)
            return
        ans.end = time.time()

    async def run(self, plan: Plan) -> Execution:
        """Run to completion (non-streaming clients)."""
        execution: Execution | None = None
        async for item in self.stream(plan, live=False):
            if isinstance(item, Execution):
                execution = item
        assert execution is not None
        return execution
