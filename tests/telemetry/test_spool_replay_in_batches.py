"""A spool replayed in batches of bulk statements, on SQLite and PostgreSQL: a spool left by a long outage must
drain faster than new traffic arrives, while a replay cut short and repeated still stores nothing twice, the last
write of a request still wins and a record the database refuses is still set aside."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from test_store import request

from moai.telemetry import spool as spool_module
from moai.telemetry import store as store_module
from moai.telemetry.records import RequestRecord
from moai.telemetry.spool import Spool
from moai.telemetry.store import TelemetryStore


def statements(store: TelemetryStore) -> list[str]:
    """The SQL statements the store sends from now on (an executemany counts once per round trip)."""
    seen: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    return seen


def rerecorded(i: int) -> tuple[RequestRecord, RequestRecord]:
    """A request recorded as cancelled, then again with its final status (the last write must win)."""
    first, final = request(i), request(i)
    first.status, first.http_status = "cancelled", 499
    final.status, final.http_status = "error", 504
    return first, final


def spool_with_history(folder: Path, n: int) -> Spool:
    """``n`` requests, request 1 recorded twice far apart (in different batches) and request 2 twice in a row."""
    spool = Spool(folder)
    one, two = rerecorded(1), rerecorded(2)
    records = [request(i) for i in range(3, n)]
    spool.append([one[0], *records[: n // 2], two[0], two[1], *records[n // 2 :], one[1]])
    return spool


def check_history(store: TelemetryStore, n: int, others: set[str] | None = None) -> None:
    rows = {r.id: r for r in store.requests()}
    assert set(rows) == {f"chatcmpl-{i}" for i in range(1, n)} | (others or set())
    assert all(len(r.calls) == 1 for r in rows.values())
    for i in (1, 2):
        assert (rows[f"chatcmpl-{i}"].status, rows[f"chatcmpl-{i}"].http_status) == ("error", 504)
    assert rows["chatcmpl-5"].decision == {"quality": {"m": 0.7}} and rows["chatcmpl-5"].prompt_tokens == 15


def test_a_large_spool_is_written_with_a_few_statements_per_batch(tmp_path: Path) -> None:
    """One round trip per request (the ORM's merge) let a spool grow faster under load than it was written."""
    store = TelemetryStore(f"sqlite:///{tmp_path / 'b.db'}")
    spool = spool_with_history(tmp_path / "spool", 1200)
    sent = statements(store)
    spool.replay(store)
    assert len(sent) <= 40, f"{len(sent)} statements for 1,201 spooled lines"
    check_history(store, 1200)
    assert not spool.pending()


def test_a_replay_with_a_deadline_stops_after_a_batch_and_the_next_goes_on(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay that takes long keeps the writer from its queue: it stops at its deadline, and the next replay
    starts where it stopped (not from the start of the file), keeping the order of the records."""
    monkeypatch.setattr(spool_module, "REPLAY_BATCH", 10, raising=False)
    store = TelemetryStore(f"sqlite:///{tmp_path / 'd.db'}")
    spool = spool_with_history(tmp_path / "spool", 40)
    with spool.path.open("ab") as f:
        f.write(b'{"request": {"id": "chatcmpl-9", "mi\n')  # damaged: set aside once its batch is in
    counts = []
    sent = statements(store)
    while spool.pending():
        counts.append(spool.replay(store, until=time.monotonic()))
        assert spool.cut_short == spool.pending()
        assert len(counts) < 10
    assert counts == [10, 10, 9, 10, 1] and len(store.requests()) == 39  # request 2 twice in the third batch
    assert sum(s.lstrip().upper().startswith("INSERT INTO REQUESTS") for s in sent) == 5  # no batch written twice
    check_history(store, 40)
    assert spool.rejected.read_bytes() == b'{"request": {"id": "chatcmpl-9", "mi\n'
    assert not spool.has_own()


@pytest.mark.parametrize("upsert", [True, False], ids=["bulk", "merged"])
def test_replaying_over_stored_requests_keeps_their_feedback_and_stores_nothing_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upsert: bool) -> None:
    """The same guarantees whether the database has an upsert (bulk statements) or not (merged through the ORM)."""
    if not upsert:
        monkeypatch.setattr(store_module, "_UPSERT", {}, raising=False)
    store = TelemetryStore(f"sqlite:///{tmp_path / 'k.db'}")
    store.write_many([request(1)])
    store.add_feedback("chatcmpl-1", 1.0, "good")
    first, final = rerecorded(1)
    rated = request(2)
    rated.feedback = [store_module.FeedbackRecord(score=0.5, comment="spooled")]
    assert store.write_replayed([first, rated, final, request(3)]) == 3
    assert store.write_replayed([first, rated, final, request(3)]) == 3  # a replay repeated after its commit
    rows = {r.id: r for r in store.requests()}
    assert set(rows) == {"chatcmpl-1", "chatcmpl-2", "chatcmpl-3"} and [len(r.calls) for r in rows.values()] == [1] * 3
    assert (rows["chatcmpl-1"].status, rows["chatcmpl-1"].http_status) == ("error", 504)
    assert [f.comment for f in rows["chatcmpl-1"].feedback] == ["good"]
    assert [f.comment for f in rows["chatcmpl-2"].feedback] == ["spooled"]


@pytest.mark.integration
def test_postgresql_takes_a_spool_in_bulk_statements_with_the_same_guarantees(fresh_postgres: str,
                                                                               tmp_path: Path) -> None:
    store = TelemetryStore(fresh_postgres)
    store.write_many([request(4)])
    store.add_feedback("chatcmpl-4", 1.0, "good")
    spool = spool_with_history(tmp_path / "spool", 1200)
    copy = spool.path.read_bytes()
    sent = statements(store)
    spool.replay(store)
    assert len(sent) <= 30, f"{len(sent)} statements for 1,201 spooled lines"
    bad = request(1300)
    bad.mix = None  # type: ignore[assignment]  # NOT NULL: refused on every try
    spool.path.write_bytes(copy)  # the same lines again (a replay cut short after its commits), and a refused one
    spool.append([request(1301), bad, request(1302)])
    spool.replay(store)
    check_history(store, 1200, {"chatcmpl-1301", "chatcmpl-1302"})
    assert "chatcmpl-1300" in spool.rejected.read_text() and not spool.pending()
    assert [f.comment for f in store.get("chatcmpl-4").feedback] == ["good"]
    store.close()
