"""A model whose circuit is open is still tried, after the healthy ones, rather than never: but once per request.
Its card's retries in place are for a healthy model; sending a failing one the same request again only doubled the
calls (and the wait) of every request a mix had no other model for."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from reliability_support import AppServer, assert_openai_error, card, chat, chat_stream
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.server.app import create_app
from moai.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration


def test_the_only_model_with_an_open_circuit_is_called_once_a_request(tmp_path: Path) -> None:
    failing = Script(fail_times=10**6, fail_status=500)
    with StubServer(failing) as stub:
        config = parse_config(f"models:\n  only: {card(stub.url, max_retries=1)}\n"
                              "mixes:\n  default: {strategy: route, models: [only]}\n")
        with AppServer(create_app(config, TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}"))) as server:
            for _ in range(3):  # healthy: each request tries it twice (one retry in place)
                assert_openai_error(chat(server.url), 502)
            assert failing.calls == 6
            assert httpx.get(server.base + "/healthz", timeout=10).json()["breakers"]["only"] == "open"

            assert_openai_error(chat(server.url), 502)
            assert failing.calls == 7
            status, _events = chat_stream(server.url)
            assert status == 502
            assert failing.calls == 8
