"""A budgeted key's request is counted against its RPM limit with its budget hold, so its answer's
x-ratelimit-remaining-requests is the window of that count, not of its admission's check: requests of the key
admitted together each saw the same counts there, and are told apart only once counted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from budgeted_key import budgeted_gateway
from starlette.testclient import TestClient
from stub_openai import Script, StubServer

from moai.server.app import create_app
from moai.server.auth import Gatekeeper, create_key
from moai.server.rate_limit import peek
from moai.telemetry.store import TelemetryStore

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60  # the start of a UTC minute
AT = datetime.fromtimestamp(T0 + 10, UTC)
USER = [{"role": "user", "content": "hi"}]
AT_ONCE = 5


def _told_after_holds(store: TelemetryStore) -> None:
    key, _ = create_key(store, "k", budget_day=1000.0, rpm=5)
    keeper = Gatekeeper(store)
    first, second = keeper.authorize(key, "default", AT), keeper.authorize(key, "default", AT)
    assert first is not None and second is not None and first.remaining == second.remaining == 4  # checked only
    held = [keeper.hold(key, 1.0, AT, counted=w) for w in (first, second)]
    told = [h.rpm.headers()["x-ratelimit-remaining-requests"] for h in held if h is not None and h.rpm is not None]
    assert told == ["4", "3"]
    assert peek(store, key.id, 5, AT.timestamp()).remaining == 3


def test_the_hold_tells_the_window_with_its_request_counted(tmp_path: Path) -> None:
    _told_after_holds(TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}"))


@pytest.mark.integration
def test_the_hold_tells_the_window_with_its_request_counted_on_postgresql(fresh_postgres: str) -> None:
    store = TelemetryStore(fresh_postgres)
    try:
        _told_after_holds(store)
    finally:
        store.close()


def _admitted_together(keeper: Gatekeeper, n: int) -> None:
    """Make the key's requests wait for one another before their holds: all admitted, none counted yet."""
    original: Callable[..., Any] = keeper.ahold
    barrier: list[asyncio.Barrier] = []

    async def ahold(*args: Any, **kwargs: Any) -> Any:
        if not barrier:
            barrier.append(asyncio.Barrier(n))
        await asyncio.wait_for(barrier[0].wait(), 10)
        return await original(*args, **kwargs)

    keeper.ahold = ahold  # type: ignore[method-assign]


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True])
def test_concurrent_answers_tell_each_its_own_remaining_count(tmp_path: Path, stream: bool) -> None:
    with StubServer(Script()) as stub:
        config, store, _key_id, secret, mixture = budgeted_gateway(tmp_path, stub.url, 1000.0, AT_ONCE)
        app = create_app(config, store, mixture=mixture)
        _admitted_together(app.state.keeper, AT_ONCE)
        body = {"model": "moai/default", "messages": USER, "stream": stream}
        auth = {"authorization": f"Bearer {secret}"}
        with TestClient(app) as client:
            def one(_: int) -> httpx.Response:
                with client.stream("POST", "/v1/chat/completions", json=body, headers=auth) as r:
                    r.read()
                    return r

            with ThreadPoolExecutor(AT_ONCE) as pool:
                answers = list(pool.map(one, range(AT_ONCE)))
        store.close()
    assert [r.status_code for r in answers] == [200] * AT_ONCE
    remaining = sorted(r.headers["x-ratelimit-remaining-requests"] for r in answers)
    assert remaining == ["0", "1", "2", "3", "4"]  # as a key without a budget is told
