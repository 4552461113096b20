"""`/moai/stats` once keys exist: a shared model's ``calls`` are the asking key's own, so that one tenant does not
read another's traffic on it; the model's health (error rate, breaker) stays the gate's shared view. An open
gateway keeps the model's own count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.server.app import create_app
from moai.server.auth import create_key
from moai.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

BODY = {"model": "moai/default", "messages": [{"role": "user", "content": "hi"}]}


def app(stub_url: str, tmp_path: Path) -> tuple[Any, TelemetryStore]:
    config = parse_config(f"""
models:
  m: {{provider: openai_compat, endpoint: "{stub_url}", privacy: private, max_retries: 0}}
mixes:
  default: {{strategy: route, models: [m]}}
""")
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    mixture = Mixture(config, store=store, chooser=RuleChooser())
    return create_app(config, store, mixture=mixture), store


def test_a_key_sees_its_own_calls_not_the_models_traffic(tmp_path: Path) -> None:
    with StubServer(Script()) as stub:
        application, store = app(stub.url, tmp_path)
        _, busy = create_key(store, "busy")
        _, quiet = create_key(store, "quiet")
        _, idle = create_key(store, "idle")
        as_busy, as_quiet, as_idle = ({"authorization": f"Bearer {s}"} for s in (busy, quiet, idle))
        with TestClient(application) as client:
            for _ in range(4):
                assert client.post("/v1/chat/completions", json=BODY, headers=as_busy).status_code == 200
            assert client.post("/v1/chat/completions", json=BODY, headers=as_quiet).status_code == 200

            def seen(headers: dict[str, str]) -> dict[str, Any]:
                return client.get("/moai/stats", headers=headers).json()["models"]["m"]

            busy_view, quiet_view, idle_view = seen(as_busy), seen(as_quiet), seen(as_idle)
        store.close()
    assert (busy_view["calls"], quiet_view["calls"], idle_view["calls"]) == (4, 1, 0)
    for view in (busy_view, quiet_view, idle_view):  # the gate's health view is shared
        assert view["breaker"] == "closed" and view["error_rate"] == busy_view["error_rate"]


def test_an_open_gateway_shows_the_models_calls(tmp_path: Path) -> None:
    with StubServer(Script()) as stub:
        application, store = app(stub.url, tmp_path)
        with TestClient(application) as client:
            for _ in range(3):
                assert client.post("/v1/chat/completions", json=BODY).status_code == 200
            shown = client.get("/moai/stats").json()["models"]["m"]
            assert shown["calls"] == 3
        store.close()
