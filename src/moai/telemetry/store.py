"""Telemetry records in a real database: one row per request, one per model call, one per feedback.

SQLite (WAL) by default; any SQLAlchemy URL (PostgreSQL) via ``MOAI_DATABASE_URL``. The schema is owned
by Alembic migrations (``telemetry/migrations``), applied on start-up, so upgrades never need a manual step.
A record counts as acknowledged once committed; a killed process loses nothing acknowledged.
The tables are in ``telemetry.records``; opening the database (URLs, connection settings) in ``telemetry.database``.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, create_engine, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.pool import NullPool

from moai.telemetry.database import (
    URL_EXAMPLE,
    DatabaseFileGone,
    DatabaseUnavailable,
    connect_args,
    default_database_url,
    driver_reason,
    parse_database_url,
    pg_session_limits,
    safe_url,
    sqlite_file,
    sqlite_pragmas,
)
from moai.telemetry.records import Base, CallRecord, FeedbackRecord, RequestRecord, Setting
from moai.telemetry.session_digest import SESSION_SECRET, SESSION_SECRET_ENV, legacy_session_digest, session_digest

FEEDBACK_MIN, FEEDBACK_MAX = -1.0, 10.0  # the widest accepted scales: -1..1 thumbs and 0-10 ratings


@dataclass(frozen=True)
class Rating:
    """A stored rating: the row, whether it replaced the request's earlier one, and what answered the request."""

    feedback: FeedbackRecord
    replaced: bool
    model: str | None
    decision: dict[str, Any] | None
    api_key: str | None = None  # the id of the key that made the request


class UnknownRequest(LookupError):
    """Feedback for a request id that was never recorded."""


# Databases whose INSERT can update the row already there (``write_replayed``), and how many ids one IN list holds
# (well below SQLite's and PostgreSQL's limits on bound parameters per statement)
_UPSERT: dict[str, Callable[[Any], Any]] = {"sqlite": sqlite_insert, "postgresql": pg_insert}
_IN_CHUNK = 500


def as_row(model: type[Base], obj: Any) -> dict[str, Any]:
    """An ORM object's column values for a Core INSERT, with the columns' Python defaults applied."""
    row: dict[str, Any] = {}
    for col in model.__table__.columns:
        if col.primary_key and col.autoincrement is True:
            continue
        value = getattr(obj, col.key)
        if value is None and col.default is not None:
            arg = col.default.arg
            value = arg(None) if callable(arg) else arg
        row[col.key] = value
    return row


def row_of(model: type[Base], values: Mapping[str, Any]) -> dict[str, Any]:
    """``as_row`` for plain values (a spooled line): defaults applied alike, an ISO string made a datetime where the
    column holds one; a name that is no column raises TypeError, as the model's constructor would."""
    columns = model.__table__.columns
    unknown = [k for k in values if k not in columns]
    if unknown:
        raise TypeError(f"{model.__name__} has no column {unknown[0]!r}")
    row: dict[str, Any] = {}
    for col in columns:
        if col.primary_key and col.autoincrement is True:
            continue
        value = values.get(col.key)
        if value is None and col.default is not None:
            arg = col.default.arg
            value = arg(None) if callable(arg) else arg
        elif isinstance(value, str) and isinstance(col.type, DateTime):
            value = datetime.fromisoformat(value)
        row[col.key] = value
    return row


@dataclass
class SpooledRequest:
    """A request as the spool keeps it: plain column values, so that a replay writes them with bulk statements
    without building ORM objects first (which cost more than the writing itself)."""

    request: dict[str, Any]
    calls: list[dict[str, Any]] | None = None  # None: the calls stored for the request stay
    feedback: list[dict[str, Any]] | None = None  # None or empty: the feedback stored for the request stays

    @property
    def id(self) -> str:
        return str(self.request["id"])

    @classmethod
    def of(cls, rec: RequestRecord) -> SpooledRequest:
        """A record's values; a collection it never held is left as None, as a merge would leave it alone."""
        loaded = rec.__dict__
        return cls(as_row(RequestRecord, rec),
                   [as_row(CallRecord, c) for c in rec.calls] if "calls" in loaded else None,
                   [as_row(FeedbackRecord, f) for f in rec.feedback] if "feedback" in loaded else None)

    def record(self) -> RequestRecord:
        """The ORM record (for a merge)."""
        rec = RequestRecord(**self.request)
        if self.calls is not None:
            rec.calls = [CallRecord(**{k: v for k, v in c.items() if k != "request_id"}) for c in self.calls]
        if self.feedback:
            rec.feedback = [FeedbackRecord(**{k: v for k, v in f.items() if k != "request_id"})
                            for f in self.feedback]
        return rec


