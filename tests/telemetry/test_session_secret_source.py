"""The server says at start which secret keys session digests: changing it unpins every conversation, and only one
kept outside the database (MOAI_SESSION_SECRET) protects the digests of a leaked dump."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from moai.config import parse_config
from moai.server.app import create_app
from moai.telemetry.session_digest import SESSION_SECRET_ENV
from moai.telemetry.store import TelemetryStore

CONFIG = """
models:
  m: {provider: openai_compat, endpoint: "http://127.0.0.1:9", privacy: private, max_retries: 0}
mixes:
  default: {strategy: route, models: [m]}
"""


def started(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    """The lines a server start logs about the session secret."""
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    with caplog.at_level(logging.INFO, logger="moai"), TestClient(create_app(parse_config(CONFIG), store)):
        pass
    store.close()
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "session digests" in r.getMessage()]


def test_the_secret_from_the_database_is_logged_once_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(SESSION_SECRET_ENV, raising=False)
    lines = started(tmp_path, caplog)
    assert len(lines) == 1 and "settings table" in lines[0] and SESSION_SECRET_ENV in lines[0]


def test_the_secret_from_the_environment_is_logged_without_its_value(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(SESSION_SECRET_ENV, "k3pt-outside-the-db")
    lines = started(tmp_path, caplog)
    assert len(lines) == 1 and SESSION_SECRET_ENV in lines[0] and "outside the database" in lines[0]
    assert "k3pt-outside-the-db" not in caplog.text
