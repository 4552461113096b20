"""Per-key RPM limits counted in the shared database: replicas share one limit, over SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from moai.server.auth import Denied, Gatekeeper, create_key
from moai.server.rate_limit import retry_after, take
from moai.telemetry.records import RateWindow
from moai.telemetry.store import TelemetryStore

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60  # the start of a UTC minute


def counters(store: TelemetryStore, key_id: str) -> dict[int, int]:
    with store.engine.connect() as c:
        rows = c.execute(select(RateWindow.minute, RateWindow.count).where(RateWindow.key_id == key_id))
        return {m - int(T0 // 60): n for m, n in rows}


def test_two_replicas_share_one_limit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'moai.db'}"
    a, b = TelemetryStore(url), TelemetryStore(url)  # two processes' engines on one database
    assert [take(a, "k", 3, T0 + 1), take(b, "k", 3, T0 + 2), take(a, "k", 3, T0 + 3)] == [None, None, None]
    assert take(b, "k", 3, T0 + 4) == pytest.approx(56 + 60 * (1 - 2 / 3))
    assert take(a, "k", 3, T0 + 5) is not None
    assert counters(a, "k") == {0: 3}  # refused requests are not counted
    assert take(a, "other", 3, T0 + 5) is None  # keys are counted apart


def test_window_slides_across_minutes(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    for i in range(4):
        assert take(store, "k", 4, T0 + 50 + i) is None
    # 10 s into the next minute, 5/6 of the last minute's 4 requests still count: 3.33 + 1 > 4
    wait = take(store, "k", 4, T0 + 70)
    assert wait == pytest.approx(60 - 10 - 60 * 3 / 4)
    assert take(store, "k", 4, T0 + 70 + wait - 1) is not None
    assert take(store, "k", 4, T0 + 70 + wait + 0.01) is None
    # two minutes on, the counters of the first minute are dropped
    assert take(store, "k", 4, T0 + 125) is None
    assert set(counters(store, "k")) == {1, 2}


def test_retry_after_when_this_minute_is_full() -> None:
    assert retry_after(current=3, previous=0, rpm=3, elapsed=20) == pytest.approx(40 + 20)
    assert retry_after(current=1, previous=0, rpm=1, elapsed=59.5) == pytest.approx(0.5 + 60)
    assert retry_after(current=0, previous=10, rpm=5, elapsed=0) == pytest.approx(60 - 60 * 4 / 10)


def concurrent_takes(url: str, rpm: int, n: int) -> list[float | None]:
    stores = [TelemetryStore(url) for _ in range(2)]
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda i: take(stores[i % 2], "k", rpm, T0 + 1), range(n)))


def test_concurrent_requests_never_exceed_the_limit_sqlite(tmp_path: Path) -> None:
    results = concurrent_takes(f"sqlite:///{tmp_path / 'moai.db'}", 5, 24)
    assert sum(r is None for r in results) == 5


@pytest.mark.integration
def test_concurrent_requests_never_exceed_the_limit_postgres(fresh_postgres: str) -> None:
    results = concurrent_takes(fresh_postgres, 5, 24)
    assert sum(r is None for r in results) == 5
    assert counters(TelemetryStore(fresh_postgres), "k") == {0: 5}


def test_gatekeepers_of_two_replicas_deny_together(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'moai.db'}"
    key, _ = create_key(TelemetryStore(url), "ci", rpm=2)
    one, two = Gatekeeper(TelemetryStore(url)), Gatekeeper(TelemetryStore(url))
    now = datetime.fromtimestamp(T0 + 1, UTC)
    one.authorize(key, "default", now)
    two.authorize(key, "default", now)
    with pytest.raises(Denied) as denied:
        one.authorize(key, "default", now)
    assert denied.value.status == 429 and denied.value.code == "rate_limit_exceeded"
    assert denied.value.retry_after is not None and denied.value.retry_after >= 1
