"""Alembic migrations for the telemetry schema, run programmatically (no alembic.ini to ship).

Replicas started together on one fresh database all migrate it at once, so an upgrade runs as one transaction
that first takes a lock every other migrating process waits on: a transaction-scoped advisory lock on
PostgreSQL, the database's write lock (``BEGIN IMMEDIATE``) on SQLite. The process that waits finds the schema
already at head and does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).parent
# pg_advisory_xact_lock key shared by every moai process migrating a database (any fixed 64-bit value)
PG_LOCK_KEY = 0x6D6F61692D6D6967  # "moai-mig"
SQLITE_LOCK_WAIT_MS = 120_000  # how long a process waits for another one's migration on SQLite


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


@contextmanager
def locked_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock until it commits (or rolls back)."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            yield conn
        return
    # pysqlite runs DDL outside any transaction of its own, so two processes could both find no tables and
    # both create them: take SQLite's write lock explicitly and keep every statement inside that transaction.
    with engine.connect() as conn:
        dbapi = conn.connection.driver_connection
        old_level = dbapi.isolation_level
        old_wait = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
        conn.commit()
        dbapi.isolation_level = None  # no implicit BEGIN by the driver: the BEGIN below is the whole transaction
        try:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_LOCK_WAIT_MS}")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()  # the driver rolls back whatever SQLite still has open
                raise
            conn.commit()
        finally:
            dbapi.isolation_level = old_level
            conn.exec_driver_sql(f"PRAGMA busy_timeout={int(old_wait or 0)}")
            conn.commit()


def upgrade(engine: Engine, revision: str = "head") -> None:
    with locked_transaction(engine) as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
