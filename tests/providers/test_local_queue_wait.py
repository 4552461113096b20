"""A local model runs one generation at a time: the time a call waits for it is the queue's, not the model's.

A call's observed latency (trace, live statistics) is the model's own service time, with the wait shown apart as
``queue_ms``; a request whose time runs out while it still waits for a busy local model is no failure of that
model (no error rate, no breaker), since the model never began on it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from moai import deadline
from moai.config import parse_config
from moai.mixture import Mixture
from moai.providers import llama_cpp
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.outcome import Execution
from moai.telemetry.records import CallRecord
from moai.telemetry.store import TelemetryStore

WORD_S = 0.1  # the stand-in model's time per word


class SlowLlama:
    """Stands in for a loaded llama.cpp model: one generation at a time (its lock), ``WORD_S`` a word."""

    def __init__(self, words: int) -> None:
        self.lock = threading.Lock()
        self.words = words
        self.prompt_tokens = self.completion_tokens = 0
        self._ctx = type("Ctx", (), {"ctx": None})()

    def begin(self, cancel: threading.Event | None) -> None:
        self.prompt_tokens = self.completion_tokens = 0

    def reset(self) -> None:
        return None

    def create_chat_completion(self, stream: bool = True, **_kw: Any) -> Iterator[dict[str, Any]]:
        self.prompt_tokens = 5
        for i in range(self.words):
            time.sleep(WORD_S)
            self.completion_tokens += 1
            yield {"choices": [{"delta": {"content": f"w{i} "}, "finish_reason": None}]}
        yield {"choices": [{"delta": {}, "finish_reason": "stop"}]}


@pytest.fixture
def local_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, SlowLlama]]:
    """A GGUF path whose model is the stand-in (four words: 0.4 s a call)."""
    import llama_cpp as lib

    path = tmp_path / "slow.gguf"
    path.write_bytes(b"")
    llm = SlowLlama(4)
    monkeypatch.setattr(lib, "llama_set_n_threads", lambda *_a: None)
    monkeypatch.setitem(llama_cpp._models, str(path), llm)
    yield str(path), llm


def mixture(path: str, concurrency: int | None = None, store: TelemetryStore | None = None) -> Mixture:
    limit = f", concurrency: {concurrency}" if concurrency else ""
    cfg = (f"models:\n  slow: {{provider: local, path: '{path}', privacy: local{limit}}}\n"
           "mixes:\n  m: {strategy: route, models: [slow]}\n")
    return Mixture(parse_config(cfg), store=store)


def body() -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "moai/m", "messages": [{"role": "user", "content": "q"}]})


async def answer(m: Mixture, prep: Any, stream: bool) -> Execution:
    if not stream:
        return await m.run(prep)
    items = [i async for i in m.stream(prep, live=True)]
    assert isinstance(items[-1], Execution)
    return items[-1]


@pytest.mark.parametrize("stream", [False, True], ids=["unstreamed", "streamed"])
@pytest.mark.parametrize("concurrency", [None, 1], ids=["model-lock", "concurrency-limit"])
async def test_time_waiting_for_a_busy_local_model_is_not_its_latency(
        local_model: tuple[str, SlowLlama], concurrency: int | None, stream: bool) -> None:
    """Two requests at once: the second waits ~0.4 s for the first. Both are observed at ~0.4 s, the model's own
    time; the wait shows as the second's ``queue_ms``. Queued on the model's lock (llama.cpp) or on the model's
    concurrency limit alike."""
    m = mixture(local_model[0], concurrency)
    observed: list[float] = []
    observe = m.stats.observe

    def spy(model: str, ok: bool, latency_s: float, *args: Any, **kwargs: Any) -> None:
        observed.append(latency_s)
        observe(model, ok, latency_s, *args, **kwargs)

    m.stats.observe = spy  # type: ignore[method-assign]
    try:
        preps = [m.prepare(body()), m.prepare(body())]
        runs = await asyncio.gather(*(answer(m, p, stream) for p in preps))
        traces = [m.summary(p, ex)["trace"][0] for p, ex in zip(preps, runs, strict=True)]
    finally:
        await m.aclose()
    service = 4 * WORD_S * 1000
    assert all(t["status"] == "ok" for t in traces)
    # halfway between the model's own time and its time plus the wait (~800 ms for the one that waited, before):
    # a busy machine slows both calls, not only the one it measures
    assert all(t["latency_ms"] < 1.5 * service for t in traces), traces
    assert max(t.get("queue_ms", 0.0) for t in traces) > service - 150, traces
    assert observed and all(s < 1.5 * service / 1000 for s in observed), observed
    waited = max(traces, key=lambda t: t.get("queue_ms", 0.0))
    assert waited["end"] - waited["start"] == pytest.approx(waited["latency_ms"] / 1000, abs=0.01)
    ttfts = [ex.answer.ttft_s for ex in runs]  # the first word, WORD_S into the model's own time
    assert all(t is not None and t < WORD_S + 0.15 for t in ttfts), ttfts


async def test_a_request_timed_out_while_queued_is_no_failure_of_the_local_model(
        local_model: tuple[str, SlowLlama], tmp_path: Path) -> None:
    """One request holds the model for 1 s; another, limited to 0.3 s, runs out of time while waiting for it. The
    model never began on it: its call is recorded as cancelled, not failed, and the model's error rate stays 0."""
    local_model[1].words = 10
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    m = mixture(local_model[0], store=store)
    try:
        busy = asyncio.ensure_future(m.run(m.prepare(body())))
        await asyncio.sleep(0.15)
        prep = m.prepare(body())
        deadline.start(prep, 0.3)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await m.run(prep)
        await deadline.record(m, prep, 0.3)
        (late,) = prep.plan.results.values()
        assert late.status == "cancelled" and "never served" in (late.error or ""), late
        await busy
    finally:
        await m.aclose()
    with Session(store.engine) as s:
        rows = s.execute(select(CallRecord.status, CallRecord.latency_ms)).all()
    assert sorted(r.status for r in rows) == ["cancelled", "ok"], rows
    m.stats.refresh(store)
    st = m.stats.models["slow"]
    assert st.error_rate == 0.0 and st.consecutive_failures == 0
    assert m.stats.healthy("slow")


