"""Opening the telemetry database: its URL (parsed, printed without secrets) and its connections' settings.

SQLite gets WAL and a busy timeout, and a file database is watched for being removed under it; PostgreSQL gets a
bounded connect, TCP keepalives and server-side timeouts, so that a database that hangs or vanishes is noticed
instead of holding threads for good. Kept apart from the records the store reads and writes.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

log = logging.getLogger("moai.telemetry")
# PostgreSQL: a new connection to a server that does not answer (hung, paused, packets dropped) fails after this
# many seconds instead of waiting for ever (libpq's connect_timeout; a URL that sets its own keeps it)
PG_CONNECT_TIMEOUT_S = 5
# A statement running or waiting this long is cancelled by the server (an OperationalError: the writer spools, key
# checks answer 503) instead of holding its thread and pooled connection for good. Generous, so that no normal work
# is cut: a report over millions of rows reads far faster; migrations run on a connection without it.
PG_STATEMENT_TIMEOUT_S = 300
# A wait for a lock gives up sooner: moai's own transactions hold theirs for milliseconds, so a longer wait means
# the holder is stuck (another session's lock, a replica's migration altering a table).
PG_LOCK_TIMEOUT_S = 10
# TCP keepalives on both ends: a peer that vanished without closing the connection (host down, NAT state dropped) is
# noticed after idle + interval * count seconds, not the system's two hours; the server then also releases the
# locks of a client that vanished. Data sent and never acknowledged gives up after as long (libpq tcp_user_timeout).
PG_KEEPALIVE_IDLE_S, PG_KEEPALIVE_INTERVAL_S, PG_KEEPALIVE_COUNT = 10, 5, 3


class DatabaseUnavailable(RuntimeError):
    """The telemetry database URL is malformed, names a missing driver, or cannot be opened; one line."""


# Query parameters whose value is a secret: libpq takes ``?password=`` and ``?sslpassword=`` as well as ``user:pw@``
# (passfile, sslkey and the like name files, and are kept: they say which file was used).
_SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:password|passwd|pwd|secret|token)[^=&#]*=)[^&#]*", re.IGNORECASE)
URL_EXAMPLE = "expected e.g. sqlite:///path/moai.db or postgresql+psycopg://..."


def safe_url(url: str) -> str:
    """The URL as it may be printed (errors, logs): any password replaced by ``***``, whether written as
    ``user:pw@`` or as a query parameter, since SQLAlchemy's own rendering hides only the first."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # unparseable (a bad port): mask what looks like a password
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return _SECRET_QUERY.sub(r"\1***", shown)


def parse_database_url(url: str) -> URL:
    """The parsed URL, or ``DatabaseUnavailable`` in one line: SQLAlchemy raises a bare ``ValueError`` for a port
    that is not a number (``host:abc``, ``host:``, an unclosed IPv6 bracket), which no command expects."""
    try:
        return make_url(url)
    except ArgumentError:
        raise DatabaseUnavailable(f"bad database URL {safe_url(url)!r} ({URL_EXAMPLE})") from None
    except ValueError:
        hint = "an IPv6 host goes in brackets, e.g. [::1]:5432; " if "[" in url else ""
        raise DatabaseUnavailable(f"bad database URL {safe_url(url)!r}: the port is empty or not a number "
                                  f"({hint}{URL_EXAMPLE})") from None


def driver_reason(e: BaseException) -> str:
    """Why the database failed, in one line: the driver's own first line, without SQLAlchemy's statement, bound
    parameters (row data) and link, so that logs stay one line per event and hold no recorded values."""
    cause = getattr(e, "orig", None) or e
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    return (lines[0] if lines else type(cause).__name__)[:300]


def default_database_url() -> str:
    if url := os.environ.get("MOAI_DATABASE_URL"):
        return url
    home = Path(os.environ.get("MOAI_HOME", Path.home() / ".cache" / "moai"))
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'moai.db'}"


def sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives the process being killed (kill -9); only an OS crash
        # could lose the last transactions. FULL would fsync every commit for that last case.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.close()


