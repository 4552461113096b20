"""Key budgets under concurrency: a running request's worst-case cost is held against its key's budget until it
is recorded, in the database, so concurrent requests and replicas cannot together spend past the budget."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from servers import start_moai, stop
from stub_openai import Script, StubServer

from moai.server import spend_holds
from moai.server.auth import Denied, Gatekeeper, create_key
from moai.telemetry.records import RequestRecord
from moai.telemetry.store import TelemetryStore

# $1 per token both ways: the stub answers 7 prompt + 2 completion tokens ($9); a "hi" with max_tokens 8 is
# estimated at 1 + 8 tokens ($9), so the worst case held is the real cost
CONFIG = """
models:
  paid: {{provider: openai_compat, endpoint: "{url}", privacy: private, max_retries: 0,
         price: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}}}
mixes:
  default: {{strategy: route, max_tokens: 8}}
"""
BODY = {"model": "moai/default", "messages": [{"role": "user", "content": "hi"}]}


def holds_left(db: Path) -> float:
    with sqlite3.connect(db) as conn:
        return conn.execute("select coalesce(sum(usd), 0) from spend_holds").fetchone()[0]


@pytest.mark.integration
def test_concurrent_requests_stay_within_a_budget_and_give_their_holds_back(tmp_path: Path) -> None:
    db = tmp_path / "moai.db"
    store = TelemetryStore(f"sqlite:///{db}")
    _, three = create_key(store, "three", budget_day=27.0)  # three requests' worth
    _, wide = create_key(store, "wide", budget_day=1000.0)
    with StubServer(Script(delay_s=0.5)) as stub:
        srv = start_moai(CONFIG.format(url=stub.url), tmp_path)
        try:
            async def burst(secret: str, n: int, stream: bool = False) -> list[int]:
                auth = {"authorization": f"Bearer {secret}"}
                async with httpx.AsyncClient(timeout=30) as client:
                    async def one() -> int:
                        r = await client.post(srv.url + "/chat/completions", json={**BODY, "stream": stream},
                                              headers=auth)
                        await r.aread()
                        return r.status_code
                    return list(await asyncio.gather(*(one() for _ in range(n))))

            codes = asyncio.run(burst(three, 20))
            assert sorted(codes) == [200] * 3 + [429] * 17
            with sqlite3.connect(db) as conn:
                spent = conn.execute("select sum(cost_usd) from requests where status = 'ok'").fetchone()[0]
            assert spent == pytest.approx(27.0)
            assert holds_left(db) == pytest.approx(0.0)  # every hold was given back once recorded
            later = httpx.post(srv.url + "/chat/completions", json=BODY, headers={"authorization": f"Bearer {three}"})
            assert later.status_code == 429 and later.json()["error"]["code"] == "insufficient_quota"

            assert asyncio.run(burst(wide, 4, stream=True)) == [200] * 4  # streams give theirs back at their end
            assert asyncio.run(burst(wide, 4)) == [200] * 4
            assert holds_left(db) == pytest.approx(0.0)
        finally:
            stop(srv.proc)


def key_with_budget(store: TelemetryStore, usd: float) -> object:
    key, _ = create_key(store, "k", budget_month=usd)
    return key


def test_holds_are_shared_by_replicas_and_released(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")
    key = key_with_budget(store, 10.0)
    a, b = Gatekeeper(store), Gatekeeper(TelemetryStore(store.url))  # two replicas on one database
    first = a.hold(key, 6.0)  # type: ignore[arg-type]
    second = b.hold(key, 6.0)  # type: ignore[arg-type]  # 6 held < 10: admitted, and may overrun by its own cost
    with pytest.raises(Denied) as e:
        a.hold(key, 1.0)  # type: ignore[arg-type]
    assert e.value.status == 429 and "still running" in e.value.message
    with store.engine.connect() as conn:  # the refused request held nothing
        assert spend_holds.held(conn, key.id, time.time()) == pytest.approx(12.0)  # type: ignore[attr-defined]
    b.release(second)
    b.release(first)
    assert a.hold(key, 1.0) is not None  # type: ignore[arg-type]


def test_recorded_spend_and_holds_add_up_and_old_holds_fade(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")
    key = key_with_budget(store, 10.0)
    gate = Gatekeeper(store)
    store.write(RequestRecord(id="r1", mix="default", strategy="route", model="m", status="ok", http_status=200,
                              stream=False, cost_usd=7.0, api_key=key.id))  # type: ignore[attr-defined]
    gate.hold(key, 2.0)  # type: ignore[arg-type]  # 7 spent + 0 held < 10
    gate.hold(key, 2.0)  # type: ignore[arg-type]  # 7 spent + 2 held < 10
    with pytest.raises(Denied):
        gate.hold(key, 2.0)  # type: ignore[arg-type]  # 7 spent + 4 held: the budget is reached
    with pytest.raises(Denied):  # the admission check counts holds too
        gate.authorize(key, "default")  # type: ignore[arg-type]
    later = datetime.now(UTC) + timedelta(minutes=spend_holds.HOLD_TTL_MIN + 1)  # a killed process's holds
    assert gate.hold(key, 2.0, now=later) is not None  # type: ignore[arg-type]


def test_keys_without_a_budget_hold_nothing(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")
    key, _ = create_key(store, "free", rpm=100)
    assert Gatekeeper(store).hold(key, 5.0) is None
    with store.engine.connect() as conn:
        assert spend_holds.held(conn, key.id, time.time()) == 0.0


@pytest.mark.integration
def test_holds_on_postgres(fresh_postgres: str) -> None:
    store = TelemetryStore(fresh_postgres)
    key = key_with_budget(store, 10.0)
    a, b = Gatekeeper(store), Gatekeeper(TelemetryStore(fresh_postgres))
    held = [a.hold(key, 4.0), b.hold(key, 4.0), a.hold(key, 4.0)]  # type: ignore[arg-type]  # 0, 4, 8 held: in
    with pytest.raises(Denied):
        b.hold(key, 4.0)  # type: ignore[arg-type]
    for h in held:
        a.release(h)
    with store.engine.connect() as conn:
        assert spend_holds.held(conn, key.id, time.time()) == pytest.approx(0.0)  # type: ignore[attr-defined]
    store.close()
