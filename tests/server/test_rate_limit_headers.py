"""OpenAI's x-ratelimit-*-requests headers for keys with an RPM limit: what the sliding window says is left (and
when it is whole again), on answers, streams and the 429 that refuses a request; none for keys without a limit."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.server import auth
from moai.server.app import create_app
from moai.server.auth import Denied, Gatekeeper, create_key
from moai.server.rate_limit import Window, duration, full_reset, peek, remaining, take, tally
from moai.telemetry.records import RateWindow
from moai.telemetry.store import TelemetryStore

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60  # the start of a UTC minute
LIMIT, REMAINING, RESET = "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"
HEADERS = (LIMIT, REMAINING, RESET)
BODY = {"model": "moai/default", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("current", "previous", "rpm", "elapsed", "left"), [
    (1, 0, 3, 10, 2),  # nothing from the last minute: the limit less this minute's count
    (2, 4, 10, 15, 5),  # 2 + 4 * 45/60 = 5
    (1, 3, 4, 40, 2),  # 1 + 3 * 20/60 = 2
    (1, 5, 4, 30, 0),  # 1 + 5 * 30/60 = 3.5: half a request is no request
    (3, 6, 5, 10, 0),  # 3 + 6 * 50/60 = 8, over the limit: never negative
])
def test_remaining_is_the_floor_of_the_limit_less_the_sliding_estimate(
        current: int, previous: int, rpm: int, elapsed: float, left: int) -> None:
    assert remaining(current, previous, rpm, elapsed) == left


def test_full_reset_waits_for_every_counted_request_to_leave_the_window() -> None:
    assert full_reset(current=1, previous=0, elapsed=15) == 105  # fades over the next minute
    assert full_reset(current=2, previous=7, elapsed=50) == 70
    assert full_reset(current=0, previous=2, elapsed=15) == 45  # the last minute's fades by this one's end
    assert full_reset(current=0, previous=0, elapsed=15) == 0


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.02, "20ms"), (0.0004, "1ms"), (1, "1s"), (8.64, "8.64s"), (60, "1m0s"), (360, "6m0s"),
    (105, "1m45s"), (65.5, "1m5.5s"), (3725, "1h2m5s"),
    (60 - 15 + 60 * (1 - 2 / 3), "1m5s"),  # 65.000000000000004: float noise is not a millisecond more
])
def test_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_tally_tells_what_is_left_and_when_the_window_is_whole(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    got = [tally(store, "k", 4, T0 + 50 + i) for i in range(4)]
    assert got == [Window(4, 3, 70), Window(4, 2, 69), Window(4, 1, 68), Window(4, 0, 67)]
    # 10 s into the next minute: 1 + 4 * 50/60 > 4, refused; the headers say when one more fits (as Retry-After)
    refused = tally(store, "k", 4, T0 + 70)
    assert refused.retry_after == pytest.approx(60 - 10 - 60 * 3 / 4)
    assert (refused.limit, refused.remaining, refused.reset_s) == (4, 0, refused.retry_after)
    assert tally(store, "k", 4, T0 + 76) == Window(4, 0, 104)  # 1 + 4 * 44/60 = 3.93: in, and none left
    assert tally(store, "k", 4, T0 + 105) == Window(4, 1, 75)  # 2 + 4 * 15/60 = 3
    assert peek(store, "k", 4, T0 + 105) == Window(4, 1, 75)  # read, not counted
    assert peek(store, "k", 4, T0 + 105) == Window(4, 1, 75)
    assert peek(store, "fresh", 4, T0 + 105) == Window(4, 4, 0)
    with store.engine.connect() as c:
        assert dict(c.execute(select(RateWindow.minute, RateWindow.count).where(RateWindow.key_id == "k")).all()) == {
            int(T0 // 60): 4, int(T0 // 60) + 1: 2}
    assert take(store, "k", 4, T0 + 106) is None  # take still answers None or the wait
    assert take(store, "k", 4, T0 + 107) == pytest.approx(60 - 47)  # 4 + 4 * 13/60: the last minute must fade


def test_the_gatekeeper_hands_the_window_over(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    limited, _ = create_key(store, "limited", rpm=2)
    broke, _ = create_key(store, "broke", budget_day=0.0)
    broke_limited, _ = create_key(store, "broke-limited", budget_day=0.0, rpm=5)
    free, _ = create_key(store, "free")
    keeper = Gatekeeper(store)
    now = datetime.fromtimestamp(T0 + 20, UTC)
    assert keeper.authorize(limited, "default", now) == Window(2, 1, 100)
    assert keeper.authorize(limited, "default", now) == Window(2, 0, 100)
    with pytest.raises(Denied) as denied:
        keeper.authorize(limited, "default", now)
    assert denied.value.code == "rate_limit_exceeded"
    assert denied.value.window == Window(2, 0, denied.value.retry_after or 0, denied.value.retry_after)
    assert keeper.authorize(free, "default", now) is None
    with pytest.raises(Denied) as denied:
        keeper.authorize(broke, "default", now)
    assert denied.value.code == "insufficient_quota" and denied.value.window is None
    with pytest.raises(Denied) as denied:  # out of budget, but its RPM limit is still told (and nothing counted)
        keeper.authorize(broke_limited, "default", now)
    assert denied.value.code == "insufficient_quota" and denied.value.window == Window(5, 5, 0)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The gatekeeper's clock stopped 15 s into the current minute: no minute boundary between two requests."""
    now = datetime.now(UTC)
    at = now.replace(second=15, microsecond=0)

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:  # type: ignore[override]
            return cls.fromtimestamp(at.timestamp(), tz)

    monkeypatch.setattr(auth, "datetime", Frozen)
    return at


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, TelemetryStore]]:
    with StubServer(Script(reply="hello")) as stub:
        config = parse_config(f"""
models:
  m: {{provider: openai_compat, endpoint: "{stub.url}", privacy: private, max_retries: 0,
      price: {{input_per_mtok: 200000, output_per_mtok: 200000}}}}
mixes:
  default: {{strategy: route}}
""")
        mixture = Mixture(config, store=TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}"), chooser=RuleChooser())
        assert mixture.store is not None
        with TestClient(create_app(config, mixture.store, mixture=mixture)) as client:
            yield client, mixture.store


