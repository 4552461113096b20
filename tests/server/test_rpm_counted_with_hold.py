"""A budgeted key's request is counted against its RPM limit in its budget hold's transaction: a request the hold
refuses is never counted, so it cannot refuse a concurrent request of the key while it waits for its hold. A
request refused before its hold (a bad option, an unknown model) still uses the limit up."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from budgeted_key import budgeted_gateway, counted
from starlette.testclient import TestClient
from stub_openai import Script, StubServer

from moai.server import spend_holds
from moai.server.app import create_app
from moai.server.auth import Denied, Gatekeeper, create_key
from moai.server.rate_limit import Window
from moai.telemetry.store import TelemetryStore

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60  # the start of a UTC minute
AT = datetime.fromtimestamp(T0 + 10, UTC)


def test_a_request_waiting_for_a_hold_that_is_refused_does_not_refuse_another(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    key, _ = create_key(store, "k", budget_day=10.0, rpm=1)
    keeper, replica = Gatekeeper(store), Gatekeeper(TelemetryStore(store.url))
    first = keeper.authorize(key, "default", AT)  # admitted; its plan is being prepared
    assert first == Window(1, 0, 110)  # the counts read now, plus this request
    assert counted(store, key.id) == 0
    second = keeper.authorize(key, "default", AT)  # at once: the first is not counted yet, so it may go on
    taken = replica.hold(key, 10.0, AT)  # another request takes the whole budget meanwhile
    with pytest.raises(Denied) as refused:
        keeper.hold(key, 1.0, AT, counted=first)
    assert refused.value.code == "insufficient_quota" and refused.value.window == Window(1, 1, 0)
    assert counted(store, key.id) == 0  # never counted, not even for a moment
    replica.release(taken)
    hold = keeper.hold(key, 1.0, AT, counted=second)  # the budget is back: the second is held and counted
    assert hold is not None and hold.usd == 1.0 and hold.rpm_minute == int(T0 // 60)
    assert counted(store, key.id) == 1


def test_the_last_slot_is_given_to_the_first_hold_and_a_refused_count_holds_nothing(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    key, _ = create_key(store, "k", budget_day=10.0, rpm=1)
    keeper = Gatekeeper(store)
    a, b = keeper.authorize(key, "default", AT), keeper.authorize(key, "default", AT)
    assert a is not None and a.pending and b is not None and b.pending
    assert keeper.hold(key, 2.0, AT, counted=a) is not None
    with pytest.raises(Denied) as refused:  # the window filled up since its admission
        keeper.hold(key, 3.0, AT, counted=b)
    assert refused.value.code == "rate_limit_exceeded" and refused.value.retry_after
    assert counted(store, key.id) == 1
    with store.engine.connect() as conn:
        assert spend_holds.held(conn, key.id, AT.timestamp()) == pytest.approx(2.0)  # its hold was rolled back
    with pytest.raises(Denied) as full:  # and the next admission finds no room
        keeper.authorize(key, "default", AT)
    assert full.value.code == "rate_limit_exceeded"


def test_nothing_to_cost_is_still_counted_and_holds_nothing(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    key, _ = create_key(store, "k", budget_day=10.0, rpm=5)
    keeper = Gatekeeper(store)
    window = keeper.authorize(key, "default", AT)
    hold = keeper.hold(key, 0.0, AT, counted=window)
    assert hold is not None and hold.usd == 0.0 and counted(store, key.id) == 1
    keeper.release(hold)
    with store.engine.connect() as conn:
        assert spend_holds.held(conn, key.id, AT.timestamp()) == 0.0


def test_requests_refused_before_their_hold_use_the_limit_up(tmp_path: Path) -> None:
    with StubServer(Script()) as stub:
        config, store, key_id, secret, mixture = budgeted_gateway(tmp_path, stub.url)
        auth = {"authorization": f"Bearer {secret}"}
        user = [{"role": "user", "content": "hi"}]
        with TestClient(create_app(config, store, mixture=mixture)) as client:
            bad = client.post("/v1/chat/completions", headers=auth,
                              json={"model": "moai/default", "messages": user, "moai": {"bogus_option": 1}})
            unknown = client.post("/v1/chat/completions", headers=auth, json={"model": "nope", "messages": user})
            deadline = time.monotonic() + 10  # their counts are made in the background
            while counted(store, key_id) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            ok = client.post("/v1/chat/completions", headers=auth, json={"model": "moai/default", "messages": user})
        store.close()
    assert (bad.status_code, unknown.status_code, ok.status_code) == (400, 404, 200)
    assert counted(store, key_id) == 3
    assert ok.headers["x-ratelimit-remaining-requests"] == "2"
