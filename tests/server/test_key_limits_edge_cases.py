"""Where a key's budget and its RPM limit meet: a request the budget hold refuses does not use the RPM limit up,
a key past both budgets is told the one that binds longer (and when it resets), and released holds leave nothing
that reads as requests still running."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from servers import start_moai, stop
from sqlalchemy import select
from stub_openai import Script, StubServer
from test_budget_holds import holds_left

from moai.server import spend_holds
from moai.server.auth import Denied, Gatekeeper, create_key
from moai.server.rate_limit import Window
from moai.telemetry.records import RateWindow, RequestRecord
from moai.telemetry.store import TelemetryStore

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60  # the start of a UTC minute
REMAINING = "x-ratelimit-remaining-requests"
BODY = {"model": "moai/default", "messages": [{"role": "user", "content": "hi"}]}
# a "hi" with max_tokens 8 is held as 12 tokens and the stub answers 7 prompt + 2 completion tokens: at $1/120 per
# token both ways, a request holds $0.1 (0.1 + 0.1 + 0.1 - 0.1 - 0.1 - 0.1 is not 0 in floats) and costs $0.075
PRICE = 1_000_000 / 120
CONFIG = """
models:
  paid: {{provider: openai_compat, endpoint: "{url}", privacy: private, max_retries: 0,
         price: {{input_per_mtok: {price}, output_per_mtok: {price}}}}}
mixes:
  default: {{strategy: route, max_tokens: 8}}
"""


def counted(db: Path, key_id: str) -> int:
    """Requests the key's RPM window holds, over all its minutes."""
    with sqlite3.connect(db) as conn:
        return conn.execute("select coalesce(sum(count), 0) from rate_windows where key_id = ?",
                            (key_id,)).fetchone()[0]


@pytest.mark.integration
def test_requests_the_budget_hold_refuses_do_not_use_the_rate_limit_up(tmp_path: Path) -> None:
    db = tmp_path / "moai.db"
    store = TelemetryStore(f"sqlite:///{db}")
    key, secret = create_key(store, "ci", budget_day=0.22, rpm=10)  # three requests' holds, and spent by them
    auth = {"authorization": f"Bearer {secret}"}
    with StubServer(Script(delay_s=1.0)) as stub:
        srv = start_moai(CONFIG.format(url=stub.url, price=PRICE), tmp_path)
        try:
            if time.time() % 60 > 50:  # the burst and the request after it in one minute: the window is exact
                time.sleep(61 - time.time() % 60)

            async def burst(n: int) -> list[httpx.Response]:
                async with httpx.AsyncClient(timeout=30) as client:
                    return list(await asyncio.gather(*(
                        client.post(srv.url + "/chat/completions", json=BODY, headers=auth) for _ in range(n))))

            answers = asyncio.run(burst(8))
            assert sorted(r.status_code for r in answers) == [200] * 3 + [429] * 5
            refused = [r for r in answers if r.status_code == 429]
            assert {r.json()["error"]["code"] for r in refused} == {"insufficient_quota"}
            assert counted(db, key.id) == 3  # only the answered requests count against the limit
            # each refusal tells the window without itself: at most the 7 others were counted then
            assert all(int(r.headers[REMAINING]) >= 3 for r in refused)
            assert holds_left(db) == 0.0  # every hold given back, to the last bit

            later = httpx.post(srv.url + "/chat/completions", json=BODY, headers=auth)
            assert later.status_code == 429 and later.json()["error"]["code"] == "insufficient_quota"
            assert later.headers[REMAINING] == "7"
            assert "still running" not in later.json()["error"]["message"]  # none is
            assert counted(db, key.id) == 3
        finally:
            stop(srv.proc)


