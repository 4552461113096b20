"""A key revoked (or created) on another replica counts within the keys' refresh time, however long a server sat
idle: an old key set never stands in for a read in flight, and the server re-reads keys without requests."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from moai.config import parse_config
from moai.server.app import create_app
from moai.server.auth import Denied, Gatekeeper, create_key, revoke_key
from moai.telemetry.store import TelemetryStore


def hold_read(keeper: Gatekeeper, seconds: float) -> threading.Thread:
    """Another request's read of the key table, in flight for ``seconds``."""
    started = threading.Event()

    def read() -> None:
        with keeper._reading:
            started.set()
            time.sleep(seconds)

    t = threading.Thread(target=read)
    t.start()
    started.wait()
    return t


async def test_a_key_revoked_while_the_server_was_idle_is_refused_during_a_read_in_flight(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    key, secret = create_key(store, "k")
    keeper = Gatekeeper(store, refresh_s=0.05)
    assert (await keeper.admit(f"Bearer {secret}"))[0].id == key.id
    revoke_key(store, key.id)  # on another replica
    await asyncio.sleep(0.3)  # idle: the key set read last is six refreshes old
    reader = hold_read(keeper, 0.3)
    try:
        with pytest.raises(Denied) as denied:
            await keeper.admit(f"Bearer {secret}")
    finally:
        reader.join()
    assert denied.value.status == 401


async def test_a_key_set_read_lately_stands_in_for_a_read_in_flight(tmp_path: Path) -> None:
    """The common case stays cheap: requests do not queue behind a read when the set in memory is fresh enough."""
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    key, secret = create_key(store, "k")
    keeper = Gatekeeper(store, refresh_s=1.0)
    assert (await keeper.admit(f"Bearer {secret}"))[0].id == key.id
    keeper._loaded -= 1.5  # stale, but within two refreshes
    reader = hold_read(keeper, 1.0)
    try:
        t0 = time.monotonic()
        assert (await keeper.admit(f"Bearer {secret}"))[0].id == key.id
        assert time.monotonic() - t0 < 0.5
    finally:
        reader.join()


def test_the_server_reads_keys_without_requests(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    cfg = parse_config('models:\n  m: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1"}\n'
                       "mixes:\n  default: {strategy: route}\n")
    app = create_app(cfg, store)
    keeper: Gatekeeper = app.state.keeper
    keeper.refresh_s = 0.05
    with TestClient(app):
        deadline = time.monotonic() + 5
        while keeper._read_at is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first = keeper._read_at
        time.sleep(0.3)
        later = keeper._read_at
    assert first is not None and later is not None and later > first  # read, and read again, with no request
