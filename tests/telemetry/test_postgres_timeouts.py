"""PostgreSQL connections never wait for ever: statements and lock waits are bounded by the server, a peer that
vanished is noticed by TCP keepalives on both ends, migrations alone may take as long as they need, and whatever the
URL, the server or the role sets wins over moai's defaults."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from test_store import request

from moai.server.auth import Denied, Gatekeeper
from moai.telemetry import database
from moai.telemetry.database import connect_args
from moai.telemetry.migrations import PG_LOCK_KEY
from moai.telemetry.spool import is_outage
from moai.telemetry.store import TelemetryStore
from moai.telemetry.writer import TelemetryWriter

SETTINGS = ("statement_timeout", "lock_timeout", "tcp_keepalives_idle", "tcp_keepalives_interval",
            "tcp_keepalives_count")
linux_tcp = pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux TCP socket options")


def shown(store: TelemetryStore) -> dict[str, str]:
    """The server's settings for a session of the store's pool."""
    with store.engine.connect() as conn:
        return {name: conn.execute(text(f"SHOW {name}")).scalar_one() for name in SETTINGS}


def client_socket(store: TelemetryStore) -> dict[str, int]:
    """The TCP options of the client's end of a session of the store's pool."""
    with store.engine.connect() as conn:
        fd = conn.connection.driver_connection.fileno()
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:  # a duplicate of the descriptor
            tcp = socket.IPPROTO_TCP
            return {"keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    "idle": sock.getsockopt(tcp, socket.TCP_KEEPIDLE),
                    "interval": sock.getsockopt(tcp, socket.TCP_KEEPINTVL),
                    "count": sock.getsockopt(tcp, socket.TCP_KEEPCNT),
                    "user_timeout_ms": sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT)}


@contextmanager
def locked(url: str, table: str) -> Iterator[None]:
    """Another session holds ``table`` exclusively (no read, no write) until the block ends."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            try:
                yield
            finally:
                conn.rollback()
    finally:
        engine.dispose()


def bounded(call: Callable[[], Any], limit_s: float) -> tuple[BaseException | None, float]:
    """Run ``call`` in a thread; what it raised (None if nothing) and how long it took. Fails the test when it is
    still waiting after ``limit_s``."""
    out: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            out.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out.append(e)

    started = time.monotonic()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), f"still waiting after {limit_s:g}s"
    return out[0], time.monotonic() - started


def with_query(url: str, **params: str) -> str:
    return url + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())


# ------------------------------------------------------------------------------------ connection parameters


def test_urls_without_libpq_get_no_connection_parameters() -> None:
    assert connect_args("sqlite:///x.db") == {}
    assert connect_args("sqlite://") == {}
    assert connect_args("postgresql+pg8000://u@h/db") == {}


def test_psycopg_connections_are_bounded_and_kept_alive() -> None:
    keepalives = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                  "keepalives_count": 3}
    for url in ("postgresql+psycopg://u@h/db", "postgresql+psycopg2://u@h/db", "postgresql://u@h/db"):
        args = connect_args(url)
        assert keepalives.items() <= args.items(), url
        assert set(args) - set(keepalives) <= {"tcp_user_timeout"}, url  # nothing server-side: no options
    if database._libpq_version("psycopg") >= 120000:  # unacknowledged data gives up as keepalives do
        assert connect_args("postgresql+psycopg://u@h/db")["tcp_user_timeout"] == 25_000


def test_what_the_url_sets_is_neither_overridden_nor_repeated() -> None:
    url = with_query("postgresql+psycopg://u@h/db", connect_timeout="9", keepalives_idle="60",
                     tcp_user_timeout="0", options="-c search_path=x")
    args = connect_args(url)
    assert not {"connect_timeout", "keepalives_idle", "tcp_user_timeout", "options"} & set(args)
    assert args["keepalives"] == 1 and args["keepalives_interval"] == 5 and args["keepalives_count"] == 3
    off = connect_args("postgresql+psycopg2://u@h/db?keepalives=0")  # turned off: none of their settings either
    assert not {k for k in off if k.startswith("keepalives")}


# ------------------------------------------------------------------------------------ a real PostgreSQL


