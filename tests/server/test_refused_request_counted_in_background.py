"""A budgeted key's request refused before its budget hold (a bad option) is counted against its RPM limit in the
background: its 400 does not wait for a slow database, a shutdown waits for the count, and a count that runs past
the limits' bound still lands (and the log says so)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from budgeted_key import budgeted_gateway, counted
from starlette.testclient import TestClient
from stub_openai import Script, StubServer

from moai.mixture import Mixture
from moai.server import auth
from moai.server.app import create_app
from moai.telemetry.store import TelemetryStore

USER = [{"role": "user", "content": "hi"}]
BAD = {"model": "moai/default", "messages": USER, "moai": {"bogus_option": 1}}
SLOW_S = 1.5


@pytest.fixture
def slow_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The database takes SLOW_S to count a refused request."""
    real = auth.count_admitted

    def slow(store: TelemetryStore, key_id: str, now: float | None = None, n: int = 1) -> int:
        time.sleep(SLOW_S)
        return real(store, key_id, now, n)

    monkeypatch.setattr(auth, "count_admitted", slow)


@pytest.fixture
def stub_url() -> Iterator[str]:
    with StubServer(Script()) as stub:
        yield stub.url


def _setup(tmp_path: Path, url: str) -> tuple[TelemetryStore, str, str, Mixture]:
    _config, store, key_id, secret, mixture = budgeted_gateway(tmp_path, url)
    return store, key_id, secret, mixture


@pytest.mark.integration
@pytest.mark.usefixtures("slow_count")
def test_the_refusal_does_not_wait_for_the_count_and_the_shutdown_does(tmp_path: Path, stub_url: str) -> None:
    store, key_id, secret, mixture = _setup(tmp_path, stub_url)
    with TestClient(create_app(mixture.config, store, mixture=mixture)) as client:
        started = time.monotonic()
        bad = client.post("/v1/chat/completions", headers={"authorization": f"Bearer {secret}"}, json=BAD)
        took = time.monotonic() - started
    assert bad.status_code == 400
    assert took < SLOW_S * 0.6, f"the 400 waited {took:.2f}s for the count"
    assert counted(store, key_id) == 1  # the shutdown waited for it
    store.close()


@pytest.mark.integration
@pytest.mark.usefixtures("slow_count")
def test_a_count_past_the_bound_is_logged_as_late_and_still_lands(tmp_path: Path, stub_url: str,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    store, key_id, secret, mixture = _setup(tmp_path, stub_url)
    app = create_app(mixture.config, store, mixture=mixture)
    app.state.keeper.limit_checks.timeout_s = 0.2
    with caplog.at_level(logging.INFO, logger="moai.server"), TestClient(app) as client:
        bad = client.post("/v1/chat/completions", headers={"authorization": f"Bearer {secret}"}, json=BAD)
        assert bad.status_code == 400
        deadline = time.monotonic() + SLOW_S + 5
        while counted(store, key_id) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counted(store, key_id) == 1  # it landed, after its request was answered and the bound passed
        while "counted against its RPM limit late" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "not counted against its RPM limit yet" in caplog.text
    assert "counted against its RPM limit late" in caplog.text
    store.close()
