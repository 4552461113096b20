"""Records written and read back on real SQLite and real PostgreSQL; migrations from empty; the writer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect

from moai.telemetry.migrations import current
from moai.telemetry.store import CallRecord, RequestRecord, TelemetryStore, UnknownRequest
from moai.telemetry.writer import TelemetryWriter


def request(i: int, model: str = "m") -> RequestRecord:
    rec = RequestRecord(id=f"chatcmpl-{i}", mix="default", strategy="route", model=model, status="ok",
                        http_status=200, stream=False, prompt_tokens=10 + i, completion_tokens=5, latency_ms=12.5,
                        cost_usd=0.001, energy_kwh=1e-6, co2_g=0.0005, decision={"quality": {model: 0.7}})
    rec.calls.append(CallRecord(step="answer", role="answer", model=model, status="ok", started_at=1.0,
                                ended_at=1.5, latency_ms=500.0, prompt_tokens=10 + i, completion_tokens=5,
                                cost_usd=0.001, energy_kwh=1e-6, co2_g=0.0005))
    return rec


def roundtrip(url: str) -> None:
    store = TelemetryStore(url)
    assert current(store.engine) == "0004"
    tables = set(inspect(store.engine).get_table_names())
    assert {"requests", "calls", "feedback", "api_keys", "rate_windows", "alembic_version"} <= tables
    store.write_many([request(i) for i in range(3)])
    rows = store.requests()
    assert [r.prompt_tokens for r in rows] == [10, 11, 12]
    assert rows[0].calls[0].latency_ms == 500.0 and rows[0].decision == {"quality": {"m": 0.7}}
    fb = store.add_feedback("chatcmpl-1", 0.9, "good")
    assert fb.id and store.get("chatcmpl-1").feedback[0].comment == "good"
    with pytest.raises(UnknownRequest):
        store.add_feedback("chatcmpl-404", 1.0)
    for off_scale in (-1.5, 10.5, float("nan")):  # would skew that model's feedback mean for good
        with pytest.raises(ValueError, match="outside -1..10"):
            store.add_feedback("chatcmpl-1", off_scale)
    assert len(store.get("chatcmpl-1").feedback) == 1
    TelemetryStore(url)  # migrating an up-to-date schema again is a no-op
    store.close()


def test_sqlite_roundtrip(tmp_path: Path) -> None:
    roundtrip(f"sqlite:///{tmp_path / 't.db'}")


@pytest.mark.integration
def test_postgres_roundtrip(fresh_postgres: str) -> None:
    roundtrip(fresh_postgres)


async def test_writer_acknowledges_only_committed_records(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'w.db'}")
    writer = TelemetryWriter(store, max_queue=8, max_batch=4)
    await asyncio.gather(*(writer.write(request(i)) for i in range(40)))  # more than the queue holds
    assert len(store.requests()) == 40 and writer.written == 40
    writer.close()


async def test_writer_isolates_a_bad_record(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'b.db'}")
    writer = TelemetryWriter(store)
    bad = request(1)
    bad.mix = None  # type: ignore[assignment]  # violates NOT NULL
    results = await asyncio.gather(writer.write(bad), writer.write(request(2)), return_exceptions=True)
    assert isinstance(results[0], Exception) and results[1] is None  # the bad record fails alone
    assert {r.id for r in store.requests()} == {"chatcmpl-2"}
    writer.close()


def test_rewriting_a_request_updates_it(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'u.db'}")
    first = request(1)
    first.status, first.http_status = "cancelled", 499
    store.write(first)
    final = request(1)  # the last write wins, calls included (no duplicates)
    final.status, final.http_status = "error", 504
    store.write(final)
    row = store.get("chatcmpl-1")
    assert (row.status, row.http_status, len(row.calls)) == ("error", 504, 1)


def test_close_flushes_the_queue(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'f.db'}")
    writer = TelemetryWriter(store)
    futures = [writer.submit(request(i)) for i in range(100)]
    writer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert len(store.requests()) == 100
