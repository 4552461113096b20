"""Records written and read back on real SQLite and real PostgreSQL; migrations from empty; the writer."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect

from moai.telemetry.migrations import current
from moai.telemetry.records import CallRecord, RequestRecord
from moai.telemetry.spool import Spool
from moai.telemetry.store import TelemetryStore, UnknownRequest
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
    assert current(store.engine) == "0008"
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


# ------------------------------------------------------------------------------- database down: the spool


def broken(store: TelemetryStore, tmp: Path) -> Any:
    """Point the store at a database that cannot be opened; returns the good engine."""
    good = store.engine
    store.engine = create_engine(f"sqlite:///{tmp / 'no-such-dir' / 'x.db'}")
    return good


async def test_records_written_while_the_database_is_down_are_spooled_then_replayed(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 's.db'}")
    spooled: list[int] = []
    writer = TelemetryWriter(store, replay_s=0.05, on_spool=spooled.append)
    await writer.write(request(0))
    good = broken(store, tmp_path)
    first = request(1)
    first.status, first.http_status = "cancelled", 499
    await writer.write(first)  # acknowledged: durable on the local spool
    final = request(1)  # the same request re-recorded with its final status: the last write wins on replay
    final.status, final.http_status = "error", 504
    await asyncio.gather(writer.write(final), writer.write(request(2)))
    spool = tmp_path / "s.db.spool"
    assert writer.spooled == 3 and sum(spooled) == 3 and list(spool.glob("spool-*.jsonl"))
    await asyncio.sleep(0.2)  # replays keep failing while it is down; nothing is lost
    assert writer.replayed == 0 and list(spool.glob("*.jsonl"))
    store.engine = good
    for _ in range(200):
        if writer.replayed >= 2:
            break
        await asyncio.sleep(0.05)
    rows = {r.id: r for r in store.requests()}
    assert set(rows) == {"chatcmpl-0", "chatcmpl-1", "chatcmpl-2"}
    assert (rows["chatcmpl-1"].status, rows["chatcmpl-1"].http_status, len(rows["chatcmpl-1"].calls)) == \
        ("error", 504, 1)
    assert rows["chatcmpl-2"].calls[0].latency_ms == 500.0 and rows["chatcmpl-2"].decision == {"quality": {"m": 0.7}}
    assert not list(spool.glob("*.jsonl"))
    writer.close()


def test_a_replay_repeated_after_its_commit_stores_nothing_twice_and_keeps_feedback(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'r.db'}")
    spool = Spool(tmp_path / "spool")
    spool.append([request(1), request(2)])
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(spool.path.read_bytes())
    assert spool.replay(store) == 2
    store.add_feedback("chatcmpl-1", 1.0, "good")
    with spool.path.open("ab") as f:  # the same lines again (a replay cut short after its commit), and a torn one
        f.write(copy.read_bytes() + b'{"request": {"id": "chatcmpl-9", "mi')
    assert spool.replay(store) == 2
    rows = {r.id: r for r in store.requests()}
    assert set(rows) == {"chatcmpl-1", "chatcmpl-2"} and [len(r.calls) for r in rows.values()] == [1, 1]
    assert [f.comment for f in store.get("chatcmpl-1").feedback] == ["good"]
    assert not spool.pending()


def test_a_dead_processs_spool_is_claimed_a_live_ones_is_not(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'd.db'}")
    spool = Spool(tmp_path / "spool")
    spool.append([request(1)])
    dead_pid = int(subprocess.check_output(["sh", "-c", "echo $$"]).strip())  # a process that has exited
    spool.path.rename(tmp_path / "spool" / f"spool-{dead_pid}.jsonl")
    live = subprocess.Popen(["sleep", "30"])
    try:
        Spool(tmp_path / "spool").append([request(2)])
        (tmp_path / "spool" / f"spool-{os.getpid()}.jsonl").rename(tmp_path / "spool" / f"spool-{live.pid}.jsonl")
        assert spool.replay(store) == 1  # the dead one's; the live process replays its own
        assert {r.id for r in store.requests()} == {"chatcmpl-1"}
        assert [p.name for p in (tmp_path / "spool").glob("*.jsonl")] == [f"spool-{live.pid}.jsonl"]
    finally:
        live.kill()
        live.wait()
    assert spool.replay(store) == 1 and {r.id for r in store.requests()} == {"chatcmpl-1", "chatcmpl-2"}


def test_a_refused_record_is_not_spooled(tmp_path: Path) -> None:
    """A record the database refuses (NOT NULL) would be refused on every replay: it fails as before."""
    store = TelemetryStore(f"sqlite:///{tmp_path / 'n.db'}")
    writer = TelemetryWriter(store)
    bad = request(1)
    bad.mix = None  # type: ignore[assignment]
    with pytest.raises(Exception, match="NOT NULL"):
        writer.submit(bad).result(timeout=10)
    assert writer.spooled == 0 and not (tmp_path / "n.db.spool").exists()
    writer.close()


async def test_after_an_outage_new_records_queue_behind_the_spooled_ones(tmp_path: Path) -> None:
    """A request recorded while the database was down, then recorded again (its final status) once it is back but
    before the spool is replayed: the database ends with the final record, not the older spooled one."""
    store = TelemetryStore(f"sqlite:///{tmp_path / 'o.db'}")
    writer = TelemetryWriter(store, replay_s=0.3)
    good = broken(store, tmp_path)
    first = request(1)
    first.status, first.http_status = "cancelled", 499
    await writer.write(first)
    store.engine = good
    final = request(1)
    final.status, final.http_status = "error", 504
    await writer.write(final)  # the database is back, but the spool is not replayed yet
    for _ in range(100):
        if not writer.spool.has_own():
            break
        await asyncio.sleep(0.05)
    row = store.get("chatcmpl-1")
    assert (row.status, row.http_status, len(row.calls)) == ("error", 504, 1)
    writer.close()


def test_a_spooled_record_the_database_refuses_is_set_aside_not_replayed_forever(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'x.db'}")
    spool = Spool(tmp_path / "spool")
    bad = request(2)
    bad.mix = None  # type: ignore[assignment]  # NOT NULL: refused on every try
    spool.append([request(1), bad, request(3)])
    assert spool.replay(store) == 2
    assert {r.id for r in store.requests()} == {"chatcmpl-1", "chatcmpl-3"}
    assert not spool.pending() and "chatcmpl-2" in spool.rejected.read_text()


def test_a_record_whose_request_was_cancelled_does_not_stop_the_writer(tmp_path: Path) -> None:
    """The client left and its request's future was cancelled before the writer got to it: the record is still
    written, and so is every later one (setting a cancelled future used to kill the writer's thread)."""
    store = TelemetryStore(f"sqlite:///{tmp_path / 'c.db'}")
    writer = TelemetryWriter(store)
    gone = writer.submit(request(1))
    gone.cancel()
    later = writer.submit(request(2))
    later.result(timeout=10)
    assert writer._thread.is_alive() and {r.id for r in store.requests()} == {"chatcmpl-1", "chatcmpl-2"}
    writer.close()


def test_a_short_write_to_the_spool_leaves_no_torn_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk nearly full takes part of a write: the rest is written, or the file is put back as it was and the
    error raised (an acknowledged record must be whole, and a torn line would swallow the next one)."""
    spool = Spool(tmp_path / "spool")
    spool.append([request(0)])
    real_write, calls = os.write, []

    def halves(fd: int, data: Any) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[: max(1, len(data) // 2)]))

    monkeypatch.setattr(os, "write", halves)
    spool.append([request(1), request(2)])
    assert len(calls) > 1
    monkeypatch.setattr(os, "write", lambda fd, data: (real_write(fd, bytes(data[:10])), (_ for _ in ()).throw(
        OSError(28, "No space left on device")))[0])
    before = spool.path.read_bytes()
    with pytest.raises(OSError):
        spool.append([request(3)])
    assert spool.path.read_bytes() == before
    monkeypatch.undo()
    store = TelemetryStore(f"sqlite:///{tmp_path / 'w.db'}")
    assert spool.replay(store) == 3 and {r.id for r in store.requests()} == {f"chatcmpl-{i}" for i in range(3)}


def test_records_queued_after_close_are_spooled_not_left_waiting(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'l.db'}")
    writer = TelemetryWriter(store)
    writer.close()
    late = writer.submit(request(7))  # nobody drains the queue any more
    writer.close(timeout=1)
    assert late.done() and late.exception() is None  # acknowledged from the spool
    assert Spool(tmp_path / "l.db.spool").replay(store) == 1 and store.get("chatcmpl-7") is not None