async def test_a_call_that_did_not_wait_shows_no_queue_time(local_model: tuple[str, SlowLlama]) -> None:
    """``queue_ms`` is there only when a call really waited (it read 0.0 on almost every entry)."""
    m = mixture(local_model[0])
    try:
        prep = m.prepare(body())
        trace = m.summary(prep, await m.run(prep))["trace"]
    finally:
        await m.aclose()
    assert trace[0]["status"] == "ok" and "queue_ms" not in trace[0], trace


async def cut_by_the_limit(m: Mixture, busy_for: float, limit_s: float) -> Any:
    """Run a request that finds the model busy for about ``busy_for`` more seconds, under a limit of ``limit_s``:
    its step once the limit cut it."""
    busy = asyncio.ensure_future(m.run(m.prepare(body())))
    await asyncio.sleep(10 * WORD_S - busy_for)
    prep = m.prepare(body())
    deadline.start(prep, limit_s)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(limit_s):
            await m.run(prep)
    await deadline.record(m, prep, limit_s)
    await busy
    (late,) = prep.plan.results.values()
    return late


async def test_a_call_the_limit_cut_after_a_long_wait_is_no_verdict_on_the_model(
        local_model: tuple[str, SlowLlama], tmp_path: Path) -> None:
    """The rule: cut by the request's limit after waiting for its model longer than the model then had on it, a
    call is recorded ``cancelled`` (its time mostly went to the queue), timed from when the model began; the
    model's error rate stays 0. Waited ~0.85 s, served ~0.45 s: it was recorded failed, its latency ~1.3 s."""
    local_model[1].words = 10
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    m = mixture(local_model[0], store=store)
    try:
        late = await cut_by_the_limit(m, busy_for=0.85, limit_s=1.3)
    finally:
        await m.aclose()
    assert late.status == "cancelled" and "no verdict" in (late.error or ""), late
    assert 0.6 < late.queue_s < 1.1 and late.latency_ms < 700, (late.queue_s, late.latency_ms)
    with Session(store.engine) as s:
        rows = s.execute(select(CallRecord.status, CallRecord.latency_ms)).all()
    assert sorted(r.status for r in rows) == ["cancelled", "ok"], rows
    assert all(r.latency_ms < 1100 for r in rows), rows
    m.stats.refresh(store)
    assert m.stats.models["slow"].error_rate == 0.0 and m.stats.healthy("slow")


async def test_a_call_the_limit_cut_after_a_short_wait_is_the_models_failure_timed_from_its_start(
        local_model: tuple[str, SlowLlama], tmp_path: Path) -> None:
    """Waited ~0.2 s, then the model had ~0.6 s and did not finish: too slow for the limit, a failure, but its
    latency is the model's own (~0.6 s, not ~0.8 s)."""
    local_model[1].words = 10
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    m = mixture(local_model[0], store=store)
    try:
        late = await cut_by_the_limit(m, busy_for=0.2, limit_s=0.8)
    finally:
        await m.aclose()
    assert late.status == "failed" and 0.1 < late.queue_s < 0.4, (late.status, late.queue_s)
    with Session(store.engine) as s:
        (row,) = s.execute(select(CallRecord.status, CallRecord.latency_ms).where(CallRecord.status != "ok")).all()
    assert row.status == "failed" and 400 < row.latency_ms < 720, row


def test_an_unstreamed_call_cut_short_is_billed_what_it_had_generated(local_model: tuple[str, SlowLlama],
                                                                     tmp_path: Path) -> None:
    """Cut after about 3 of its words (a client that left): its record keeps them, as a stream's does (it kept
    the prompt alone, 0 completion tokens, and the energy of what was generated went unbilled)."""
    path, llm = local_model
    llm.words = 20
    store = TelemetryStore(f"sqlite:///{tmp_path / 'm.db'}")
    m = mixture(path, store=store)

    async def scenario() -> None:
        prep = m.prepare(body())
        task = asyncio.ensure_future(m.run(prep))
        await asyncio.sleep(WORD_S * 3.5)
        prep.client_gone = True
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await m.aclose()

    asyncio.run(scenario())
    with Session(store.engine) as s:
        rows = s.execute(select(CallRecord.status, CallRecord.completion_tokens)).all()
    store.close()
    assert len(rows) == 1 and rows[0][0] == "cancelled" and 2 <= rows[0][1] <= 5, rows
