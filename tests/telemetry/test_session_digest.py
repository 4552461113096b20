"""Session names (often the OpenAI ``user`` field: an email) are stored as HMAC-SHA256 digests under a secret that
every replica sharing the database shares: a list of candidate names cannot be tested against the stored digests,
and sticky sessions hold across replicas and restarts. Rows written with the older unkeyed digest are still found."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from starlette.testclient import TestClient
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.server.app import create_app
from moai.telemetry import store as store_module
from moai.telemetry.records import RequestRecord, Setting
from moai.telemetry.session_digest import SESSION_SECRET_ENV, legacy_session_digest
from moai.telemetry.store import TelemetryStore

EMAIL = "alice@example.com"


def record(store: TelemetryStore, rid: str, session: str | None, model: str = "m") -> None:
    store.write(RequestRecord(id=rid, mix="default", strategy="route", model=model, status="ok", session=session))


def stored_sessions(store: TelemetryStore) -> list[str | None]:
    with store.engine.connect() as conn:
        return list(conn.scalars(select(RequestRecord.session)))


@pytest.mark.integration
def test_the_user_field_is_stored_keyed_and_stays_sticky_on_another_replica(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SESSION_SECRET_ENV, raising=False)
    url = f"sqlite:///{tmp_path / 'moai.db'}"
    with StubServer(Script()) as stub:
        config = parse_config(f"""
models:
  m: {{provider: openai_compat, endpoint: "{stub.url}", privacy: private, max_retries: 0}}
mixes:
  default: {{strategy: route, models: [m]}}
""")
        store = TelemetryStore(url)
        mixture = Mixture(config, store=store, chooser=RuleChooser())
        with TestClient(create_app(config, store, mixture=mixture)) as client:
            body = {"model": "moai/default", "messages": [{"role": "user", "content": "hi"}], "user": EMAIL}
            assert client.post("/v1/chat/completions", json=body).status_code == 200
        store.close()
    replica = TelemetryStore(url)  # another replica, or this one restarted: the same secret, from the database
    [stored] = stored_sessions(replica)
    secret = replica.session_secret()
    assert stored == "hmac-sha256:" + hmac.new(secret, EMAIL.encode(), hashlib.sha256).hexdigest()
    # the candidate list test: an unkeyed digest of the email matches nothing stored
    assert hashlib.sha256(EMAIL.encode()).hexdigest() not in stored and legacy_session_digest(EMAIL) != stored
    assert replica.session_model(EMAIL, "default") == "m"
    replica.close()


def test_replicas_share_one_secret_and_restarts_keep_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SESSION_SECRET_ENV, raising=False)
    url = f"sqlite:///{tmp_path / 'moai.db'}"
    with sqlite3.connect(tmp_path / "moai.db") as conn:  # an empty file already in WAL mode: the replicas race to
        conn.execute("PRAGMA journal_mode=WAL")  # migrate it, not to switch its journal (which SQLite refuses)
    stores: list[TelemetryStore] = []
    start = threading.Barrier(4)

    def open_store() -> None:
        start.wait()
        stores.append(TelemetryStore(url))  # replicas migrating a fresh database at once

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stores) == 4
    secrets = {s.session_secret() for s in stores}
    assert len(secrets) == 1 and len(next(iter(secrets))) == 64
    record(stores[0], "r1", stores[0].session_digest("conv-1"), model="big")
    assert [s.session_model("conv-1", "default") for s in stores] == ["big"] * 4
    for s in stores:
        s.close()
    assert TelemetryStore(url).session_secret() in secrets  # a restart


def test_a_missing_secret_row_is_made_once_by_replicas_racing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SESSION_SECRET_ENV, raising=False)
    url = f"sqlite:///{tmp_path / 'moai.db'}"
    first = TelemetryStore(url)
    with first.engine.begin() as conn:  # an operator deleted it
        conn.execute(delete(Setting))
    engines = [TelemetryStore(url, migrate=False).engine for _ in range(4)]
    found: list[str] = []
    start = threading.Barrier(len(engines))

    def read(engine: object) -> None:
        start.wait()
        found.append(store_module._stored_secret(engine))  # type: ignore[arg-type]

    threads = [threading.Thread(target=read, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 4 and len(set(found)) == 1
    with first.engine.connect() as conn:
        assert conn.scalars(select(Setting.value)).all() == found[:1]


def test_the_secret_may_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SESSION_SECRET_ENV, "shared by every replica")
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    assert store.session_secret() == b"shared by every replica"
    assert store.session_digest(EMAIL) == "hmac-sha256:" + hmac.new(
        b"shared by every replica", EMAIL.encode(), hashlib.sha256).hexdigest()


def test_rows_of_older_versions_keep_their_digest_and_stay_sticky(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SESSION_SECRET_ENV, raising=False)
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    old = "sha256:" + hashlib.sha256(b"conv-old").hexdigest()  # what an older version stored
    record(store, "r-old", old, model="small")
    assert store.session_model("conv-old", "default") == "small"
    record(store, "r-new", store.session_digest("conv-old"), model="big")  # written after the upgrade
    assert sorted(s for s in stored_sessions(store) if s) == sorted([old, store.session_digest("conv-old")])


def test_replicas_on_postgres_share_one_secret(fresh_postgres: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SESSION_SECRET_ENV, raising=False)
    stores: list[TelemetryStore] = []
    start = threading.Barrier(3)

    def open_store() -> None:
        start.wait()
        stores.append(TelemetryStore(fresh_postgres))

    threads = [threading.Thread(target=open_store) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stores) == 3 and len({s.session_secret() for s in stores}) == 1
    record(stores[0], "r1", stores[0].session_digest(EMAIL), model="big")
    assert [s.session_model(EMAIL, "default") for s in stores] == ["big"] * 3
    with stores[1].engine.begin() as conn:  # the row gone: replicas racing to make it again keep one
        conn.execute(delete(Setting))
    found: list[str] = []
    again = threading.Barrier(3)

    def read(s: TelemetryStore) -> None:
        again.wait()
        found.append(store_module._stored_secret(s.engine))

    threads = [threading.Thread(target=read, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 3 and len(set(found)) == 1
    for s in stores:
        s.close()
