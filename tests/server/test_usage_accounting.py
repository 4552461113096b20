"""Spend is never silently under: calls whose upstream reported no (or no usable) usage are estimated, failed tries
the upstream billed (a timed-out prompt, an answer without choices) and calls in flight when the client left are
counted, every failed try shows in the metrics, and a fault in the metrics does not lose the request's record."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture, Prepared
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.outcome import Execution
from moai.telemetry.records import RequestRecord
from moai.telemetry.store import TelemetryStore

PROMPT = "word " * 80  # 400 characters in one message: ~4 characters a token, plus 4 for the message, is 104
PROMPT_ESTIMATE = 104
PRICE = 1000  # USD per Mtok, in and out: a token costs $0.001


def reshaped(script: Script, change: Callable[[dict[str, Any]], None]) -> StubServer:
    """The stub, with each unstreamed answer's JSON passed through ``change``: an upstream that leaves out its
    usage, or sends no choices."""
    stub = StubServer(script)

    async def reshape(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Response:
        response = await call_next(request)
        if response.headers.get("content-type") != "application/json":
            return response
        data = json.loads(b"".join([chunk async for chunk in response.body_iterator]))
        if "choices" in data:
            change(data)
        return JSONResponse(data, status_code=response.status_code)

    stub.server.config.app.middleware("http")(reshape)
    return stub


def config(urls: dict[str, str], **cards: str) -> str:
    """One priced model per stub, not retried unless ``cards`` says (more of a model's card), and a mix ``fb``
    that falls back from ``first`` to ``backup`` when both exist."""
    models = "".join(
        f'  {name}: {{provider: openai_compat, endpoint: "{url}", privacy: private, params_b: 8, '
        f"price: {{input_per_mtok: {PRICE}, output_per_mtok: {PRICE}}}, {cards.get(name, 'max_retries: 0')}}}\n"
        for name, url in urls.items())
    mix = "{strategy: route, models: [first, backup], fallbacks: [backup]}" if "backup" in urls else "{strategy: route}"
    return f"models:\n{models}mixes:\n  fb: {mix}\n"


@contextlib.contextmanager
def mixture(tmp: Path, text: str) -> Iterator[tuple[Mixture, TelemetryStore]]:
    store = TelemetryStore(f"sqlite:///{tmp / 'moai.db'}")
    try:
        yield Mixture(parse_config(text), store=store, chooser=RuleChooser()), store
    finally:
        store.close()


def prepared(m: Mixture, model: str, stream: bool = False) -> Prepared:
    return m.prepare(ChatCompletionRequest.model_validate(
        {"model": model, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}))


async def answer(m: Mixture, model: str, stream: bool = False) -> tuple[Execution, Prepared]:
    prep = prepared(m, model, stream)
    items = [i async for i in m.stream(prep, live=stream)]
    assert isinstance(items[-1], Execution)
    return items[-1], prep


async def stored(m: Mixture, store: TelemetryStore, prep: Prepared) -> RequestRecord:
    """The request's row, once the writer has flushed (the mixture is closed)."""
    await m.aclose()
    row = store.get(prep.id)
    assert row is not None
    return row


def metric(m: Mixture, name: str, **labels: str) -> float:
    return m.metrics.registry.get_sample_value(name, labels) or 0.0


def assert_rows_add_up(row: RequestRecord) -> None:
    """The request's totals are its calls' (the report reads both)."""
    assert row.prompt_tokens == sum(c.prompt_tokens for c in row.calls)
    assert row.completion_tokens == sum(c.completion_tokens for c in row.calls)
    assert row.cost_usd == pytest.approx(sum(c.cost_usd for c in row.calls))


# ------------------------------------------------------------------------- usage the upstream did not report


async def test_an_unstreamed_answer_without_usage_is_estimated(tmp_path: Path) -> None:
    with reshaped(Script(reply="one two three four"), lambda d: d.pop("usage")) as up, \
            mixture(tmp_path, config({"m": up.url})) as (m, store):
        ex, prep = await answer(m, "m")
        reasons = m.summary(prep, ex)["reason"]
        row = await stored(m, store, prep)
    # as a stream without usage is counted: the prompt at ~4 characters a token, the answer (18 characters) too
    assert (ex.usage.prompt_tokens, ex.usage.completion_tokens) == (PROMPT_ESTIMATE, 4)
    assert ex.cost_usd == pytest.approx((PROMPT_ESTIMATE + 4) * PRICE / 1e6)
    assert any(r.startswith("usage: m") and "estimated" in r for r in reasons)  # said to be an estimate
    assert (row.prompt_tokens, row.completion_tokens) == (PROMPT_ESTIMATE, 4)
    assert row.cost_usd == pytest.approx(ex.cost_usd)  # what a key's budget adds up
    assert_rows_add_up(row)
    assert metric(m, "moai_cost_usd_total", mix="m", model="m") == pytest.approx(ex.cost_usd)


@pytest.mark.parametrize("bad", [-1_000_000, "many", 10**12], ids=["negative", "not-a-number", "absurd"])
async def test_unusable_usage_is_estimated_and_the_request_recorded(tmp_path: Path, bad: Any) -> None:
    script = Script(reply="one two three four", usage_extra={"prompt_tokens": bad, "completion_tokens": bad})
    with StubServer(script) as up, mixture(tmp_path, config({"m": up.url})) as (m, store):
        ex, prep = await answer(m, "m")
        row = await stored(m, store, prep)
    assert (ex.usage.prompt_tokens, ex.usage.completion_tokens) == (PROMPT_ESTIMATE, 4)
    assert (row.status, row.prompt_tokens, row.completion_tokens) == ("ok", PROMPT_ESTIMATE, 4)
    assert metric(m, "moai_tokens_total", mix="m", model="m", kind="prompt") == PROMPT_ESTIMATE


async def test_a_fault_in_the_metrics_does_not_lose_the_record(tmp_path: Path, monkeypatch: Any) -> None:
    def broken(*_args: Any) -> None:
        raise ValueError("Counters can only be incremented by non-negative amounts.")

    with StubServer(Script(reply="one two")) as up, mixture(tmp_path, config({"m": up.url})) as (m, store):
        monkeypatch.setattr(m.metrics, "observe_request", broken)
        ex, prep = await answer(m, "m")  # answered: the fault is moai's bookkeeping, not the answer
        row = await stored(m, store, prep)
    assert ex.answer.text == "one two"
    assert (row.status, row.http_status, row.prompt_tokens, row.completion_tokens) == ("ok", 200, 7, 2)


# ------------------------------------------------------------------------- failed tries the upstream billed


async def test_timed_out_tries_are_billed_their_prompt_and_each_is_counted(tmp_path: Path) -> None:
    """A try that timed out once sent had its prompt read (and billed) upstream, retried in place or not."""
    with StubServer(Script(reply="late", delay_s=1.5)) as slow, StubServer(Script(reply="one two")) as fast:
        text = config({"first": slow.url, "backup": fast.url}, first="timeout_s: 0.4, max_retries: 1")
        with mixture(tmp_path, text) as (m, store):
            ex, prep = await answer(m, "moai/fb")
            row = await stored(m, store, prep)
    assert slow.script.calls == 2 and ex.answer.model == "backup"
    billed = 2 * PROMPT_ESTIMATE
    assert ex.usage.prompt_tokens == billed + 7
    assert ex.cost_usd == pytest.approx((billed + 7 + 2) * PRICE / 1e6)
    (timed_out,) = [c for c in row.calls if c.model == "first"]
    assert (timed_out.status, timed_out.prompt_tokens) == ("failed", billed)  # one row per model call
    assert timed_out.cost_usd == pytest.approx(billed * PRICE / 1e6)
    assert row.cost_usd == pytest.approx(ex.cost_usd)
    assert_rows_add_up(row)
    assert metric(m, "moai_errors_total", model="first", kind="attempt") == 2  # the retry in place, and the last
    assert metric(m, "moai_cost_usd_total", mix="fb", model="first") == pytest.approx(timed_out.cost_usd)
    (attempt,) = [a for a in ex.answer.attempts if a["model"] == "first"]
    assert len(attempt["retried"]) == 1 and attempt["tokens"] == {"input": billed, "output": 0}


async def test_an_answer_without_choices_is_billed_the_usage_it_reported(tmp_path: Path) -> None:
    with ExitStack() as stack:
        empty = stack.enter_context(reshaped(Script(reply="one two three"), lambda d: d.update(choices=[])))
        fine = stack.enter_context(StubServer(Script(reply="one two")))
        m, store = stack.enter_context(mixture(tmp_path, config({"first": empty.url, "backup": fine.url})))
        ex, prep = await answer(m, "moai/fb")
        row = await stored(m, store, prep)
    assert ex.answer.model == "backup"
    (failed,) = [c for c in row.calls if c.model == "first"]
    assert (failed.status, failed.prompt_tokens, failed.completion_tokens) == ("failed", 7, 3)
    assert (row.prompt_tokens, row.completion_tokens) == (7 + 7, 3 + 2)
    assert row.cost_usd == pytest.approx(ex.cost_usd) == pytest.approx((14 + 5) * PRICE / 1e6)
    assert_rows_add_up(row)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_try_retried_in_place_counts_as_a_failed_try(tmp_path: Path, stream: bool) -> None:
    with StubServer(Script(reply="one two", fail_times=1, fail_status=500)) as up, \
            mixture(tmp_path, config({"m": up.url}, m="max_retries: 1")) as (m, store):
        ex, prep = await answer(m, "m", stream)
        row = await stored(m, store, prep)
    assert up.script.calls == 2 and ex.answer.text == "one two"
    assert metric(m, "moai_errors_total", model="m", kind="attempt") == 1
    assert metric(m, "moai_errors_total", model="m", kind="call") == 0  # the call itself answered
    assert [(c.status, c.prompt_tokens) for c in row.calls] == [("ok", 7)]  # a 500 is not billed


# ------------------------------------------------------------------------- calls in flight when the client left


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_call_in_flight_when_the_client_leaves_is_billed_its_prompt(tmp_path: Path, stream: bool) -> None:
    """The upstream finishes (and bills) a call whose client left; streamed or not, moai counts its prompt."""
    with StubServer(Script(reply="one two", delay_s=1.5)) as up, \
            mixture(tmp_path, config({"m": up.url})) as (m, store):
        prep = prepared(m, "m", stream)

        async def consume(items: AsyncIterator[Any]) -> None:
            async for _ in items:
                pass

        task = asyncio.ensure_future(consume(m.stream(prep, live=stream)))
        await asyncio.sleep(0.5)  # the call is in flight
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        row = await stored(m, store, prep)
    assert up.script.calls == 1
    assert (row.status, row.http_status) == ("cancelled", 499)
    assert [(c.status, c.prompt_tokens, c.completion_tokens) for c in row.calls] == [
        ("cancelled", PROMPT_ESTIMATE, 0)]
    assert row.cost_usd == pytest.approx(PROMPT_ESTIMATE * PRICE / 1e6)
    assert_rows_add_up(row)
    assert metric(m, "moai_cost_usd_total", mix="m", model="m") == pytest.approx(row.cost_usd)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("waiting", [False, True], ids=["third-try-in-flight", "waiting-to-retry"])
async def test_tries_retried_before_the_client_left_are_billed_too(tmp_path: Path, stream: bool,
                                                                   waiting: bool) -> None:
    """Each try that timed out was sent, and its prompt billed: cut short on a later try, the request still pays
    for every one (as it does when the provider gives up on its own), and for no try it never sent."""
    with StubServer(Script(reply="late", delay_s=1)) as slow, \
            mixture(tmp_path, config({"m": slow.url}, m="timeout_s: 0.3, max_retries: 5")) as (m, store):
        prep = prepared(m, "m", stream)

        async def consume(items: AsyncIterator[Any]) -> None:
            async for _ in items:
                pass

        task = asyncio.ensure_future(consume(m.stream(prep, live=stream)))
        sent = 2 if waiting else 3
        while slow.script.calls < sent:
            await asyncio.sleep(0.01)
        # the second try times out 0.3 s after it is sent, and the next waits at least 0.75 s more
        await asyncio.sleep(0.55 if waiting else 0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        row = await stored(m, store, prep)
    assert slow.script.calls == sent and (row.status, row.http_status) == ("cancelled", 499)
    assert row.prompt_tokens == sent * PROMPT_ESTIMATE
    assert row.cost_usd == pytest.approx(sent * PROMPT_ESTIMATE * PRICE / 1e6)
    calls = sorted((c.status, c.prompt_tokens) for c in row.calls)
    assert calls == ([("failed", 2 * PROMPT_ESTIMATE)] if waiting else
                     [("cancelled", PROMPT_ESTIMATE), ("failed", 2 * PROMPT_ESTIMATE)])
    assert_rows_add_up(row)
    assert metric(m, "moai_cost_usd_total", mix="m", model="m") == pytest.approx(row.cost_usd)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_probe_cut_short_by_its_client_is_handed_back(tmp_path: Path, stream: bool) -> None:
    """A half-open circuit's one probe, whose client leaves before the model answers, is no verdict on the model:
    the next request probes again, rather than the circuit staying half-open (and the model out) for good."""
    with StubServer(Script(reply="one two", delay_s=1.5)) as up, \
            mixture(tmp_path, config({"m": up.url})) as (m, store):
        m.stats.cooldown_s = 0.05
        for _ in range(m.stats.failure_threshold):
            m.stats.observe("m", False, 0.1)
        await asyncio.sleep(0.1)  # cooled down: the next call is the probe
        prep = prepared(m, "m", stream)

        async def consume(items: AsyncIterator[Any]) -> None:
            async for _ in items:
                pass

        task = asyncio.ensure_future(consume(m.stream(prep, live=stream)))
        while up.script.calls < 1:
            await asyncio.sleep(0.01)
        assert m.stats.state("m") == "half-open"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        row = await stored(m, store, prep)
    assert row.status == "cancelled"
    assert m.stats.state("m") == "open" and m.stats.healthy("m")  # handed back: the next request probes
