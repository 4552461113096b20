"""Retention (`moai db prune`, `settings.retention_days`) and the indexes that keep per-request reads fast."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_support import one_line_error
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert, inspect, select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from moai.cli import app as cli
from moai.config import parse_config
from moai.server.app import create_app
from moai.server.auth import Gatekeeper, create_key, delete_key, list_keys, period_starts, revoke_key
from moai.telemetry.adapt import LiveStats, _models_called
from moai.telemetry.migrations import current, upgrade
from moai.telemetry.records import CallRecord, FeedbackRecord, RateWindow, RequestRecord
from moai.telemetry.retention import RetentionRefused, parse_age, prune, retain
from moai.telemetry.store import TelemetryStore

NOW = datetime.now(UTC)


def run_cli(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args)


def add(store: TelemetryStore, rid: str, age: timedelta, model: str = "m", feedback: bool = False,
        ended_at: float = 1.0, status: str = "ok") -> None:
    """One request ``age`` old with two calls (and a rating)."""
    rec = RequestRecord(id=rid, created_at=NOW - age, mix="default", strategy="route", model=model, status="ok",
                        http_status=200, stream=False, api_key="mk_a")
    for step in ("route", "answer"):
        rec.calls.append(CallRecord(step=step, role="answer", model=model, status=status, started_at=ended_at - 1,
                                    ended_at=ended_at, latency_ms=1000.0))
    store.write(rec)
    if feedback:
        store.add_feedback(rid, 1.0)


def counts(store: TelemetryStore) -> tuple[int, int, int]:
    with store.engine.connect() as c:
        return tuple(c.scalar(text(f"select count(*) from {t}")) for t in ("requests", "calls", "feedback"))  # type: ignore[return-value]


@pytest.fixture
def store(tmp_path: Path) -> TelemetryStore:
    return TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")


def test_prune_deletes_old_requests_with_their_calls_and_feedback_in_batches(store: TelemetryStore) -> None:
    for i in range(7):
        add(store, f"old-{i}", timedelta(days=40 + i), feedback=i % 2 == 0)
    for i in range(3):
        add(store, f"new-{i}", timedelta(days=i), feedback=True)
    gone = prune(store, NOW - timedelta(days=30), batch=3)
    assert (gone.requests, gone.calls, gone.feedback) == (7, 14, 4)
    assert counts(store) == (3, 6, 3)
    assert sorted(r.id for r in store.requests()) == ["new-0", "new-1", "new-2"]
    assert prune(store, NOW - timedelta(days=30)).requests == 0  # nothing older left: a no-op


def test_prune_refuses_to_reset_an_active_budget_and_retention_keeps_its_period(store: TelemetryStore) -> None:
    add(store, "this-month", timedelta(seconds=1))
    key, _ = create_key(store, "team", budget_month=5.0)
    with pytest.raises(RetentionRefused, match=f"{key.id}'s monthly budget.*keep at least 32d"):
        prune(store, datetime.now(UTC))  # now, not at import: the day may have turned since
    assert counts(store)[0] == 1
    gone, before = retain(store, days=0.0001, now=NOW)  # retention moves its cut-off back to the month's start
    assert gone.requests == 0 and before == period_starts(NOW)[1]
    revoke_key(store, key.id)  # a revoked key spends nothing more: its budget no longer holds data back
    assert prune(store, datetime.now(UTC) + timedelta(seconds=1)).requests == 1


def test_a_daily_budget_only_holds_back_today(store: TelemetryStore) -> None:
    create_key(store, "daily", budget_day=1.0)
    with pytest.raises(RetentionRefused, match="daily budget.*keep at least 1d"):
        prune(store, datetime.now(UTC))  # now, not at import: the day may have turned since
    prune(store, NOW - timedelta(days=1, minutes=1))


@pytest.mark.parametrize(("text_", "seconds"), [("90d", 90 * 86400), ("12h", 43200), ("2w", 14 * 86400),
                                                ("1.5D", 1.5 * 86400)])
def test_parse_age(text_: str, seconds: float) -> None:
    assert parse_age(text_).total_seconds() == seconds


@pytest.mark.parametrize("bad", ["90", "0d", "-1d", "3m", "d", ""])
def test_parse_age_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="bad age"):
        parse_age(bad)


# ------------------------------------------------------------------------------------------- indexes


def plan(store: TelemetryStore, sql: str, **params: object) -> str:
    with store.engine.connect() as c:
        return " | ".join(str(r[-1]) for r in c.execute(text("EXPLAIN QUERY PLAN " + sql), params))


def test_the_hot_reads_use_an_index_without_sorting(store: TelemetryStore) -> None:
    """The live statistics (every 2 s), a budget's spend and a session's model (per request) must not visit or
    sort every row as the database grows."""
    latest = plan(store, "SELECT status FROM calls WHERE model = :m AND status IN ('ok', 'failed') "
                  "ORDER BY ended_at DESC LIMIT 50", m="m")
    assert "ix_calls_model_ended_at" in latest and "TEMP B-TREE" not in latest
    spend = plan(store, "SELECT sum(cost_usd) FROM requests WHERE api_key = :k AND created_at >= :t", k="k", t=NOW)
    assert "ix_requests_api_key_created_at" in spend and "created_at>?" in spend
    session = plan(store, "SELECT model FROM requests WHERE session = :s AND mix = :x AND api_key = :k AND "
                   "status = 'ok' ORDER BY created_at DESC LIMIT 1", s="s", x="default", k="k")
    assert "ix_requests_session_api_key_created_at" in session and "TEMP B-TREE" not in session


def test_models_called_lists_each_model_once(store: TelemetryStore) -> None:
    for i, model in enumerate(["b", "a", "c", "a", "b"]):
        add(store, f"r{i}", timedelta(minutes=i), model=model)
    with Session(store.engine) as s:
        assert _models_called(s) == ["a", "b", "c"]
    stats = LiveStats()
    stats.refresh(store)
    assert sorted(stats.models) == ["a", "b", "c"]


def test_upgrading_a_populated_database_keeps_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    upgrade(engine, "0004")
    with engine.begin() as c:
        c.execute(insert(RequestRecord.__table__), [{"id": "r1", "created_at": NOW, "mix": "default",
                                                     "strategy": "route", "model": "m", "status": "ok",
                                                     "http_status": 200, "stream": False, "api_key": "k"}])
    engine.dispose()
    store = TelemetryStore(url)
    assert current(store.engine) == "0008"
    names = {ix["name"] for ix in inspect(store.engine).get_indexes("requests")}
    assert {"ix_requests_api_key_created_at", "ix_requests_session_api_key_created_at"} <= names
    assert not {"ix_requests_api_key", "ix_requests_session"} & names
    assert [r.id for r in store.requests()] == ["r1"]


@pytest.mark.integration
def test_retention_and_the_skip_scan_on_postgres(fresh_postgres: str) -> None:
    store = TelemetryStore(fresh_postgres)
    for i, model in enumerate(["b", "a", "b"]):
        add(store, f"r{i}", timedelta(days=40 * (i % 2)), model=model, feedback=True)
    with Session(store.engine) as s:
        assert _models_called(s) == ["a", "b"]
    gone = prune(store, NOW - timedelta(days=30), batch=1)
    assert (gone.requests, gone.calls, gone.feedback) == (1, 2, 1)
    assert counts(store) == (2, 4, 2)
    store.close()


# ------------------------------------------------------------------------------------------- CLI


def test_db_prune_cli(store: TelemetryStore, tmp_path: Path) -> None:
    add(store, "old", timedelta(days=100), feedback=True)
    add(store, "new", timedelta(days=1))
    url = ["--database-url", store.url]
    dry = run_cli(["db", "prune", "--older-than", "90d", "--dry-run", *url])
    assert dry.exit_code == 0 and "would delete 1 requests" in dry.output
    assert counts(store)[0] == 2
    done = run_cli(["db", "prune", "--older-than", "90d", *url])
    assert done.exit_code == 0 and "deleted 1 requests, 2 calls and 1 feedback rows" in done.output
    assert [r.id for r in store.requests()] == ["new"]
    one_line_error(run_cli(["db", "prune", "--older-than", "soon", *url]), "--older-than: bad age 'soon'")
    missing = tmp_path / "none.db"
    one_line_error(run_cli(["db", "prune", "--older-than", "1d", "--database-url", f"sqlite:///{missing}"]),
                   "does not exist")
    assert not missing.exists()
    create_key(store, "team", budget_day=1.0)  # today's requests are held back (unless the day began 3.6 s ago)
    one_line_error(run_cli(["db", "prune", "--older-than", "0.001h", *url]), "daily budget")
    assert counts(store)[0] == 1


def test_keys_delete_cli_and_the_gateway_it_opens(store: TelemetryStore) -> None:
    a, _ = create_key(store, "a", rpm=5)
    b, _ = create_key(store, "b")
    with store.engine.begin() as c:
        c.execute(insert(RateWindow.__table__), [{"key_id": a.id, "minute": 1, "count": 3}])
    url = ["--database-url", store.url]
    one_line_error(run_cli(["keys", "delete", "mk_nope", *url]), "no key 'mk_nope'")
    ok = run_cli(["keys", "delete", a.id, *url])
    assert ok.exit_code == 0 and f"deleted {a.id}" in ok.output
    assert [k.id for k in list_keys(store)] == [b.id]
    with store.engine.connect() as c:
        assert c.scalar(select(RateWindow.key_id)) is None
    revoke_key(store, b.id)
    with pytest.raises(Exception, match="requires an API key"):  # revoked, the last key still closes the gateway
        Gatekeeper(store).authenticate(None)
    one_line_error(run_cli(["keys", "delete", b.id, *url]), "last key", "--yes")
    assert list_keys(store)
    assert run_cli(["keys", "delete", b.id, "--yes", *url]).exit_code == 0
    assert Gatekeeper(store).authenticate(None) is None  # no key row left: open, as before any key existed
    assert not delete_key(store, b.id)


# ------------------------------------------------------------------------------------------- server


CONFIG = """
models:
  m: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private}
mixes:
  default: {strategy: route, models: [m]}
settings:
  retention_days: 30
"""


def test_server_applies_retention_days_at_start(store: TelemetryStore) -> None:
    add(store, "old", timedelta(days=31), feedback=True)
    add(store, "new", timedelta(days=29))
    app = create_app(parse_config(CONFIG), store=store)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        for _ in range(100):
            if counts(store)[0] == 1:
                break
            time.sleep(0.05)
    assert [r.id for r in store.requests()] == ["new"]
    assert counts(store) == (1, 2, 0)


def test_retention_days_must_be_positive() -> None:
    with pytest.raises(Exception, match="retention_days"):
        parse_config(CONFIG.replace("retention_days: 30", "retention_days: 0"))


def test_feedback_and_calls_of_kept_requests_survive(store: TelemetryStore) -> None:
    add(store, "kept", timedelta(days=1), feedback=True)
    prune(store, NOW - timedelta(days=2))
    with store.engine.connect() as c:
        assert c.scalar(select(FeedbackRecord.request_id)) == "kept"