def _libpq_version(driver: str) -> int:
    """The version of the libpq a psycopg driver uses (e.g. 170002), 0 when it cannot be told."""
    try:
        if driver == "psycopg":
            from psycopg import pq

            return int(pq.version())
        import psycopg2.extensions

        return int(psycopg2.extensions.libpq_version())
    except (ImportError, AttributeError, OSError):
        return 0


def connect_args(url: str) -> dict[str, Any]:
    """libpq's connection parameters for a psycopg or psycopg2 URL: a bounded connect, TCP keepalives and a bound on
    unacknowledged data. SQLAlchemy lets these override the URL's query, so any parameter the URL names is left out:
    the URL's own value stands. The server-side timeouts are set per session instead (``_pg_session_settings``)."""
    parsed = make_url(url)
    driver = parsed.get_driver_name()
    if parsed.get_backend_name() != "postgresql" or driver not in ("psycopg", "psycopg2"):
        return {}
    args: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    if parsed.query.get("keepalives") not in ("0", ("0",)):  # a URL that turns them off means it
        args |= {"keepalives": 1, "keepalives_idle": PG_KEEPALIVE_IDLE_S,
                 "keepalives_interval": PG_KEEPALIVE_INTERVAL_S, "keepalives_count": PG_KEEPALIVE_COUNT}
    if _libpq_version(driver) >= 120000:  # an older libpq refuses to connect with a parameter it does not know
        args["tcp_user_timeout"] = 1000 * (PG_KEEPALIVE_IDLE_S + PG_KEEPALIVE_INTERVAL_S * PG_KEEPALIVE_COUNT)
    return {k: v for k, v in args.items() if k not in parsed.query}


def _pg_session_settings() -> dict[str, str]:
    """The server settings every pooled PostgreSQL session gets (read when the store opens its engine)."""
    return {"statement_timeout": f"{round(PG_STATEMENT_TIMEOUT_S * 1000)}ms",
            "lock_timeout": f"{round(PG_LOCK_TIMEOUT_S * 1000)}ms",
            "tcp_keepalives_idle": str(PG_KEEPALIVE_IDLE_S),
            "tcp_keepalives_interval": str(PG_KEEPALIVE_INTERVAL_S),
            "tcp_keepalives_count": str(PG_KEEPALIVE_COUNT)}


def pg_session_limits(engine: Engine) -> None:
    """Give each new PostgreSQL connection ``_pg_session_settings`` where nothing else set them.

    Set after connecting rather than through the ``options`` startup parameter: PgBouncer refuses a connection whose
    ``options`` set parameters it does not track (statement_timeout among them). Only a setting still at the
    server's built-in default is changed, so the server's configuration, ``ALTER ROLE/DATABASE ... SET`` and the
    URL's own ``options`` (``?options=-c statement_timeout=0``) all win; a URL's options that set other parameters
    leave these defaults in place. One round trip per new connection, none per checkout. A server that refuses them
    (a PostgreSQL look-alike without ``pg_settings``) is used without them, with a warning."""
    values = ", ".join(f"('{name}', '{value}')" for name, value in _pg_session_settings().items())
    sql = ("SELECT set_config(s.name, v.value, false) FROM pg_settings s "
           f"JOIN (VALUES {values}) AS v(name, value) ON v.name = s.name WHERE s.source = 'default'")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute(sql)
        except engine.dialect.loaded_dbapi.Error as e:
            dbapi_conn.rollback()
            log.warning("PostgreSQL session timeouts and keepalives not set: %s", driver_reason(e))
            return
        finally:
            cur.close()
        dbapi_conn.commit()  # a session-level setting made in a transaction that rolls back would be undone


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite file database (None for anything else)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:") or parsed.query.get("uri"):
        return None
    return Path(parsed.database).absolute()


class DatabaseFileGone(OperationalError):
    """The SQLite file was removed (or its folder): what is written through open connections would be lost."""

    def __init__(self, path: Path) -> None:
        super().__init__("check the database file", None, FileNotFoundError(f"database file {path} is gone"))