def told(r: Any) -> tuple[str | None, ...]:
    return tuple(r.headers.get(h) for h in HEADERS)


def test_headers_count_down_to_the_429(served: tuple[TestClient, TelemetryStore], frozen: datetime) -> None:
    client, store = served
    _, secret = create_key(store, "limited", rpm=3)
    auth_ = {"authorization": f"Bearer {secret}"}
    first = client.post("/v1/chat/completions", json=BODY, headers=auth_)
    assert first.status_code == 200, first.text
    assert told(first) == ("3", "2", "1m45s")  # its request fades out of the window by the end of the next minute
    streamed = client.post("/v1/chat/completions", json={**BODY, "stream": True}, headers=auth_)
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    assert told(streamed) == ("3", "1", "1m45s")
    assert told(client.post("/v1/chat/completions", json=BODY, headers=auth_)) == ("3", "0", "1m45s")
    refused = client.post("/v1/chat/completions", json=BODY, headers=auth_)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    wait = 60 - 15 + 60 * (1 - 2 / 3)  # this minute is full: wait for it to end and fade below the limit
    assert refused.headers["retry-after"] == str(math.ceil(wait - 1e-9)) == "65"
    assert told(refused) == ("3", "0", "1m5s")


def test_no_headers_on_an_open_gateway(served: tuple[TestClient, TelemetryStore]) -> None:
    client, _ = served
    for body in (BODY, {**BODY, "stream": True}):
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and told(r) == (None, None, None)


def test_no_request_headers_for_keys_without_a_limit(served: tuple[TestClient, TelemetryStore],
                                                     frozen: datetime) -> None:
    client, store = served
    _, free = create_key(store, "free")
    _, broke = create_key(store, "broke", budget_day=1.0)
    _, broke_limited = create_key(store, "broke-limited", budget_day=1.0, rpm=5)
    for body in (BODY, {**BODY, "stream": True}):
        r = client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {free}"})
        assert r.status_code == 200 and told(r) == (None, None, None)
    auth_ = {"authorization": f"Bearer {broke}"}
    r = client.post("/v1/chat/completions", json=BODY, headers=auth_)
    assert r.status_code == 200 and told(r) == (None, None, None)
    r = client.post("/v1/chat/completions", json=BODY, headers=auth_)  # its first answer spent the budget
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    assert "retry-after" in r.headers and told(r) == (None, None, None)
    auth_ = {"authorization": f"Bearer {broke_limited}"}
    r = client.post("/v1/chat/completions", json=BODY, headers=auth_)
    assert r.status_code == 200 and told(r) == ("5", "4", "1m45s")
    r = client.post("/v1/chat/completions", json=BODY, headers=auth_)  # spent: the limit is told, nothing counted
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    assert told(r) == ("5", "4", "1m45s")
    assert client.get("/v1/models", headers=auth_).headers.get(LIMIT) is None  # no request counted there
