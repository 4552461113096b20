"""Requests-per-minute limits shared by every replica: a sliding-window counter in the database.

Each key has one counter per UTC minute. The rate over the last 60 s is estimated as the current minute's
count plus the previous minute's, weighted by the share of it still inside the window (the sliding-window
counter of Cloudflare's and Redis-based limiters: two rows per key, no row per request). A request is
counted by an atomic upsert and withdrawn when it would break the limit, so replicas racing for the last
slot can only be stricter than the limit, never looser. A counted request refused later on is withdrawn too
(``withdraw``): a request refused with 429 does not use the limit up.

A key with a budget is counted with its request's budget hold, in the hold's transaction (``count_in``): its
admission only checks that the window has room (``check``, a ``pending`` window). So a request the hold refuses is
never counted, not even for the moment between its admission and its hold, when it would have refused a
concurrent request of the key early.

What the counters say is also told to the client, as OpenAI's ``x-ratelimit-*-requests`` headers (``Window``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from moai.telemetry.records import RateWindow
from moai.telemetry.store import TelemetryStore

WINDOW_S = 60
RATE_LIMIT_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
_T = RateWindow.__table__


def _count_one(conn: Connection, key_id: str, minute: int, n: int = 1) -> int:
    """Add this request (or ``n`` of them) to the key's counter for `minute`; the new count."""
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as upsert
        else:
            from sqlalchemy.dialects.postgresql import insert as upsert
        stmt: Any = upsert(_T).values(key_id=key_id, minute=minute, count=n)
        stmt = stmt.on_conflict_do_update(index_elements=[_T.c.key_id, _T.c.minute],
                                          set_={"count": _T.c.count + n}).returning(_T.c.count)
        return int(conn.execute(stmt).scalar_one())
    where = (_T.c.key_id == key_id) & (_T.c.minute == minute)
    if conn.execute(update(_T).where(where).values(count=_T.c.count + n)).rowcount == 0:
        conn.execute(insert(_T).values(key_id=key_id, minute=minute, count=n))  # a racing insert fails loudly
    return int(conn.execute(select(_T.c.count).where(where)).scalar_one())


def retry_after(current: int, previous: int, rpm: int, elapsed: float) -> float:
    """Seconds until one more request fits, given the counts of this minute and the last one."""
    if current + 1 > rpm:  # this minute alone is full: wait for it to become the previous one and fade
        fade = WINDOW_S * (1 - (rpm - 1) / current) if current else 0.0
        return max(1.0, WINDOW_S - elapsed + max(0.0, fade))
    if previous == 0:
        return 1.0
    return max(1.0, WINDOW_S - elapsed - WINDOW_S * (rpm - current - 1) / previous)


def remaining(current: int, previous: int, rpm: int, elapsed: float) -> int:
    """Requests that still fit now: the limit less the sliding estimate, rounded down, never negative."""
    return max(0, math.floor(rpm - current - previous * (WINDOW_S - elapsed) / WINDOW_S))


def full_reset(current: int, previous: int, elapsed: float) -> float:
    """Seconds until the window holds none of the key's requests (its whole limit is free again): this minute's
    count weighs on the estimate until the end of the next minute, the previous minute's until the end of this one."""
    if current:
        return 2 * WINDOW_S - elapsed
    return WINDOW_S - elapsed if previous else 0.0


