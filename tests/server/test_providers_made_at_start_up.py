"""The server makes every model's provider while it starts, off the event loop: making the first provider of a
protocol imports its library (aiohttp ~0.1 s, Anthropic's SDK ~1 s), which inside the first request stalled every
request in flight and was counted in that call's latency, as if the model had been slow."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from stub_anthropic import StubAnthropic
from stub_openai import Script, StubServer

import moai.providers.anthropic as anthropic_module
import moai.providers.registry as registry_module
from moai.catalog import ModelCard
from moai.config import parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.providers import Provider
from moai.server.app import create_app
from moai.telemetry.store import TelemetryStore

MAKING_S = 0.5  # what making a provider is made to take here, as a library's import would


def test_providers_are_made_before_the_first_request_and_not_timed_in_it(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOAI_TEST_ANTHROPIC_KEY", "sk-ant-test")
    made: list[tuple[str, bool]] = []  # (model, made on a running event loop)
    clients: list[bool] = []  # Anthropic SDK clients made, each: on a running event loop
    real = registry_module.make_provider

    def slow_make(card: ModelCard) -> Provider:
        made.append((card.name, _on_loop()))
        time.sleep(MAKING_S)
        return real(card)

    class Client(anthropic_module._Client):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            clients.append(_on_loop())  # its TLS certificates take ~40 ms to load
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(registry_module, "make_provider", slow_make)
    monkeypatch.setattr(anthropic_module, "_Client", Client)
    with StubServer(Script(reply="hello")) as a, StubAnthropic() as claude:
        config = parse_config(f"""
models:
  a: {{provider: openai_compat, endpoint: "{a.url}", privacy: private, max_retries: 0}}
  claude: {{provider: anthropic, endpoint: "{claude.url}", model: claude-test, privacy: private, max_retries: 0,
           api_key_env: MOAI_TEST_ANTHROPIC_KEY}}
mixes:
  default: {{strategy: route, models: [a]}}
  claude: {{strategy: route, models: [claude]}}
""")
        mixture = Mixture(config, store=TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}"), chooser=RuleChooser())
        with TestClient(create_app(config, mixture.store, mixture=mixture)) as client:
            assert sorted(made) == [("a", False), ("claude", False)]  # at start-up, in a thread
            for mix in ("moai/default", "moai/claude"):
                r = client.post("/v1/chat/completions",
                                json={"model": mix, "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text
                trace: list[dict[str, Any]] = r.json()["moai"]["trace"]
                # the call's time is the upstream's: the (slowed) making of its provider is not in it
                assert trace[0]["latency_ms"] < MAKING_S * 1000, trace
    assert len(made) == 2  # each made once
    assert clients == [False]


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
