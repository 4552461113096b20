"""A rate-limited model does not hold the request: a 429 asking for a long wait moves it to the fallback at once,
and later requests go to the other models first until the model's Retry-After has passed.

Served in-process (as the breaker tests are) so the live statistics can be read and the cool-down timed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from reliability_support import AppServer, card, chat, chat_stream, rows, stream_summary, stream_text
from stub_openai import Script, StubServer

from moai.config import Config, parse_config
from moai.server.app import create_app
from moai.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

RETRY_AFTER_S = 2  # long enough to be worth moving on for, short enough to wait out in a test
ALPHA = "answer from alpha"


def two_model_config(stack: ExitStack, first: tuple[str, Script], second: tuple[str, Script],
                     settings: str = "") -> Config:
    """A route mix over two stubbed models (SDK-style retries on): the first is the cheaper, the second its
    fallback."""
    (a, sa), (b, sb) = first, second
    urls = [stack.enter_context(StubServer(s)).url for s in (sa, sb)]
    return parse_config(
        "models:\n"
        f"  {a}: {card(urls[0], price=0.0, max_retries=2)}\n"
        f"  {b}: {card(urls[1], price=1.0, max_retries=2)}\n"
        "mixes:\n"
        f"  default: {{strategy: route, models: [{a}, {b}], fallbacks: [{b}], weights: {{quality: 0, cost: 1}}}}\n"
        + (f"settings: {settings}\n" if settings else "")
    )


def two_models(stack: ExitStack, db: Path, first: tuple[str, Script], second: tuple[str, Script]) -> AppServer:
    config = two_model_config(stack, first, second)
    return stack.enter_context(AppServer(create_app(config, TelemetryStore(f"sqlite:///{db}"))))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[AppServer, Script, Script]]:
    """ratel always answers 429 with Retry-After: 2; alpha answers."""
    ratel = Script(fail_times=10**6, fail_status=429, retry_after=str(RETRY_AFTER_S))
    alpha = Script(reply=ALPHA)
    with ExitStack() as stack:
        yield two_models(stack, tmp_path / "moai.db", ("ratel", ratel), ("alpha", alpha)), ratel, alpha


def tried(summary: dict[str, object]) -> list[str]:
    step = summary["trace"][0]  # type: ignore[index]
    return [a["model"] for a in step.get("attempts", [{"model": step["model"]}])]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_429_falls_back_at_once_and_the_model_cools_down_until_retry_after(
        rig: tuple[AppServer, Script, Script], tmp_path: Path, stream: bool) -> None:
    server, ratel, alpha = rig
    t0 = time.perf_counter()
    if stream:
        status, events = chat_stream(server.url)
        assert status == 200
        text, summary = stream_text(events), stream_summary(events)
    else:
        r = chat(server.url)
        assert r.status_code == 200, r.text
        text, summary = r.json()["choices"][0]["message"]["content"], r.json()["moai"]
    assert time.perf_counter() - t0 < 1.0  # not the 2 s Retry-After, let alone one per retry
    assert text == ALPHA and tried(summary) == ["ratel", "alpha"] and ratel.calls == 1
    failed = summary["trace"][0]["attempts"][0]
    assert failed["status"] == 429 and failed["retry_after_s"] == RETRY_AFTER_S
    calls = rows(tmp_path / "moai.db", "select model, status from calls where request_id=? order by model",
                 summary["id"])
    assert calls == [("alpha", "ok"), ("ratel", "rate_limited")]

    # until the Retry-After has passed, alpha goes first and ratel is not called at all
    for _ in range(3):
        r = chat(server.url)
        assert r.status_code == 200 and tried(r.json()["moai"]) == ["alpha"]
    assert ratel.calls == 1 and alpha.calls == 4
    stats = httpx.get(server.base + "/moai/stats", timeout=10).json()["models"]["ratel"]
    assert 0 < stats["rate_limited_s"] <= RETRY_AFTER_S
    assert stats["error_rate"] == 0 and stats["breaker"] == "closed"  # busy, not broken

    time.sleep(RETRY_AFTER_S + 0.2)  # the cool-down is over: ratel, cheapest, is tried first again
    r = chat(server.url)
    assert r.status_code == 200 and tried(r.json()["moai"]) == ["ratel", "alpha"] and ratel.calls == 2


def test_when_every_model_is_rate_limited_the_client_gets_a_429_with_the_soonest_retry_after(
        tmp_path: Path) -> None:
    """Not a 502: the client's SDK knows to back off and retry a 429, after the soonest Retry-After given."""
    a = Script(fail_times=10**6, fail_status=429, retry_after="7")
    b = Script(fail_times=10**6, fail_status=429, retry_after="3")
    with ExitStack() as stack:
        server = two_models(stack, tmp_path / "m.db", ("a", a), ("b", b))
        r = chat(server.url)
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "3" and r.json()["error"]["code"] == "rate_limit_exceeded"
        assert a.calls == 1 and b.calls == 1
        status, _events = chat_stream(server.url)
        assert status == 429


def test_a_429_one_replica_saw_holds_the_model_back_on_every_replica(tmp_path: Path) -> None:
    """Cool-downs lived in each process: a second replica kept calling a model the upstream had asked to be left
    alone, so N replicas sent N times the traffic into its 429s."""
    ratel = Script(fail_times=10**6, fail_status=429, retry_after="4")
    alpha = Script(reply=ALPHA)
    with ExitStack() as stack:
        config = two_model_config(stack, ("ratel", ratel), ("alpha", alpha), settings="{stats_refresh_s: 0.1}")
        db = f"sqlite:///{tmp_path / 'moai.db'}"
        first, second = (stack.enter_context(AppServer(create_app(config, TelemetryStore(db)))) for _ in range(2))
        r = chat(first.url)
        assert r.status_code == 200 and tried(r.json()["moai"]) == ["ratel", "alpha"] and ratel.calls == 1
        deadline = time.monotonic() + 3
        while "rate_limited_s" not in httpx.get(second.base + "/moai/stats", timeout=10).json()["models"].get(
                "ratel", {}):
            assert time.monotonic() < deadline, "the second replica never saw the first one's 429"
            time.sleep(0.05)
        r = chat(second.url)
        assert r.status_code == 200 and tried(r.json()["moai"]) == ["alpha"] and ratel.calls == 1
        stats = httpx.get(second.base + "/moai/stats", timeout=10).json()["models"]["ratel"]
        assert 0 < stats["rate_limited_s"] <= 4 and stats["error_rate"] == 0 and stats["breaker"] == "closed"
