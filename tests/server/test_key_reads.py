"""The gatekeeper's reads of the key table when the database hangs: one read at a time, bounded by the grace."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from moai.server import auth
from moai.server.auth import Denied, Gatekeeper, create_key
from moai.telemetry.store import TelemetryStore


class SlowReads:
    """list_keys that takes ``delay_s`` (a database that hangs) and counts its calls."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s, self.calls, self._real = delay_s, 0, auth.list_keys
        self._lock = threading.Lock()

    def __call__(self, store: TelemetryStore) -> Any:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay_s)
        return self._real(store)


def keeper_with_a_key(tmp_path: Path) -> tuple[Gatekeeper, str]:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    _, secret = create_key(store, "ci")
    keeper = Gatekeeper(store)
    assert keeper.authenticate(f"Bearer {secret}") is not None  # the key set is read once
    return keeper, secret


async def test_a_hanging_read_is_not_repeated_by_every_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keeper, secret = keeper_with_a_key(tmp_path)
    slow = SlowReads(0.5)
    monkeypatch.setattr(auth, "list_keys", slow)
    keeper.refresh_s = 0.0  # stale at once: every request would read the table
    started = time.monotonic()
    keys = await asyncio.gather(*(keeper.check(f"Bearer {secret}") for _ in range(20)))
    assert all(k is not None and k.name == "ci" for k in keys)  # served from the key set read last meanwhile
    assert slow.calls == 1 and time.monotonic() - started < 2.0


async def test_a_read_hanging_past_the_grace_is_a_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keeper, secret = keeper_with_a_key(tmp_path)
    monkeypatch.setattr(auth, "list_keys", SlowReads(1.0))
    keeper.refresh_s, keeper.grace_s = 0.0, 0.2
    reading = asyncio.ensure_future(keeper.check(f"Bearer {secret}"))  # the read that hangs
    await asyncio.sleep(0.4)
    with pytest.raises(Denied) as denied:
        await keeper.check(f"Bearer {secret}")
    assert denied.value.status == 503 and denied.value.code == "database_unavailable"
    assert (await reading) is not None  # the read itself completes, with the key


async def test_before_any_read_requests_wait_for_it_and_never_see_an_open_gateway(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    create_key(store, "ci")
    slow = SlowReads(0.3)
    monkeypatch.setattr(auth, "list_keys", slow)
    keeper = Gatekeeper(store)
    results = await asyncio.gather(*(keeper.check(None) for _ in range(8)), return_exceptions=True)
    assert all(isinstance(r, Denied) and r.status == 401 for r in results)  # a key exists: none may pass
    assert slow.calls == 1


async def test_a_normal_read_after_a_quiet_spell_is_no_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last read is older than the grace only because nobody called: requests during the re-read that starts
    then use the key set read last (a hang is timed from the read's own start)."""
    keeper, secret = keeper_with_a_key(tmp_path)
    keeper._read_at = keeper._loaded = time.monotonic() - 60  # idle for a minute
    monkeypatch.setattr(auth, "list_keys", SlowReads(0.3))
    keys = await asyncio.gather(*(keeper.check(f"Bearer {secret}") for _ in range(5)))
    assert all(k is not None for k in keys)
