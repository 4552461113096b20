"""Budgets under load: the worst-case cost of a key's running requests is held against its budget.

A budget compares what a key spent with its limit, but a request's cost is only known once it is recorded: twenty
requests admitted at once all saw the same spend, and together spent several times a budget meant for three. So
each admitted request of a budgeted key holds its plan's worst-case cost (every step runs, on the dearest model
it may fall back to, and writes ``max_tokens``: ``budget.worst_case_usd``) until it has been recorded with its real
cost, and the budget check counts spend plus holds.

Holds live in the telemetry database, one row per key and UTC minute of admission, added to by an atomic upsert,
so replicas admitting at once queue on that row and each sees the others' holds: N replicas together stay within
the budget. A hold whose request never ended (its process killed) no longer counts after ``HOLD_TTL_MIN``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from moai.server.rate_limit import Window
from moai.telemetry.records import SpendHold
from moai.telemetry.store import TelemetryStore

HOLD_TTL_MIN = 15  # minutes: longer than any request may run (a killed process's holds fade after this)
# dollars: below this, what is left of a row once its holds are all released is float noise (0.1 + 0.2 - 0.1 - 0.2
# is 5.6e-17, not 0); one token of a model priced $0.01 per million tokens is ten times this
RESIDUE_USD = 1e-9
_T = SpendHold.__table__


@dataclass(frozen=True)
class Hold:
    """What one request holds: released once it is recorded."""

    key_id: str
    minute: int
    usd: float
    # the key's RPM window with its request counted in it, in the hold's transaction (None: not counted with it):
    # what its answer's x-ratelimit-* headers tell, and where the count is taken back when the hold was given up on
    # (``Gatekeeper.ahold``)
    rpm: Window | None = field(default=None, compare=False)

    @property
    def rpm_minute(self) -> int | None:
        """The UTC minute its request was counted in (None: not counted with the hold)."""
        return self.rpm.counted_minute if self.rpm is not None else None


def _minute(now: float) -> int:
    return int(now // 60)


def add(conn: Connection, key_id: str, usd: float, now: float) -> Hold:
    """Add ``usd`` to the key's hold for this minute (inside the caller's transaction, which it orders: the upsert
    locks the row until commit)."""
    minute = _minute(now)
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as upsert
        else:
            from sqlalchemy.dialects.postgresql import insert as upsert
        stmt: Any = upsert(_T).values(key_id=key_id, minute=minute, usd=usd)
        conn.execute(stmt.on_conflict_do_update(index_elements=[_T.c.key_id, _T.c.minute],
                                                set_={"usd": _T.c.usd + usd}))
    else:
        where = (_T.c.key_id == key_id) & (_T.c.minute == minute)
        if conn.execute(update(_T).where(where).values(usd=_T.c.usd + usd)).rowcount == 0:
            conn.execute(insert(_T).values(key_id=key_id, minute=minute, usd=usd))
    conn.execute(delete(_T).where((_T.c.key_id == key_id) & (_T.c.minute <= minute - HOLD_TTL_MIN)))
    return Hold(key_id, minute, usd)


def held(conn: Connection, key_id: str, now: float) -> float:
    """The key's holds that still count."""
    return float(conn.scalar(select(func.coalesce(func.sum(_T.c.usd), 0.0))
                             .where(_T.c.key_id == key_id, _T.c.minute > _minute(now) - HOLD_TTL_MIN)) or 0.0)


def release(store: TelemetryStore, hold: Hold) -> None:
    """Give a hold back (its request is recorded: its real cost is in the key's spend now). What the subtraction
    leaves below ``RESIDUE_USD`` is float noise, set to 0: else the key would seem to have requests still running."""
    where = (_T.c.key_id == hold.key_id) & (_T.c.minute == hold.minute)
    left = _T.c.usd - hold.usd
    with store.engine.begin() as conn:
        conn.execute(update(_T).where(where).values(usd=case((left > RESIDUE_USD, left), else_=0.0)))
