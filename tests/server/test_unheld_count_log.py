"""A refused request's background RPM count that never started is logged for what kept it from starting: a
database that hangs (an earlier check has not returned) or one busy with other checks of limited keys (no slot
came free in time), which is no outage."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from moai.bounded import BoundedSteps
from moai.server.auth import Gatekeeper, create_key
from moai.telemetry.store import TelemetryStore

BOUND_S = 0.2


def _keeper(tmp_path: Path) -> tuple[Gatekeeper, TelemetryStore, str]:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    key, _secret = create_key(store, "k", budget_day=1.0, rpm=5)
    keeper = Gatekeeper(store)
    keeper.limit_checks = BoundedSteps(BOUND_S, 1)
    return keeper, store, key.id


def test_a_count_with_no_free_slot_on_a_busy_database_says_so(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    keeper, store, key_id = _keeper(tmp_path)
    running = threading.Event()
    done = threading.Event()

    def busy() -> None:  # a check still running, whose request has gone: its slot is taken, nothing hangs
        running.set()
        done.wait(10)

    async def scenario() -> None:
        other = asyncio.create_task(keeper.limit_checks.run(busy, lambda _r: None))
        while not running.is_set():
            await asyncio.sleep(0.01)
        other.cancel()
        assert not keeper.limit_checks.hanging()
        await keeper._count_refused(store, key_id, 1)
        done.set()

    with caplog.at_level(logging.WARNING, logger="moai.server"):
        asyncio.run(scenario())
    store.close()
    assert "not counted against its RPM limit: the database is busy" in caplog.text
    assert "not answering" not in caplog.text


def test_a_count_given_up_on_a_hanging_database_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keeper, store, key_id = _keeper(tmp_path)
    done = threading.Event()

    async def scenario() -> None:
        with pytest.raises(TimeoutError):  # a check that ran past its bound: the database is taken to hang
            await keeper.limit_checks.run(lambda: done.wait(10), lambda _r: None)
        assert keeper.limit_checks.hanging()
        await keeper._count_refused(store, key_id, 1)
        done.set()

    with caplog.at_level(logging.WARNING, logger="moai.server"):
        asyncio.run(scenario())
    store.close()
    assert "not counted against its RPM limit: the database is not answering" in caplog.text
    assert "busy" not in caplog.text


def test_a_burst_of_refused_requests_of_one_key_is_counted_together(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """300 refused requests of one key while the database is slow: one background task and a few statements count
    them all (each used to take a task, and a database slot, of its own)."""
    import time

    from moai.server import auth
    from moai.server.rate_limit import Window, peek

    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    key, _secret = create_key(store, "k", budget_day=1.0, rpm=1000)
    keeper = Gatekeeper(store)
    real = auth.count_admitted
    statements: list[int] = []

    def slow(store: TelemetryStore, key_id: str, now: float | None = None, n: int = 1) -> int:
        time.sleep(0.05)
        statements.append(n)
        return real(store, key_id, now, n)

    monkeypatch.setattr(auth, "count_admitted", slow)
    tasks: list[int] = []

    async def scenario() -> None:
        for _ in range(300):
            keeper.count_unheld(key, Window(1000, 999, 60.0, pending=True))
            tasks.append(len(keeper._counting))
            await asyncio.sleep(0)
        await keeper.aclose(5.0)

    asyncio.run(scenario())
    assert max(tasks) == 1 and sum(statements) == 300 and len(statements) < 10, (max(tasks), statements)
    assert peek(store, key.id, 1000).remaining == 700
    store.close()


def test_a_shutdown_tells_how_many_refused_requests_it_left_uncounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """One statement (1 request) in flight when the shutdown stops waiting, 9 more waiting behind it: the log says
    9 of the key's requests were never sent (it said 1, the number of tasks, one per key)."""
    import time

    from moai.server import auth
    from moai.server.rate_limit import Window

    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    key, _secret = create_key(store, "k", budget_day=1.0, rpm=1000)
    keeper = Gatekeeper(store)
    real = auth.count_admitted

    def slow(store: TelemetryStore, key_id: str, now: float | None = None, n: int = 1) -> int:
        time.sleep(0.5)
        return real(store, key_id, now, n)

    monkeypatch.setattr(auth, "count_admitted", slow)

    async def scenario() -> None:
        keeper.count_unheld(key, Window(1000, 999, 60.0, pending=True))
        await asyncio.sleep(0.05)  # its statement is running
        for _ in range(9):
            keeper.count_unheld(key, Window(1000, 999, 60.0, pending=True))
        await keeper.aclose(0.1)
        await asyncio.sleep(0.6)  # the statement in flight lands

    with caplog.at_level(logging.WARNING, logger="moai.server"):
        asyncio.run(scenario())
    store.close()
    assert "RPM counts of 1 key(s)' refused requests" in caplog.text
    assert f"9 refused request(s) of key {key.id} not counted against its RPM limit by the shutdown" in caplog.text