def duration(seconds: float) -> str:
    """A duration as OpenAI's reset headers write it (Go's style): "20ms", "8.64s", "6m0s", "1h2m5s". Rounded up
    to the millisecond (float noise aside), so that a client waiting it out does not come back early."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".")
    return (f"{hours}h{minutes}m" if hours else f"{minutes}m" if minutes else "") + f"{secs}s"


@dataclass(frozen=True)
class Window:
    """A key's RPM window after a request, as OpenAI's ``x-ratelimit-*-requests`` headers tell it.

    ``reset_s``: for a counted request, the seconds until the window is empty again (``full_reset``); for a
    refused one (``retry_after`` set: it was not counted), the seconds until one more request fits, as Retry-After
    says."""

    limit: int
    remaining: int
    reset_s: float
    retry_after: float | None = None
    # the UTC minute a counted request was counted in: where ``withdraw`` takes it back (the clock may have moved on)
    counted_minute: int | None = field(default=None, compare=False)
    # checked, not counted yet: counted with its budget hold (``count_in``, whose window is the one told then), or
    # when refused before it (``count_admitted``). What it tells is the window as the check read it, plus this
    # request: concurrent requests of the key counted meanwhile are not in it.
    pending: bool = field(default=False, compare=False)

    def headers(self) -> dict[str, str]:
        return dict(zip(RATE_LIMIT_HEADERS, (str(self.limit), str(self.remaining), duration(self.reset_s)),
                        strict=True))


def _previous(conn: Connection, key_id: str, minute: int) -> int:
    return conn.execute(select(_T.c.count).where((_T.c.key_id == key_id) & (_T.c.minute == minute - 1))).scalar() or 0


def tally(store: TelemetryStore, key_id: str, rpm: int, now: float | None = None) -> Window:
    """Count one request of the key when it is within `rpm` (else not, and ``retry_after`` is set), and tell the
    window after it."""
    now = time.time() if now is None else now
    with store.engine.begin() as conn:
        return count_in(conn, key_id, rpm, now)


def _fits(count: int, previous: int, rpm: int, elapsed: float) -> bool:
    return count + previous * (WINDOW_S - elapsed) / WINDOW_S <= rpm


def count_in(conn: Connection, key_id: str, rpm: int, now: float) -> Window:
    """``tally`` inside the caller's transaction (a budget hold's: both are kept or rolled back together)."""
    minute, elapsed = int(now // WINDOW_S), now % WINDOW_S
    this = (_T.c.key_id == key_id) & (_T.c.minute == minute)
    count = _count_one(conn, key_id, minute)
    previous = _previous(conn, key_id, minute)
    if _fits(count, previous, rpm, elapsed):
        if count == 1:  # first request of a minute: older counters are no longer read
            conn.execute(delete(_T).where((_T.c.key_id == key_id) & (_T.c.minute < minute - 1)))
        return Window(rpm, remaining(count, previous, rpm, elapsed), full_reset(count, previous, elapsed),
                      counted_minute=minute)
    conn.execute(update(_T).where(this).values(count=_T.c.count - 1))
    wait = retry_after(count - 1, previous, rpm, elapsed)
    return Window(rpm, 0, wait, retry_after=wait)


def check(store: TelemetryStore, key_id: str, rpm: int, now: float | None = None) -> Window:
    """Whether one more request of the key fits now, nothing counted: a ``pending`` window (the counts read now
    plus this request: requests of the key checked at the same moment each see the same, and the count that
    follows, ``count_in``, tells the window as it really is then), or a refusal (``retry_after`` set). Requests
    racing for the last slot, on one replica or several, may all pass here: ``count_in`` refuses the ones too
    many."""
    now = time.time() if now is None else now
    minute, elapsed = int(now // WINDOW_S), now % WINDOW_S
    current, previous = _counts(store, key_id, minute)
    if _fits(current + 1, previous, rpm, elapsed):
        return Window(rpm, remaining(current + 1, previous, rpm, elapsed), full_reset(current + 1, previous, elapsed),
                      pending=True)
    wait = retry_after(current, previous, rpm, elapsed)
    return Window(rpm, 0, wait, retry_after=wait)


def count_admitted(store: TelemetryStore, key_id: str, now: float | None = None, n: int = 1) -> int:
    """Count a request (or ``n``) whose count was pending and that was refused before its budget hold (a bad
    request): it was admitted, and uses the limit up like any other; whether it still fits does not matter now.
    The minute."""
    now = time.time() if now is None else now
    minute = int(now // WINDOW_S)
    with store.engine.begin() as conn:
        _count_one(conn, key_id, minute, n)
    return minute


def _counts(store: TelemetryStore, key_id: str, minute: int) -> tuple[int, int]:
    """The key's counts of ``minute`` and of the one before."""
    with store.engine.connect() as conn:
        counts = dict(conn.execute(select(_T.c.minute, _T.c.count).where(
            (_T.c.key_id == key_id) & _T.c.minute.in_((minute - 1, minute)))).all())
    return counts.get(minute, 0), counts.get(minute - 1, 0)


def take(store: TelemetryStore, key_id: str, rpm: int, now: float | None = None) -> float | None:
    """Count one request of the key: None when it is within `rpm`, else the seconds to wait (not counted)."""
    return tally(store, key_id, rpm, now).retry_after


def withdraw(store: TelemetryStore, key_id: str, counted: Window, now: float | None = None) -> Window:
    """Take back a request ``tally`` counted, which was then refused (a 429 must not use the limit up), and tell
    the window after it. Nothing to take back when it was not counted, or its minute's counter is gone."""
    if counted.counted_minute is not None:
        uncount(store, key_id, counted.counted_minute)
    return peek(store, key_id, counted.limit, now)


def uncount(store: TelemetryStore, key_id: str, minute: int) -> None:
    """Take one request back from the key's counter of ``minute`` (nothing when the counter is gone)."""
    where = (_T.c.key_id == key_id) & (_T.c.minute == minute) & (_T.c.count > 0)
    with store.engine.begin() as conn:
        conn.execute(update(_T).where(where).values(count=_T.c.count - 1))


def peek(store: TelemetryStore, key_id: str, rpm: int, now: float | None = None) -> Window:
    """The key's window now, nothing counted (for a request refused before its turn was counted)."""
    now = time.time() if now is None else now
    minute, elapsed = int(now // WINDOW_S), now % WINDOW_S
    current, previous = _counts(store, key_id, minute)
    return Window(rpm, remaining(current, previous, rpm, elapsed), full_reset(current, previous, elapsed))
