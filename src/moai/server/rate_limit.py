"""Requests-per-minute limits shared by every replica: a sliding-window counter in the database.

Each key has one counter per UTC minute. The rate over the last 60 s is estimated as the current minute's
count plus the previous minute's, weighted by the share of it still inside the window (the sliding-window
counter of Cloudflare's and Redis-based limiters: two rows per key, no row per request). A request is
counted by an atomic upsert and withdrawn when it would break the limit, so replicas racing for the last
slot can only be stricter than the limit, never looser.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from moai.telemetry.store import RateWindow, TelemetryStore

WINDOW_S = 60
_T = RateWindow.__table__


def _count_one(conn: Connection, key_id: str, minute: int) -> int:
    """Add this request to the key's counter for `minute`; the new count."""
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as upsert
        else:
            from sqlalchemy.dialects.postgresql import insert as upsert
        stmt: Any = upsert(_T).values(key_id=key_id, minute=minute, count=1)
        stmt = stmt.on_conflict_do_update(index_elements=[_T.c.key_id, _T.c.minute],
                                          set_={"count": _T.c.count + 1}).returning(_T.c.count)
        return int(conn.execute(stmt).scalar_one())
    where = (_T.c.key_id == key_id) & (_T.c.minute == minute)
    if conn.execute(update(_T).where(where).values(count=_T.c.count + 1)).rowcount == 0:
        conn.execute(insert(_T).values(key_id=key_id, minute=minute, count=1))  # a racing insert fails loudly
    return int(conn.execute(select(_T.c.count).where(where)).scalar_one())


def retry_after(current: int, previous: int, rpm: int, elapsed: float) -> float:
    """Seconds until one more request fits, given the counts of this minute and the last one."""
    if current + 1 > rpm:  # this minute alone is full: wait for it to become the previous one and fade
        fade = WINDOW_S * (1 - (rpm - 1) / current) if current else 0.0
        return max(1.0, WINDOW_S - elapsed + max(0.0, fade))
    if previous == 0:
        return 1.0
    return max(1.0, WINDOW_S - elapsed - WINDOW_S * (rpm - current - 1) / previous)


def take(store: TelemetryStore, key_id: str, rpm: int, now: float | None = None) -> float | None:
    """Count one request of the key: None when it is within `rpm`, else the seconds to wait (not counted)."""
    now = time.time() if now is None else now
    minute, elapsed = int(now // WINDOW_S), now % WINDOW_S
    this = (_T.c.key_id == key_id) & (_T.c.minute == minute)
    with store.engine.begin() as conn:
        count = _count_one(conn, key_id, minute)
        previous = conn.execute(select(_T.c.count).where(
            (_T.c.key_id == key_id) & (_T.c.minute == minute - 1))).scalar() or 0
        if count + previous * (WINDOW_S - elapsed) / WINDOW_S <= rpm:
            if count == 1:  # first request of a minute: older counters are no longer read
                conn.execute(delete(_T).where((_T.c.key_id == key_id) & (_T.c.minute < minute - 1)))
            return None
        conn.execute(update(_T).where(this).values(count=_T.c.count - 1))
        return retry_after(count - 1, previous, rpm, elapsed)
