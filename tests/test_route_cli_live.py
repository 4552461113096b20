"""`moai route` weighs what the server weighs: the failures recorded in its database move the decision as they move
the server's (it showed the cards' decision alone, which the server no longer made)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from moai.cli import app
from moai.telemetry.records import CallRecord, RequestRecord
from moai.telemetry.store import TelemetryStore

CONFIG = """models:
  cheap: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: cloud,
          price: {input_per_mtok: 0.1, output_per_mtok: 0.1}}
  dear: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: cloud,
         price: {input_per_mtok: 9, output_per_mtok: 9}}
mixes:
  default: {strategy: route, models: [cheap, dear], weights: {quality: 0, cost: 1}}
"""


def failures(store: TelemetryStore, model: str, n: int) -> None:
    now = time.time()
    recs = []
    for i in range(n):
        rec = RequestRecord(id=f"chatcmpl-{i}", mix="default", strategy="route", model=None, status="error",
                            http_status=502, stream=False, latency_ms=50.0)
        rec.calls.append(CallRecord(step="answer", role="answer", model=model, status="failed",
                                    started_at=now - 1, ended_at=now - 0.9 + i / 1000, latency_ms=100.0,
                                    error="upstream error"))
        recs.append(rec)
    store.write_many(recs)


def routed(tmp_path: Path, *extra: str) -> str:
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(CONFIG)
    r = CliRunner().invoke(app, ["route", "hello there", "--config", str(cfg), "--json", *extra],
                           env={"MOAI_HOME": str(tmp_path / "home")})
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["model"]


def test_route_reads_the_failures_the_server_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'moai.db'}"
    store = TelemetryStore(url)
    failures(store, "cheap", 10)
    store.close()
    assert routed(tmp_path) == "cheap"  # no database of its own yet: the cards alone
    assert routed(tmp_path, "--database-url", url) == "dear"
    assert not (tmp_path / "home" / "moai.db").exists()  # reading none creates none


def test_route_leaves_a_database_without_moais_tables_as_it_found_it(tmp_path: Path) -> None:
    """A database moai never wrote to (another program's, or PostgreSQL's empty one) has no statistics: reading
    them must not create moai's tables there (opening a store migrates)."""
    import sqlite3

    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table notes (x text)")
    assert routed(tmp_path, "--database-url", f"sqlite:///{db}") == "cheap"
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
    assert tables == {"notes"}