def _replace_rows(conn: Connection, model: type[Base], rows: Mapping[str, list[dict[str, Any]] | None]) -> None:
    """The rows of ``model`` of each request in ``rows`` replaced by the given ones (as a merge replaces a
    collection): one DELETE per ``_IN_CHUNK`` requests, one INSERT."""
    table = model.__table__
    ids = list(rows)
    for s in range(0, len(ids), _IN_CHUNK):
        conn.execute(delete(table).where(table.c.request_id.in_(ids[s : s + _IN_CHUNK])))
    new = [row | {"request_id": rid} for rid, some in rows.items() for row in some or ()]
    if new:
        conn.execute(insert(table), new)


def check_score(score: float) -> None:
    """ValueError for a feedback score off every accepted scale (it would skew the model's feedback mean for good)."""
    if not (math.isfinite(score) and FEEDBACK_MIN <= score <= FEEDBACK_MAX):
        raise ValueError(f"feedback score {score:g} is outside {FEEDBACK_MIN:g}..{FEEDBACK_MAX:g} "
                         "(-1..1 thumbs, 0..1, or a 0-10 rating)")


def _stored_secret(engine: Engine) -> str:
    """The shared session secret in the settings table. The migration that made the table wrote it; a database
    without the row (it was deleted) gets one here, race-safe: replicas adding it at once all keep the first."""
    row = select(Setting.value).where(Setting.name == SESSION_SECRET)
    with engine.connect() as conn:
        found = conn.scalar(row)
    if found:
        return found
    values = {"name": SESSION_SECRET, "value": secrets.token_hex(32)}
    with engine.begin() as conn:
        upsert = _UPSERT.get(conn.dialect.name)
        if upsert is not None:
            conn.execute(upsert(Setting.__table__).values(**values).on_conflict_do_nothing())
        else:
            try:
                with conn.begin_nested():
                    conn.execute(insert(Setting.__table__).values(**values))
            except IntegrityError:
                pass  # another replica's came first
        return str(conn.scalar(row))


