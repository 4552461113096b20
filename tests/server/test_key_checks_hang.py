"""Checks of a limited key (budget, RPM count, budget hold) while the database hangs: a 503 within the time limit,
at once while a check given up on is still out, and nothing counted for the refused request once it returns."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from moai.bounded import BoundedSteps, GaveUp
from moai.server import auth, spend_holds
from moai.server.auth import Denied, Gatekeeper, create_key
from moai.server.rate_limit import peek
from moai.telemetry.store import TelemetryStore


class Paused:
    """Wraps a database step: while ``paused`` is unset, calls wait (a database server that stopped), then run."""

    def __init__(self, real: Any) -> None:
        self.real, self.paused, self.calls = real, threading.Event(), 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.paused.wait(10)
        return self.real(*args, **kwargs)


def keeper(tmp_path: Path, timeout_s: float = 0.3, **limits: Any) -> tuple[Gatekeeper, TelemetryStore, str]:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    _, secret = create_key(store, "limited", **limits)
    gk = Gatekeeper(store)
    gk.limit_checks.timeout_s = timeout_s
    return gk, store, secret


async def settle(condition: Any, within_s: float = 5.0) -> None:
    end = time.monotonic() + within_s
    while not condition() and time.monotonic() < end:
        await asyncio.sleep(0.02)


async def test_an_rpm_check_that_hangs_is_a_503_and_counts_nothing_once_it_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gk, store, secret = keeper(tmp_path, rpm=5)
    key = gk.authenticate(f"Bearer {secret}")
    assert key is not None
    paused = Paused(auth.tally)
    monkeypatch.setattr(auth, "tally", paused)
    started = time.monotonic()
    with pytest.raises(Denied) as first:
        await gk.admit(f"Bearer {secret}", "default")
    assert first.value.status == 503 and first.value.code == "database_unavailable"
    assert 0.25 <= time.monotonic() - started < 2.0
    started = time.monotonic()
    with pytest.raises(Denied) as second:  # the first check is still out: the database hangs, no new wait
        await gk.admit(f"Bearer {secret}", "default")
    assert second.value.status == 503 and time.monotonic() - started < 0.2 and paused.calls == 1
    paused.paused.set()  # the database wakes: the hung check counts the request, and that is taken back
    await settle(lambda: not gk.limit_checks.hanging())
    await asyncio.sleep(0.1)
    assert peek(store, key.id, 5).remaining == 5
    _, window = await gk.admit(f"Bearer {secret}", "default")  # and checks go on as before
    assert window is not None and window.remaining == 4


async def test_a_budget_hold_that_hangs_is_a_503_released_and_uncounted_once_it_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gk, store, secret = keeper(tmp_path, rpm=5, budget_day=10.0)
    key, window = await gk.admit(f"Bearer {secret}", "default")
    assert key is not None and window is not None and window.remaining == 4
    paused = Paused(spend_holds.add)
    monkeypatch.setattr(spend_holds, "add", paused)
    with pytest.raises(Denied) as refused:
        await gk.ahold(key, 2.0, counted=window)
    assert refused.value.status == 503
    paused.paused.set()
    await settle(lambda: not gk.limit_checks.hanging())
    await asyncio.sleep(0.1)
    with store.engine.connect() as conn:
        assert spend_holds.held(conn, key.id, time.time()) == pytest.approx(0.0)  # the late hold was given back
    assert peek(store, key.id, 5).remaining == 5  # and the refused request's RPM count taken back


async def test_a_check_that_answers_in_time_is_used_as_it_is(tmp_path: Path) -> None:
    gk, store, secret = keeper(tmp_path, timeout_s=5.0, rpm=5, budget_day=10.0)
    key, window = await gk.admit(f"Bearer {secret}", "default")
    assert key is not None and window is not None and window.remaining == 4
    hold = await gk.ahold(key, 2.0, counted=window)
    assert hold is not None
    with store.engine.connect() as conn:
        assert spend_holds.held(conn, key.id, time.time()) == pytest.approx(2.0)
    gk.release(hold)


async def test_checks_beyond_the_slots_wait_no_longer_than_the_limit() -> None:
    steps = BoundedSteps(timeout_s=0.2, at_once=1)
    gate = threading.Event()
    undone: list[int] = []
    first = asyncio.ensure_future(steps.run(lambda: gate.wait(5) and 1, undone.append))
    await asyncio.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(GaveUp):  # no slot frees in time
        await steps.run(lambda: 2, undone.append)
    assert time.monotonic() - started < 1.0
    with pytest.raises(GaveUp):
        await first
    gate.set()
    await settle(lambda: undone == [1])
    assert undone == [1]  # the late result was undone, never the one that did not run
    assert await steps.run(lambda: 3, undone.append) == 3  # the slot is free again
    assert undone == [1]


async def test_a_step_that_returns_as_its_caller_gives_up_is_used_not_undone() -> None:
    """The step returns between the caller's deadline and its giving up: the caller takes the result."""
    steps = BoundedSteps(timeout_s=0.1, at_once=2)
    undone: list[str] = []

    def step() -> str:
        time.sleep(0.1)  # returns about when the wait ends
        return "done"

    results = []
    for _ in range(20):
        try:
            results.append(await steps.run(step, undone.append))
        except GaveUp:
            results.append("gave up")
            await settle(lambda: not steps.hanging())
    await asyncio.sleep(0.05)
    assert undone.count("done") == results.count("gave up")  # each result used or undone, exactly once