@pytest.mark.integration
@linux_tcp
def test_sessions_get_the_timeouts_and_keepalives(fresh_postgres: str) -> None:
    store = TelemetryStore(fresh_postgres)
    assert shown(store) == {"statement_timeout": "5min", "lock_timeout": "10s", "tcp_keepalives_idle": "10",
                            "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}
    assert client_socket(store) == {"keepalive": 1, "idle": 10, "interval": 5, "count": 3, "user_timeout_ms": 25_000}
    store.close()


@pytest.mark.integration
def test_a_write_blocked_by_a_lock_fails_as_an_outage_within_the_lock_timeout(fresh_postgres: str,
                                                                              monkeypatch: Any) -> None:
    monkeypatch.setattr(database, "PG_LOCK_TIMEOUT_S", 1, raising=False)
    store = TelemetryStore(fresh_postgres)
    with locked(fresh_postgres, "requests"):
        error, took = bounded(lambda: store.write(request(1)), 8)
    assert isinstance(error, OperationalError) and is_outage(error)
    assert "lock timeout" in str(error) and took < 4
    store.write(request(1))  # the pooled connection is fine once the lock is gone
    assert [r.id for r in store.requests()] == ["chatcmpl-1"]
    store.close()


@pytest.mark.integration
def test_a_statement_running_too_long_is_cancelled(fresh_postgres: str, monkeypatch: Any) -> None:
    monkeypatch.setattr(database, "PG_STATEMENT_TIMEOUT_S", 1, raising=False)
    store = TelemetryStore(fresh_postgres)

    def sleep() -> None:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(30)"))

    error, took = bounded(sleep, 8)
    assert isinstance(error, OperationalError) and is_outage(error)
    assert "statement timeout" in str(error) and took < 4
    store.close()


@pytest.mark.integration
def test_the_writer_spools_a_record_blocked_by_a_lock_and_replays_it_after(fresh_postgres: str, tmp_path: Path,
                                                                          monkeypatch: Any) -> None:
    monkeypatch.setattr(database, "PG_LOCK_TIMEOUT_S", 1, raising=False)
    store = TelemetryStore(fresh_postgres)
    writer = TelemetryWriter(store, spool_dir=tmp_path / "spool", replay_s=0.2, commit_timeout_s=60)
    try:
        with locked(fresh_postgres, "requests"):
            fut = writer.submit(request(1))
            fut.result(timeout=8)  # acknowledged from the spool, long before the writer's own watchdog
            assert writer.spooled == 1 and writer.timeouts == 0
        deadline = time.monotonic() + 10
        while writer.spool.pending():
            assert time.monotonic() < deadline, "spool not replayed"
            time.sleep(0.05)
        assert [r.id for r in store.requests()] == ["chatcmpl-1"]
    finally:
        writer.close()
        store.close()


@pytest.mark.integration
def test_a_key_check_blocked_by_a_lock_answers_503(fresh_postgres: str, monkeypatch: Any) -> None:
    monkeypatch.setattr(database, "PG_LOCK_TIMEOUT_S", 1, raising=False)
    store = TelemetryStore(fresh_postgres)
    gate = Gatekeeper(store, grace_s=30)
    with locked(fresh_postgres, "api_keys"):
        error, took = bounded(lambda: gate.authenticate("Bearer moai-sk-x"), 8)
    assert isinstance(error, Denied) and error.status == 503 and error.code == "database_unavailable"
    assert took < 4
    store.close()


@pytest.mark.integration
def test_a_migration_waits_for_another_replicas_migration_as_long_as_it_takes(fresh_postgres: str,
                                                                             monkeypatch: Any) -> None:
    monkeypatch.setattr(database, "PG_LOCK_TIMEOUT_S", 0.3, raising=False)
    monkeypatch.setattr(database, "PG_STATEMENT_TIMEOUT_S", 0.3, raising=False)
    other = create_engine(fresh_postgres)
    with other.connect() as replica:  # migrating: holds the migration lock for longer than either timeout
        replica.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
        opened: list[TelemetryStore] = []
        t = threading.Thread(target=lambda: opened.append(TelemetryStore(fresh_postgres)), daemon=True)
        started = time.monotonic()
        t.start()
        time.sleep(1.5)
        assert t.is_alive() and not opened  # still waiting for the lock, not failed
        replica.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_LOCK_KEY})
        replica.commit()
        t.join(10)
    other.dispose()
    assert opened and time.monotonic() - started >= 1.5
    assert shown(opened[0])["lock_timeout"] == "300ms"  # the pool's sessions keep their timeouts
    opened[0].close()


@pytest.mark.integration
def test_settings_the_server_refuses_leave_the_database_usable(fresh_postgres: str, monkeypatch: Any,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(database, "PG_LOCK_TIMEOUT_S", -1, raising=False)  # outside lock_timeout's range
    store = TelemetryStore(fresh_postgres)
    store.write(request(1))
    assert [r.id for r in store.requests()] == ["chatcmpl-1"]
    assert shown(store)["statement_timeout"] == "0"  # none of them set: one statement sets them all
    assert "session timeouts and keepalives not set" in caplog.text and "lock_timeout" in caplog.text
    store.close()


@pytest.mark.integration
@linux_tcp
def test_the_urls_the_databases_and_the_servers_own_settings_win(fresh_postgres: str) -> None:
    options = "-c statement_timeout=7s -c tcp_keepalives_idle=40"
    store = TelemetryStore(with_query(fresh_postgres, options=options, keepalives_idle="30"))
    assert shown(store) == {"statement_timeout": "7s", "tcp_keepalives_idle": "40",
                            "lock_timeout": "10s", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}
    assert client_socket(store)["idle"] == 30 and client_socket(store)["interval"] == 5
    store.close()
    store = TelemetryStore(with_query(fresh_postgres, options="-c statement_timeout=0 -c lock_timeout=0"))
    assert shown(store)["statement_timeout"] == "0" and shown(store)["lock_timeout"] == "0"  # turned off
    store.close()
    admin = create_engine(fresh_postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # as an administrator would: ALTER DATABASE / ALTER ROLE ... SET
        name = conn.execute(text("SELECT current_database()")).scalar_one()
        conn.execute(text(f"ALTER DATABASE {name} SET statement_timeout = '42s'"))
    admin.dispose()
    store = TelemetryStore(fresh_postgres)
    assert shown(store)["statement_timeout"] == "42s" and shown(store)["lock_timeout"] == "10s"
    store.close()
