"""Gateway keys, budgets and rate limits through the real HTTP server."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from servers import start_moai, stop
from stub_openai import StubServer
from typer.testing import CliRunner

from moai.cli import app

pytestmark = pytest.mark.integration


def create(runner: CliRunner, db: str, *args: str) -> str:
    r = runner.invoke(app, ["keys", "create", "--database-url", db, *args])
    assert r.exit_code == 0, r.output
    return r.output.strip().splitlines()[-1]


def test_keys_budgets_and_rate_limits(tmp_path: Path) -> None:
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'moai.db'}"
    with StubServer() as stub:
        cfg = f"""
models:
  paid: {{provider: openai_compat, endpoint: "{stub.url}", privacy: private, max_retries: 0,
         price: {{input_per_mtok: 200000, output_per_mtok: 200000}}}}
mixes:
  default: {{strategy: route}}
  other: {{strategy: route}}
"""
        srv = start_moai(cfg, tmp_path)  # no key yet: open gateway
        try:
            body = {"model": "moai/default", "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(srv.url + "/chat/completions", json=body).status_code == 200
            limited = create(runner, db, "--name", "ci", "--mixes", "default", "--rpm", "3")
            broke = create(runner, db, "--name", "broke", "--budget-day", "1.0")
            assert limited.startswith("moai-sk-") and limited != broke
            time.sleep(2.5)  # servers re-read the key table every 2 s

            r = httpx.post(srv.url + "/chat/completions", json=body)
            assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
            r = httpx.post(srv.url + "/chat/completions", json=body, headers={"authorization": "Bearer nope"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            auth = {"authorization": f"Bearer {limited}"}
            r = httpx.post(srv.url + "/chat/completions", json={**body, "model": "moai/other"}, headers=auth)
            assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
            assert [m["id"] for m in httpx.get(srv.url + "/models", headers=auth).json()["data"]] == ["moai/default"]
            assert httpx.get(srv.url + "/models/moai/default", headers=auth).json()["id"] == "moai/default"
            r = httpx.get(srv.url + "/models/moai/other", headers=auth)  # not this key's to see
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"

            codes = [httpx.post(srv.url + "/chat/completions", json=body, headers=auth).status_code
                     for _ in range(3)]
            assert codes == [200, 200, 200]
            r = httpx.post(srv.url + "/chat/completions", json=body, headers=auth)
            assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(r.headers["retry-after"]) >= 1

            spender = {"authorization": f"Bearer {broke}"}
            first = httpx.post(srv.url + "/chat/completions", json=body, headers=spender)
            assert first.status_code == 200 and first.json()["moai"]["cost_usd"] >= 1.0
            r = httpx.post(srv.url + "/chat/completions", json=body, headers=spender)
            assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
            assert "retry-after" in r.headers

            key_id = limited.split("-")[2]
            assert runner.invoke(app, ["keys", "revoke", key_id, "--database-url", db]).exit_code == 0
            time.sleep(2.5)  # servers re-read keys every 2 s
            r = httpx.post(srv.url + "/chat/completions", json=body, headers=auth)
            assert r.status_code == 401
        finally:
            stop(srv.proc)
    assert runner.invoke(app, ["keys", "list", "--database-url", db]).exit_code == 0
    from moai.server.auth import list_keys
    from moai.telemetry.store import TelemetryStore

    keys = {k.name: k for k in list_keys(TelemetryStore(db))}
    assert keys["ci"].revoked_at is not None and keys["broke"].revoked_at is None
    assert keys["ci"].secret_hash != limited and limited[8:] not in keys["ci"].secret_hash  # only the hash at rest
    report = runner.invoke(app, ["report", "--database-url", db]).output
    assert broke.split("-")[2] in report  # spend per key
    assert runner.invoke(app, ["keys", "revoke", "mk_nope", "--database-url", db]).exit_code == 2