class TelemetryStore:
    """Writes and reads records; safe to share across threads (one engine, short sessions)."""

    def __init__(self, url: str | None = None, migrate: bool = True) -> None:
        self.url = url or default_database_url()
        parsed = parse_database_url(self.url)
        try:
            self.engine = create_engine(self.url, future=True, pool_pre_ping=True, connect_args=connect_args(self.url))
        except NoSuchModuleError:
            raise DatabaseUnavailable(f"cannot use database URL {safe_url(self.url)!r}: unknown database kind "
                                      f"{parsed.drivername!r}") from None
        except ArgumentError:
            raise DatabaseUnavailable(f"bad database URL {safe_url(self.url)!r} ({URL_EXAMPLE})") from None
        except ValueError as e:  # a query option the dialect cannot convert (sqlite's ?timeout=abc)
            raise DatabaseUnavailable(f"bad database URL {safe_url(self.url)!r}: {driver_reason(e)}") from None
        except (SQLAlchemyError, ImportError) as e:  # unknown dialect, or its driver is not installed
            raise DatabaseUnavailable(f"cannot use database URL {safe_url(self.url)!r}: {driver_reason(e)}") from None
        if self.engine.dialect.name == "sqlite":
            sqlite_pragmas(self.engine)
        elif self.engine.dialect.name == "postgresql":
            pg_session_limits(self.engine)
        self._file = sqlite_file(self.url)
        self._file_id: tuple[int, int] | None = None
        self._session_secret: bytes | None = None
        self._secret_lock = threading.Lock()
        self._secret_source: str | None = None
        if migrate:
            self.migrate()
            self.session_secret()  # read now, so that recording a request never waits for the database
        if self._file is not None and self._file.exists():
            st = self._file.stat()
            self._file_id = (st.st_dev, st.st_ino)

    def session_secret(self) -> bytes:
        """The key of session digests: ``MOAI_SESSION_SECRET`` when set, else the one stored in the database,
        which every replica sharing it reads (so sticky sessions hold across replicas and restarts). Read once;
        where from is told (``session_secret_source``): a change of secret unpins every conversation, and only one
        kept outside the database protects the digests of a leaked dump."""
        if self._session_secret is None:
            with self._secret_lock:
                if self._session_secret is None:
                    env = os.environ.get(SESSION_SECRET_ENV)
                    value = env if env else _stored_secret(self.engine)
                    self._session_secret = value.encode("utf-8", "surrogatepass")
                    self._secret_source = (f"{SESSION_SECRET_ENV} (kept outside the database)" if env else
                                           f"the secret in the database's settings table (set {SESSION_SECRET_ENV} "
                                           "to keep it outside)")
        return self._session_secret

    @property
    def session_secret_source(self) -> str | None:
        """Where the key of session digests came from, as the server logs it at start (None: not read yet)."""
        return self._secret_source

    def session_digest(self, session: str | None) -> str | None:
        """What this database keeps of a conversation's name (``session_digest`` under this store's secret)."""
        return session_digest(session, self.session_secret()) if session else None

    def check_file(self) -> None:
        """For a SQLite file database, raise ``DatabaseFileGone`` (an outage) when the file is no longer there:
        pooled connections would go on writing into the deleted file, and everything written would be lost. One
        stat. A different file in its place (restored, recreated) is used from now on: the pool is reopened."""
        if self._file is None:
            return
        try:
            st = os.stat(self._file)
        except OSError:
            raise DatabaseFileGone(self._file) from None
        file_id = (st.st_dev, st.st_ino)
        if file_id != self._file_id:
            if self._file_id is not None:
                self.engine.dispose()
            self._file_id = file_id

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (creates it from empty)."""
        from moai.telemetry.migrations import upgrade

        # On PostgreSQL a connection of its own, without the session timeouts: a migration may rewrite a big table,
        # or wait for another replica's migration to finish (the migration lock), for as long as that takes.
        engine = self.engine
        try:
            if engine.dialect.name == "postgresql":
                engine = create_engine(self.url, poolclass=NullPool, connect_args=connect_args(self.url))
            upgrade(engine)
        except (SQLAlchemyError, OSError) as e:  # refused, unreachable, bad credentials, unwritable file
            self.engine.dispose()
            raise DatabaseUnavailable(f"cannot open database {safe_url(self.url)!r}: {driver_reason(e)}") from None
        finally:
            if engine is not self.engine:
                engine.dispose()

    def write(self, request: RequestRecord) -> None:
        self.write_many([request])

    def write_many(self, records: list[Any]) -> None:
        """One transaction for a batch (the background writer's group commit).

        New requests with their calls go in as two bulk INSERTs (a quarter of the ORM's CPU per record);
        anything else — a request re-recorded with its final status (a timeout after a cancellation),
        feedback attached — is merged through the ORM.
        """
        self.check_file()
        bulk = all(isinstance(r, RequestRecord) and not r.feedback for r in records)
        if bulk:
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(RequestRecord.__table__), [as_row(RequestRecord, r) for r in records])
                    calls = [as_row(CallRecord, c) | {"request_id": r.id} for r in records for c in r.calls]
                    if calls:
                        conn.execute(insert(CallRecord.__table__), calls)
                return
            except IntegrityError:
                pass  # an id already there: merge one by one below
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            for rec in records:
                s.merge(rec)

    def write_replayed(self, records: Sequence[RequestRecord | SpooledRequest]) -> int:
        """Store spooled requests as the writer would have: by id, the last write of a request winning (a request
        re-recorded with its final status), its calls replacing any stored ones, feedback kept (replaced only by
        a record that carries its own). Replaying the same records twice (a replay cut short after its commit)
        leaves the same rows. Returns how many requests.

        One transaction of a few bulk statements (an upsert of the requests, their calls deleted and inserted
        again): a spool written during a long outage must drain faster than new traffic arrives, which merging
        record by record through the ORM did not. Databases without an upsert are merged through the ORM."""
        self.check_file()
        latest = {r.id: r if isinstance(r, SpooledRequest) else SpooledRequest.of(r) for r in records}
        if not latest:
            return 0
        if self.engine.dialect.name not in _UPSERT:
            with Session(self.engine, expire_on_commit=False) as s, s.begin():
                for rec in latest.values():
                    s.merge(rec.record())
            return len(latest)
        table = RequestRecord.__table__
        upsert = _UPSERT[self.engine.dialect.name](table)
        upsert = upsert.on_conflict_do_update(index_elements=[table.c.id], set_={
            c.name: upsert.excluded[c.name] for c in table.columns if not c.primary_key})
        with self.engine.begin() as conn:
            conn.execute(upsert, [r.request for r in latest.values()])
            _replace_rows(conn, CallRecord, {r.id: r.calls for r in latest.values() if r.calls is not None})
            _replace_rows(conn, FeedbackRecord, {r.id: r.feedback for r in latest.values() if r.feedback})
        return len(latest)

    def add_feedback(self, request_id: str, score: float, comment: str | None = None) -> FeedbackRecord:
        """Store a request's rating, replacing any earlier one (see ``rate``)."""
        return self.rate(request_id, score, comment).feedback

    def rate(self, request_id: str, score: float, comment: str | None = None) -> Rating:
        """Store a request's rating, replacing any earlier one: a request has one rating, its latest. (Over HTTP,
        once keys exist, only the key that made a request may rate it, so a repeat is that caller changing its
        mind, not another vote.) Says whether it replaced one, and which model answered, in the same transaction:
        of two first ratings sent at once, exactly one is new.

        A score off every accepted scale would skew the model's feedback mean for good; text with a NUL character
        cannot be stored (PostgreSQL refuses it): both are a ValueError."""
        check_score(score)
        for name, value in (("id", request_id), ("comment", comment)):
            if value is not None and "\x00" in value:
                raise ValueError(f"feedback {name} contains a NUL character (\\u0000), which cannot be stored")
        self.check_file()
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            # two ratings of one request at once leave one: the request's row is locked (PostgreSQL), and the
            # DELETE takes SQLite's write lock before anything is read inside the transaction
            req = s.get(RequestRecord, request_id, with_for_update=True)
            if req is None:
                raise UnknownRequest(request_id)
            gone = s.execute(delete(FeedbackRecord).where(FeedbackRecord.request_id == request_id))
            fb = FeedbackRecord(request_id=request_id, score=score, comment=comment)
            s.add(fb)
            return Rating(fb, bool(gone.rowcount), req.model, req.decision, req.api_key)

    def session_model(self, session: str, mix: str, api_key: str | None = None) -> str | None:
        """The model that answered this session's latest successful request in this mix (any replica), among
        the requests of this API key (id); ``None``: among the keyless ones. One tenant's session name is no
        handle on another's conversation."""
        owner = RequestRecord.api_key.is_(None) if api_key is None else RequestRecord.api_key == api_key
        # rows older versions wrote keep their unkeyed digest: found too, so an upgrade leaves sessions sticky
        digests = (self.session_digest(session), legacy_session_digest(session))
        with Session(self.engine) as s:
            return s.scalar(select(RequestRecord.model)
                            .where(RequestRecord.session.in_(digests), RequestRecord.mix == mix, owner,
                                   RequestRecord.status == "ok")
                            .order_by(RequestRecord.created_at.desc()).limit(1))

    def feedback_for(self, request_id: str) -> list[FeedbackRecord]:
        with Session(self.engine) as s:
            return list(s.scalars(select(FeedbackRecord).where(FeedbackRecord.request_id == request_id)))

    def requests(self, since: datetime | None = None, limit: int | None = None) -> list[RequestRecord]:
        """Requests (oldest first) with their calls and feedback, loaded in bulk: a few queries in all, not two
        per request. (``moai report`` reads plain rows instead: ``telemetry.report.load_rows``.)"""
        with Session(self.engine) as s:
            q = (select(RequestRecord).order_by(RequestRecord.created_at)
                 .options(selectinload(RequestRecord.calls), selectinload(RequestRecord.feedback)))
            if since is not None:
                q = q.where(RequestRecord.created_at >= since)
            if limit is not None:
                q = q.limit(limit)
            return list(s.scalars(q))

    def get(self, request_id: str) -> RequestRecord | None:
        with Session(self.engine) as s:
            row = s.get(RequestRecord, request_id)
            if row is not None:
                _ = row.calls, row.feedback
            return row

    def close(self) -> None:
        self.engine.dispose()


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
