"""What an upstream echoes back (the API key moai sent it, its own addresses) in its errors: never handed to clients,
in an error body or in a successful answer's ``moai.trace`` and ``moai.reason``, and never stored with its keys."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from stub_openai import ECHOED_SECRET, Script, StubServer, echoing_upstream

from moai.config import parse_config
from moai.server.app import create_app
from moai.telemetry.store import TelemetryStore

HI = [{"role": "user", "content": "hi"}]


def test_a_deployments_key_echoed_back_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "deployment-Secret-998877"  # shaped like no credential: only knowing the deployment's key hides it
    monkeypatch.setenv("DEPLOYMENT_KEY", secret)
    with StubServer(app=echoing_upstream()) as up:
        cfg = parse_config(f"""
models:
  echo: {{provider: openai_compat, privacy: private, max_retries: 0,
         deployments: [{{endpoint: "{up.url}", api_key_env: DEPLOYMENT_KEY}}]}}
mixes:
  default: {{strategy: route, models: [echo]}}
""")
        with TestClient(create_app(cfg)) as client:
            r = client.post("/v1/chat/completions", json={"model": "moai/default", "messages": HI})
    assert r.status_code == 400 and "Bad request" in r.text
    assert secret not in r.text


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_proposers_echo_stays_out_of_the_answer_and_the_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    monkeypatch.setenv("ECHO_KEY", ECHOED_SECRET)
    db = tmp_path / "t.db"
    with StubServer(app=echoing_upstream()) as echo, StubServer(Script(reply="fine")) as fine:
        cfg = parse_config(f"""
models:
  echo: {{provider: openai_compat, endpoint: "{echo.url}", api_key_env: ECHO_KEY, privacy: private, max_retries: 0}}
  good: {{provider: openai_compat, endpoint: "{fine.url}", privacy: private, max_retries: 0}}
mixes:
  both: {{strategy: moa, proposers: [echo, good], aggregator: good, fallbacks: []}}
""")
        with TestClient(create_app(cfg, TelemetryStore(f"sqlite:///{db}"))) as client:
            r = client.post("/v1/chat/completions", json={"model": "moai/both", "messages": HI, "stream": stream})
    assert r.status_code == 200
    text = r.text
    if not stream:
        trace = r.json()["moai"]["trace"]
        (failed,) = [t for t in trace if t["model"] == "echo"]
        assert "Bad request" in failed["error"]  # what went wrong is still told
    else:
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
        assert any("moai" in e for e in events)
    assert ECHOED_SECRET not in text and "internal.corp" not in text and "10.9.8.7" not in text
    with sqlite3.connect(db) as conn:
        stored = [e for (e,) in conn.execute("select error from calls where model = 'echo'")]
    assert stored and all(ECHOED_SECRET not in e and "Bad request" in e for e in stored)
    assert any("internal.corp" in e for e in stored)  # the operator keeps the addresses to debug with
