"""Retention: the telemetry database keeps months of traffic, not all of it for ever.

Requests older than a cut-off are deleted with their calls and feedback, a batch per transaction, so a large
deletion never holds SQLite's write lock (or PostgreSQL row locks) for long: the background writer keeps
committing between batches. A cut-off that would delete what a key budget still sums (this UTC day or month) is
refused: the budget would silently reset.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, or_, select

from moai.server.auth import period_starts
from moai.telemetry.records import ApiKey, CallRecord, FeedbackRecord, RequestRecord
from moai.telemetry.store import TelemetryStore

BATCH = 1_000  # requests per transaction: each holds the write lock for milliseconds, not seconds
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"h": 3600, "d": 86400, "w": 7 * 86400}


class RetentionRefused(ValueError):
    """The cut-off would delete requests that a budget of an active key still counts."""


@dataclass
class Pruned:
    requests: int = 0
    calls: int = 0
    feedback: int = 0


def parse_age(text: str) -> timedelta:
    """'90d', '12h', '2w' -> a timedelta (ValueError otherwise, an age past what a timedelta holds included)."""
    m = _AGE.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"bad age {text!r}: expected a positive number of hours, days or weeks, e.g. 90d, 12h, 2w")
    try:
        return timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2).lower()])
    except OverflowError:
        raise _too_far_back(text) from None


def cutoff(text: str, now: datetime | None = None) -> datetime:
    """The moment an age ('90d') reaches back to from ``now``; ValueError for a bad age or one before year 1,
    which no request can be older than."""
    age = parse_age(text)
    try:
        return (now or datetime.now(UTC)) - age
    except OverflowError:
        raise _too_far_back(text) from None


def _too_far_back(text: str) -> ValueError:
    return ValueError(f"{text.strip()!r} is too far back (before year 1): no request is that old; use a shorter age")


def budget_floor(store: TelemetryStore, now: datetime | None = None) -> tuple[datetime, str] | None:
    """The earliest moment an unrevoked key's budget still sums (the start of this UTC month for a monthly budget,
    of this UTC day for a daily one), with a line saying whose; None when no key has a budget."""
    day, month = period_starts(now or datetime.now(UTC))
    with store.engine.connect() as conn:
        keys = conn.execute(select(ApiKey.id, ApiKey.budget_month_usd)
                            .where(ApiKey.revoked_at.is_(None),
                                   or_(ApiKey.budget_day_usd.is_not(None), ApiKey.budget_month_usd.is_not(None)))
                            .order_by(ApiKey.budget_month_usd.is_(None), ApiKey.id)).first()
    if keys is None:
        return None
    key_id, per_month = keys
    start, period, keep = (month, "monthly", "32d") if per_month is not None else (day, "daily", "1d")
    return start, (f"key {key_id}'s {period} budget sums the requests since {start:%Y-%m-%d %H:%M} UTC: deleting "
                   f"those would reset it; keep at least {keep}")


def check_budgets(store: TelemetryStore, before: datetime, now: datetime | None = None) -> None:
    """Raise RetentionRefused when ``before`` reaches into a period an unrevoked key's budget still sums."""
    floor = budget_floor(store, now)
    if floor is not None and before > floor[0]:
        raise RetentionRefused(floor[1])


def retain(store: TelemetryStore, days: float, now: datetime | None = None) -> tuple[Pruned, datetime]:
    """``settings.retention_days``: delete what is older than ``days``, but never what a budget still sums (the
    cut-off moves back to the start of that period instead). Returns what went and the cut-off used."""
    now = now or datetime.now(UTC)
    if math.isnan(days) or days <= 0:
        raise ValueError(f"retention_days must be a positive number of days, not {days!r}")
    try:
        before = now - timedelta(days=days)
    except OverflowError:  # further back than any date: nothing is that old
        return Pruned(), datetime.min.replace(tzinfo=UTC)
    floor = budget_floor(store, now)
    if floor is not None and before > floor[0]:
        before = floor[0]
    return prune(store, before), before


def count_older(store: TelemetryStore, before: datetime) -> int:
    """How many requests a prune at ``before`` would delete."""
    with store.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(RequestRecord)
                               .where(RequestRecord.created_at < before)) or 0)


def prune(store: TelemetryStore, before: datetime, batch: int = BATCH) -> Pruned:
    """Delete requests created before ``before`` with their calls and feedback; how many rows of each went.
    Budgets are checked first (``check_budgets``). Safe beside running servers and other replicas: each batch is
    its own transaction, and rows another process deletes first are simply not counted here."""
    check_budgets(store, before)
    store.check_file()
    gone = Pruned()
    while True:
        with store.engine.begin() as conn:
            ids = list(conn.scalars(select(RequestRecord.id).where(RequestRecord.created_at < before)
                                    .order_by(RequestRecord.created_at).limit(batch)))
            if not ids:
                return gone
            gone.calls += conn.execute(delete(CallRecord).where(CallRecord.request_id.in_(ids))).rowcount or 0
            gone.feedback += conn.execute(delete(FeedbackRecord).where(FeedbackRecord.request_id.in_(ids))
                                          ).rowcount or 0
            gone.requests += conn.execute(delete(RequestRecord).where(RequestRecord.id.in_(ids))).rowcount or 0
