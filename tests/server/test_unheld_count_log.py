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
        await keeper._count_unheld(store, key_id)
        done.set()

    with caplog.at_level(logging.WARNING, logger="moai.server"):
        asyncio.run(scenario())
    store.close()
    assert "was not counted against its RPM limit: the database is busy" in caplog.text
    assert "not answering" not in caplog.text


def test_a_count_given_up_on_a_hanging_database_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keeper, store, key_id = _keeper(tmp_path)
    done = threading.Event()

    async def scenario() -> None:
        with pytest.raises(TimeoutError):  # a check that ran past its bound: the database is taken to hang
            await keeper.limit_checks.run(lambda: done.wait(10), lambda _r: None)
        assert keeper.limit_checks.hanging()
        await keeper._count_unheld(store, key_id)
        done.set()

    with caplog.at_level(logging.WARNING, logger="moai.server"):
        asyncio.run(scenario())
    store.close()
    assert "was not counted against its RPM limit: the database is not answering" in caplog.text
    assert "busy" not in caplog.text
