"""The Python API makes every model's provider before its first call runs, as the server does at start-up: the
first call's latency is the upstream's, not the import of its protocol's library."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from stub_openai import Script, StubServer

import moai.providers.registry as registry_module
from moai import Mixture
from moai.api import shutdown
from moai.catalog import ModelCard
from moai.providers import Provider

MAKING_S = 0.5


def test_the_first_calls_latency_leaves_out_making_its_provider(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry_module.make_provider

    def slow_make(card: ModelCard) -> Provider:
        time.sleep(MAKING_S)
        return real(card)

    monkeypatch.setattr(registry_module, "make_provider", slow_make)
    with StubServer(Script(reply="hello")) as a:
        cfg = tmp_path / "mix.yaml"
        cfg.write_text(f'models:\n  a: {{provider: openai_compat, endpoint: "{a.url}", privacy: private}}\n'
                       "mixes:\n  default: {strategy: route, models: [a]}\n")
        m = Mixture.from_config(str(cfg))
        try:
            r = m.chat.completions.create(model="moai/default", messages=[{"role": "user", "content": "hi"}])
        finally:
            shutdown(m)
    trace = r.model_extra["moai"]["trace"]
    assert r.choices[0].message.content == "hello" and trace[0]["latency_ms"] < MAKING_S * 1000, trace