@pytest.mark.integration
async def test_checks_stuck_behind_postgresql_locks_are_503s_that_count_nothing(fresh_postgres: str) -> None:
    """On PostgreSQL, another session holds the limit tables locked (a lock wait, as behind a long migration):
    the budget hold, which also counts a budgeted key's request against its RPM limit, gives up in time on either
    table, and holds and counts nothing once the locks are gone."""
    from sqlalchemy import create_engine, text

    store = TelemetryStore(fresh_postgres)
    _, secret = create_key(store, "limited", rpm=5, budget_day=10.0)
    gk = Gatekeeper(store)
    gk.limit_checks.timeout_s = 0.5
    key, window = await gk.admit(f"Bearer {secret}", "default")
    assert key is not None and window is not None and window.remaining == 4
    other = create_engine(fresh_postgres)
    try:
        for table in ("rate_windows", "spend_holds"):
            with other.connect() as blocker:
                blocker.execute(text(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))
                started = time.monotonic()
                with pytest.raises(Denied) as refused:
                    await gk.ahold(key, 2.0, counted=window)
                assert refused.value.status == 503 and time.monotonic() - started < 3.0
                blocker.rollback()  # the lock goes: the stuck statement runs, then is taken back
            await settle(lambda: not gk.limit_checks.hanging())
            await asyncio.sleep(0.2)
            with store.engine.connect() as conn:
                assert spend_holds.held(conn, key.id, time.time()) == pytest.approx(0.0)
            assert peek(store, key.id, 5).remaining == 5  # the late count is taken back with its hold
    finally:
        other.dispose()


async def test_a_busy_moment_is_no_hang() -> None:
    """Steps that each answer at once but queue for the few slots: waiting for a slot is not the database hanging.
    A step that got its slot late was still started with almost no time left, given up on, undone, and every
    check after it refused at once while it ran."""
    steps = BoundedSteps(timeout_s=0.3, at_once=2)
    undone: list[int] = []

    def quick(i: int) -> int:
        time.sleep(0.05)
        return i

    results = await asyncio.gather(*(steps.run(lambda i=i: quick(i), undone.append) for i in range(16)),
                                   return_exceptions=True)  # 16 × 50 ms on 2 slots: 0.4 s of queueing
    assert all(isinstance(r, int | GaveUp) for r in results) and sum(isinstance(r, int) for r in results) >= 10
    assert undone == [] and not steps.hanging()  # none was started only to be given up on


async def test_a_step_whose_caller_is_cancelled_is_taken_back() -> None:
    steps = BoundedSteps(timeout_s=5.0, at_once=2)
    undone: list[str] = []
    gate = threading.Event()
    caller = asyncio.ensure_future(steps.run(lambda: gate.wait(5) and "counted", undone.append))
    await asyncio.sleep(0.05)
    caller.cancel()  # the request goes away (its client, a shutdown) while the step runs
    with pytest.raises(asyncio.CancelledError):
        await caller
    gate.set()
    await settle(lambda: undone == ["counted"])
    assert undone == ["counted"]