def test_a_hold_refused_in_the_next_minute_counts_the_request_in_no_minute(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    key, _ = create_key(store, "k", budget_day=10.0, rpm=3)
    keeper, replica = Gatekeeper(store), Gatekeeper(TelemetryStore(store.url))
    admitted = datetime.fromtimestamp(T0 + 50, UTC)
    window = keeper.authorize(key, "default", admitted)
    assert window == Window(3, 2, 70)
    held = replica.hold(key, 10.0, admitted)  # another request takes the whole budget meanwhile
    assert held is not None
    with pytest.raises(Denied) as denied:  # held in the next minute: refused, and nothing counted for it
        keeper.hold(key, 1.0, datetime.fromtimestamp(T0 + 70, UTC), counted=window)
    assert denied.value.code == "insufficient_quota"
    assert denied.value.window == Window(3, 3, 0)  # the window as if it never came
    with store.engine.connect() as conn:
        rows = dict(conn.execute(select(RateWindow.minute, RateWindow.count).where(RateWindow.key_id == key.id)).all())
    assert not any(rows.values())
    replica.release(held)
    assert keeper.authorize(key, "default", datetime.fromtimestamp(T0 + 71, UTC)) == Window(3, 2, 109)


def spent(store: TelemetryStore, key_id: str, usd: float, times: int, at: datetime) -> None:
    store.write_many([RequestRecord(id=f"r{i}", mix="default", strategy="route", model="m", status="ok",
                                    http_status=200, stream=False, cost_usd=usd, api_key=key_id, created_at=at)
                      for i in range(times)])


def test_past_both_budgets_the_monthly_one_is_told_with_its_reset(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    key, _ = create_key(store, "k", budget_day=0.05, budget_month=0.06)
    now = datetime(2030, 5, 14, 15, 30, tzinfo=UTC)
    spent(store, key.id, 0.015, 4, now.replace(hour=9))
    with pytest.raises(Denied) as denied:
        Gatekeeper(store).authorize(key, "default", now)
    assert denied.value.code == "insufficient_quota" and "monthly budget of $0.06" in denied.value.message
    assert denied.value.retry_after == (datetime(2030, 6, 1, tzinfo=UTC) - now).total_seconds()


def test_past_the_daily_budget_only_the_daily_one_is_told(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    key, _ = create_key(store, "k", budget_day=0.05, budget_month=1.0)
    now = datetime(2030, 5, 14, 15, 30, tzinfo=UTC)
    spent(store, key.id, 0.015, 4, now.replace(hour=9))
    with pytest.raises(Denied) as denied:
        Gatekeeper(store).authorize(key, "default", now)
    assert "daily budget of $0.05" in denied.value.message
    assert denied.value.retry_after == (datetime(2030, 5, 15, tzinfo=UTC) - now).total_seconds()


@pytest.mark.integration
def test_the_http_refusal_past_both_budgets_waits_for_the_month(tmp_path: Path) -> None:
    with StubServer() as stub:
        srv = start_moai(CONFIG.format(url=stub.url, price=PRICE), tmp_path)
        try:
            store = TelemetryStore(f"sqlite:///{srv.db}")
            key, secret = create_key(store, "k", budget_day=0.05, budget_month=0.06)
            spent(store, key.id, 0.015, 4, datetime.now(UTC))
            time.sleep(2.5)  # servers re-read the key table every 2 s
            r = httpx.post(srv.url + "/chat/completions", json=BODY, headers={"authorization": f"Bearer {secret}"})
            now = datetime.now(UTC)
            assert r.status_code == 429 and "monthly budget" in r.json()["error"]["message"]
            first = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=32)).replace(day=1)
            assert abs(int(r.headers["retry-after"]) - math.ceil((first - now).total_seconds())) <= 2
            store.close()
        finally:
            stop(srv.proc)


def released_to_nothing(store: TelemetryStore) -> None:
    key, _ = create_key(store, "k", budget_month=1.0)
    keeper = Gatekeeper(store)
    now = datetime.now(UTC)
    holds = [keeper.hold(key, usd, now) for usd in (0.1, 0.2)]
    for h in holds:
        keeper.release(h)
    with store.engine.connect() as conn:
        assert spend_holds.held(conn, key.id, now.timestamp()) == 0.0
    spent(store, key.id, 1.0, 1, now)
    with pytest.raises(Denied) as denied:
        keeper.authorize(key, "default", now)
    assert denied.value.message == "This key has spent its monthly budget of $1."


def test_released_holds_leave_no_requests_running(tmp_path: Path) -> None:
    released_to_nothing(TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}"))


@pytest.mark.integration
def test_released_holds_leave_no_requests_running_on_postgres(fresh_postgres: str) -> None:
    store = TelemetryStore(fresh_postgres)
    released_to_nothing(store)
    store.close()


def test_a_float_residue_left_in_a_hold_row_is_no_request_running(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    key, _ = create_key(store, "k", budget_day=1.0)
    now = datetime.now(UTC)
    with store.engine.begin() as conn:  # what float subtraction leaves of released holds
        spend_holds.add(conn, key.id, 2.7755575615628914e-17, now.timestamp())
    spent(store, key.id, 1.0, 1, now)
    with pytest.raises(Denied) as denied:
        Gatekeeper(store).authorize(key, "default", now)
    assert "still running" not in denied.value.message
