"""Gateway keys: who may call, which mixes, how much they may spend, how fast.

Keys live hashed in the telemetry database (shared by replicas). Authentication is required as soon as
one key was created, revoked ones included (revoking the last key closes the gateway, never opens it).
Budgets are checked against the spend recorded in the database (per UTC day and month); requests-per-minute
limits are counted in the same database (``rate_limit``), so they hold across replicas too. A budgeted key's
request is counted against its RPM limit in the transaction of its budget hold (``hold``), not at admission, which
only checks that it fits: a request the hold refuses never counts, not even while it waits for its hold.

When the database cannot be read, the key set read last is used for a short while (``grace_s``: a restart or a
fail-over of the database does not lock every caller out); after that, and whenever no key set was ever read,
a request gets 503 ``database_unavailable``. A key with a budget or an RPM limit cannot be checked without the
database: it gets that 503 at once. One read of the key table runs at a time: while it is in flight (a database
that hangs), other requests use the key set read last, within the same grace, instead of each starting a read.
A limited key's check (its budget, its RPM count, its budget hold) that the database leaves hanging is answered
503 after ``limits_timeout_s``, and while it has not returned the next such checks are answered 503 at once; when
it does return, what it counted for the refused request is taken back (``Abandonable``). A budgeted key's request
refused before its hold is counted in the background (``count_unheld``): its refusal does not wait for the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from moai.bounded import BoundedSteps, GaveUp
from moai.server import spend_holds
from moai.server.rate_limit import Window, check, count_admitted, count_in, peek, tally, uncount, withdraw
from moai.telemetry.database import driver_reason
from moai.telemetry.records import ApiKey, RateWindow, RequestRecord
from moai.telemetry.store import TelemetryStore

PREFIX = "moai-sk-"
DATABASE_UNAVAILABLE = "database_unavailable"
LIMITS_TIMEOUT_S = 5.0  # how long a limited key's check waits for the database (a write that long counts as down)
LIMIT_CHECKS_AT_ONCE = 4  # limited keys' checks waiting on the database at once (a hung one holds its thread)
log = logging.getLogger("moai.server")
T = TypeVar("T")


_BEARER = re.compile(r"bearer[ \t]+(.*)", re.IGNORECASE | re.DOTALL)


def bearer_credentials(authorization: str | None) -> str | None:
    """What follows ``Bearer`` in an Authorization header (stripped), or None without the header, with another
    scheme, or with nothing after it. Any run of spaces or tabs may follow the scheme: clients and proxies write
    both, and the gateway's keys and the metrics token must read the same header the same way."""
    match = _BEARER.fullmatch(authorization.strip()) if authorization else None
    return match.group(1).strip() if match else None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(store: TelemetryStore, name: str, mixes: list[str] | None = None, budget_day: float | None = None,
               budget_month: float | None = None, rpm: int | None = None) -> tuple[ApiKey, str]:
    """Create a key; returns the record and the secret (shown once, never stored)."""
    key_id = f"mk_{secrets.token_hex(4)}"
    secret = f"{PREFIX}{key_id}-{secrets.token_urlsafe(24)}"
    key = ApiKey(id=key_id, secret_hash=hash_secret(secret), name=name, allowed_mixes=mixes,
                 budget_day_usd=budget_day, budget_month_usd=budget_month, rpm=rpm)
    with Session(store.engine, expire_on_commit=False) as s, s.begin():
        s.add(key)
    return key, secret


def list_keys(store: TelemetryStore) -> list[ApiKey]:
    with Session(store.engine) as s:
        return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(store: TelemetryStore, key_id: str) -> bool:
    with Session(store.engine) as s, s.begin():
        key = s.get(ApiKey, key_id)
        if key is None or key.revoked_at is not None:
            return False
        key.revoked_at = datetime.now(UTC)
        return True


def delete_key(store: TelemetryStore, key_id: str) -> bool:
    """Remove a key (active or revoked) and its rate counters; the requests it made stay on record. Without any
    key row left the gateway is open again (``Gatekeeper``): that is the one way to reopen it."""
    with Session(store.engine) as s, s.begin():
        key = s.get(ApiKey, key_id)
        if key is None:
            return False
        s.execute(delete(RateWindow).where(RateWindow.key_id == key_id))
        s.delete(key)
        return True


def period_starts(now: datetime) -> tuple[datetime, datetime]:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1)


def spend(store: TelemetryStore, key_id: str, since: datetime) -> float:
    """What the key's recorded requests cost since ``since``."""
    with store.engine.connect() as conn:
        return _spent(conn, key_id, since)


def _spent(conn: Connection, key_id: str, since: datetime) -> float:
    return float(conn.scalar(select(func.coalesce(func.sum(RequestRecord.cost_usd), 0.0))
                             .where(RequestRecord.api_key == key_id, RequestRecord.created_at >= since)) or 0.0)


def has_budget(key: ApiKey | None) -> bool:
    return key is not None and (key.budget_day_usd is not None or key.budget_month_usd is not None)


@dataclass
class Denied(Exception):
    status: int
    message: str
    code: str
    retry_after: float | None = None
    window: Window | None = None  # the key's RPM window, told in x-ratelimit-* headers (keys with a limit only)


def check_mix(key: ApiKey | None, mix: str) -> None:
    """Denied (403) when ``key`` may not use ``mix``; no key, or one without a mix list, may use any."""
    if key is not None and key.allowed_mixes is not None and mix not in key.allowed_mixes:
        raise Denied(403, f"This key may not use mix '{mix}' (allowed: {', '.join(key.allowed_mixes)}).",
                     "model_not_allowed")


class Gatekeeper:
    """Checks a request's key against the database (cached briefly) and its limits.

    ``on_error`` is called with each database error met (to count it); ``grace_s`` is how long the key set read
    last still admits callers while the database cannot be read."""

    def __init__(self, store: TelemetryStore | None, refresh_s: float = 2.0, grace_s: float = 10.0,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.grace_s = grace_s
        self.on_error = on_error
        self._keys: dict[str, ApiKey] = {}
        self._closed = False  # a key was ever created (revoked ones too): the gateway is never open again
        self._loaded = 0.0
        self._read_at: float | None = None  # when the key table was last read successfully
        self._error: str | None = None  # why the last read failed (None: it did not)
        self._lock = threading.Lock()
        self._reading = threading.Lock()  # held while the key table is read: one read at a time
        self._read_started = 0.0  # when the read in flight began (monotonic)
        self.limit_checks = BoundedSteps(LIMITS_TIMEOUT_S, LIMIT_CHECKS_AT_ONCE)
        self._counting: dict[str, asyncio.Task[None]] = {}  # background RPM counts (``count_unheld``), by key
        self._unheld: dict[str, int] = {}  # refused requests of each key waiting for their task to count them

    def _failed(self, e: Exception) -> None:
        if self.on_error is not None:
            self.on_error(e)

    def _refresh(self, wait: bool = False, seen: float | None = None) -> None:
        """Read the key table, unless a read is in flight: then return at once (``wait``: once it is done).
        ``seen``: when the caller found the key set stale; a read that finished since then is fresh enough."""
        if self.store is None:
            return
        seen = self._loaded if seen is None else seen
        # a waiter gives up after the grace: a read that hangs must not hold every caller (and the thread pool);
        # the caller then finds the table unreadable (503), never an empty key set
        if not self._reading.acquire(blocking=wait, timeout=max(self.grace_s, 0.1) if wait else -1):
            return
        self._read_started = time.monotonic()
        try:
            if self._loaded != seen:  # a read finished while this one waited: its result is as fresh
                return
            try:
                self.store.check_file()  # a SQLite file that is gone: its open connections would read a ghost
                rows = list_keys(self.store)
                keys = {k.secret_hash: k for k in rows if k.revoked_at is None}
            except SQLAlchemyError as e:
                self._failed(e)
                with self._lock:
                    first, self._error, self._loaded = self._error is None, driver_reason(e), time.monotonic()
                if first:
                    log.warning("cannot read the gateway keys: %s", self._error)
                return
            with self._lock:
                if self._error is not None:
                    log.warning("gateway keys readable again")
                self._keys, self._closed = keys, bool(rows)
                self._loaded, self._error = time.monotonic(), None
                self._read_at = self._loaded
        finally:
            self._reading.release()

    def refresh(self) -> None:
        """Read the key table now, unless a read is in flight (the server does so every ``refresh_s``)."""
        self._refresh()

    def _unavailable(self) -> Denied:
        """The client's answer (the driver's reason, which names the database's host, is only logged)."""
        return Denied(503, "The gateway's database is unavailable, so API keys cannot be checked; try again shortly.",
                      DATABASE_UNAVAILABLE, retry_after=self.refresh_s)

    def _usable(self) -> None:
        """Raise 503 when the key table cannot be read (or a read of it hangs) and the key set read last is too old
        to stand in."""
        error, read_at = self._error, self._read_at
        if error is not None and (read_at is None or time.monotonic() - read_at > self.grace_s):
            raise self._unavailable()
        if self._reading.locked() and (read_at is None or time.monotonic() - self._read_started > self.grace_s):
            raise self._unavailable()

    def _stale(self) -> bool:
        return self.store is not None and time.monotonic() - self._loaded > self.refresh_s

    def _match(self, authorization: str | None) -> tuple[ApiKey | None, str | None]:
        """(key, None) or (None, None) for an open gateway, or (None, digest) for an unknown secret. A gateway
        whose keys were all revoked stays closed: revoking the last key must not let everybody in."""
        if not self._keys and not self._closed:
            return None, None
        sent = bearer_credentials(authorization)
        if sent is None:
            raise Denied(401, "This gateway requires an API key: send 'Authorization: Bearer <key>'.",
                         "missing_api_key")
        digest = hash_secret(sent)
        return self._keys.get(digest), digest

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """None when no key was ever created (open gateway); the key when valid; raises Denied otherwise."""
        if self._stale():
            self._refresh(self._read_at is None, self._loaded)  # nothing read yet: no key set to stand in
        self._usable()
        key, digest = self._match(authorization)
        if key is None and digest is not None:
            self._refresh(wait=True)  # a key created a moment ago on another replica
            key, digest = self._match(authorization)
        if key is None and digest is not None:
            if self._error is not None:  # it may be a new key: that cannot be told now
                raise self._unavailable()
            raise Denied(401, "Incorrect or revoked API key provided.", "invalid_api_key")
        return key

    async def check(self, authorization: str | None, mix: str | None = None) -> ApiKey | None:
        """authenticate + authorize without blocking the event loop."""
        return (await self.admit(authorization, mix))[0]

    async def admit(self, authorization: str | None, mix: str | None = None) -> tuple[ApiKey | None, Window | None]:
        """``check``, also giving the key's RPM window as ``authorize`` returns it (None without a limit or a mix),
        without a thread hop when the answer is in memory (the common case: keys cached, no budget to look up)."""
        if self._stale():
            # a read in flight, and a key set read lately: that set stands in. One older (the server was idle, or
            # the reads stopped) is waited past, or a key revoked since would still be let in
            too_old = self._read_at is None or time.monotonic() - self._loaded > 2 * self.refresh_s
            if too_old or not self._reading.locked():
                await asyncio.to_thread(self._refresh, too_old, self._loaded)
        self._usable()
        key, digest = self._match(authorization)
        if key is None and digest is not None:
            key = await asyncio.to_thread(self.authenticate, authorization)
        window = None
        if key is not None and mix is not None:
            if key.budget_day_usd is not None or key.budget_month_usd is not None or key.rpm:
                limited = key
                window = await self._bounded(lambda: self.authorize(limited, mix),
                                             lambda late: self._withdraw(limited, late), key)
            else:
                window = self.authorize(key, mix)
        return key, window

    async def _bounded(self, step: Callable[[], T], undo: Callable[[T], None], key: ApiKey) -> T:
        """``step`` (a check of a limited key) within ``LIMITS_TIMEOUT_S``, else 503; ``undo`` takes back what it
        counted if it returns after that."""
        hanging = self.limit_checks.hanging()  # told once, by the check that found it; the rest are only counted
        try:
            return await self.limit_checks.run(step, undo)
        except GaveUp as e:
            self._failed(e)
            if not hanging:
                log.warning("the limits of key %s could not be checked: the database did not answer within %gs",
                            key.id, self.limit_checks.timeout_s)
            raise self._unavailable() from None

    def _withdraw(self, key: ApiKey, window: Window | None) -> None:
        """Take back the RPM count of a request answered 503 while its check hung."""
        if window is not None and self.store is not None:
            withdraw(self.store, key.id, window)

    async def ahold(self, key: ApiKey, usd: float, counted: Window | None = None) -> spend_holds.Hold | None:
        """``hold`` off the event loop and bounded as the other checks of a limited key are: a hold taken after its
        request was answered 503 is released, and the request's RPM count (made with it, or ``counted``) taken
        back."""
        def undo(late: spend_holds.Hold | None) -> None:
            self.release(late)
            if late is not None and late.rpm_minute is not None and self.store is not None:
                uncount(self.store, key.id, late.rpm_minute)
            else:
                self._withdraw(key, counted)
        return await self._bounded(lambda: self.hold(key, usd, counted=counted), undo, key)

    def count_unheld(self, key: ApiKey | None, window: Window | None) -> None:
        """Count a request admitted with a ``pending`` RPM window (a budgeted key's) and refused before its budget
        hold (a bad option, an unknown model): admitted, it uses the limit up like any other request. The count
        runs in the background, so that the refusal is answered at once whatever the database does; ``aclose``
        waits for the counts still running. A key's refused requests are counted together: one task and one
        statement per key at a time, however many arrive while it runs (a burst of bad requests took every
        database slot the key checks share, one count each). Bounded as the other checks of a limited key are
        (``limits_timeout_s``): a count the database fails, or that never started (the database taken to hang, or
        no slot free in time), is lost and logged; one that runs past the bound is logged and still lands when the
        database answers (a thread is not stopped midway)."""
        if key is None or window is None or not window.pending or self.store is None:
            return
        waiting = self._unheld.get(key.id, 0)
        self._unheld[key.id] = waiting + 1
        if key.id in self._counting:  # its task counts this one with the others when its statement is done
            return
        task = asyncio.get_running_loop().create_task(self._count_unheld(self.store, key.id))
        self._counting[key.id] = task
        task.add_done_callback(lambda t, k=key.id: self._forget(k, t))  # also one cancelled before it began

    async def _count_unheld(self, store: TelemetryStore, key_id: str) -> None:
        """Count the key's refused requests waiting, until none is left."""
        try:
            while n := self._unheld.pop(key_id, 0):
                await self._count_refused(store, key_id, n)
        finally:
            self._forget(key_id, asyncio.current_task())  # at once: a request refused from now on starts a task
            lost = self._unheld.pop(key_id, 0)  # cancelled by a shutdown with more waiting
            if lost:
                log.warning("%d refused request(s) of key %s not counted against its RPM limit by the shutdown",
                            lost, key_id)

    def _forget(self, key_id: str, task: asyncio.Task[Any] | None) -> None:
        if self._counting.get(key_id) is task:
            del self._counting[key_id]

    async def _count_refused(self, store: TelemetryStore, key_id: str, n: int) -> None:
        started = threading.Event()

        def count() -> int:
            started.set()
            return count_admitted(store, key_id, n=n)

        def late(_minute: int) -> None:
            log.info("%d refused request(s) of key %s were counted against its RPM limit late", n, key_id)

        try:
            await self.limit_checks.run(count, late)
        except GaveUp as e:
            self._failed(e)
            if started.is_set():
                log.warning("%d refused request(s) of key %s not counted against its RPM limit yet: the database did "
                            "not answer within %gs (counted when it does)", n, key_id, self.limit_checks.timeout_s)
            elif self.limit_checks.hanging():
                log.warning("%d refused request(s) of key %s not counted against its RPM limit: the database is "
                            "not answering (an earlier check of a limited key has not returned)", n, key_id)
            else:  # the slots were all taken by checks still running, none of them past its bound
                log.warning("%d refused request(s) of key %s not counted against its RPM limit: the database is "
                            "busy (no slot for the count came free within %gs)", n, key_id,
                            self.limit_checks.timeout_s)
        except SQLAlchemyError as e:
            self._failed(e)
            log.warning("%d refused request(s) of key %s not counted against its RPM limit: %s", n, key_id,
                        driver_reason(e))

    async def aclose(self, timeout_s: float | None = None) -> None:
        """Wait for the background counts still running (``count_unheld``), at most ``timeout_s`` (default: the
        limits' bound), so that a shutdown does not drop them; those still waiting then are given up on (logged;
        one whose statement is running still lands when the database answers)."""
        if not self._counting:
            return
        _done, waiting = await asyncio.wait(set(self._counting.values()),
                                            timeout=timeout_s or self.limit_checks.timeout_s)
        if waiting:  # one task per key: each says, as it stops, how many of its key's requests it never sent
            log.warning("the shutdown stopped waiting for the RPM counts of %d key(s)' refused requests: the database "
                        "did not answer in time (a count already sent still lands when it does)", len(waiting))
            for task in waiting:
                task.cancel()

    def authorize(self, key: ApiKey | None, mix: str, now: datetime | None = None) -> Window | None:
        """Mix allowed, within budget, under the rate limit — or Denied (503 when the limits cannot be read).
        Returns the key's RPM window (None when it has no limit): a key without a budget is counted here, and the
        window is the one with this request counted; a budgeted key's request is only checked, and its window is
        ``pending`` (the counts read now plus this one), counted later with its hold (``hold``), whose window is
        the one to tell."""
        if key is None:
            return None
        check_mix(key, mix)
        try:
            return self._limits(key, now or datetime.now(UTC))
        except SQLAlchemyError as e:
            self._failed(e)
            log.warning("cannot check the limits of key %s: %s", key.id, driver_reason(e))
            raise self._unavailable() from None

    def _over_budget(self, conn: Connection, key: ApiKey, now: datetime, holding: float = 0.0) -> None:
        """Raise 429 when the key's recorded spend plus what its running requests hold (less ``holding``, this
        request's own hold) has reached a budget. When both budgets are reached, the one that binds longer is
        told, with its reset as Retry-After: at midnight a spent monthly budget still refuses."""
        day, month = period_starts(now)
        others = spend_holds.held(conn, key.id, now.timestamp()) - holding
        reached = [(reset, limit, label) for limit, start, label, reset in (
            (key.budget_month_usd, month, "monthly", (month + timedelta(days=32)).replace(day=1)),
            (key.budget_day_usd, day, "daily", day + timedelta(days=1)),
        ) if limit is not None and _spent(conn, key.id, start) + others >= limit]
        if reached:
            reset, limit, label = max(reached, key=lambda r: r[0])  # a tie (the month's last day): the monthly one
            running = others > spend_holds.RESIDUE_USD  # float noise of released holds is no running request
            raise Denied(429, f"This key has spent its {label} budget of ${limit:g}"
                         + (" (counting its requests still running)." if running else "."),
                         "insufficient_quota", retry_after=(reset - now).total_seconds())

    def _told(self, key: ApiKey, now: datetime, counted: Window | None = None) -> Window | None:
        """The RPM window a budget refusal tells (keys with a limit only), after taking back this request's count
        when it was counted (``counted``): a request refused with 429 does not use the limit up."""
        if not key.rpm or self.store is None:
            return None
        if counted is not None:
            return withdraw(self.store, key.id, counted, now.timestamp())
        return peek(self.store, key.id, key.rpm, now.timestamp())

    def hold(self, key: ApiKey | None, usd: float, now: datetime | None = None,
             counted: Window | None = None) -> spend_holds.Hold | None:
        """Hold a budgeted key's request's worst-case cost until it is recorded (``spend_holds``), or 429 when
        the key's spend and the holds of its other running requests have reached its budget. ``counted``: the RPM
        window of its admission; a ``pending`` one (a key with an RPM limit) is counted here, in the hold's
        transaction, so that a refused hold counts nothing (429 ``rate_limit_exceeded`` when the window filled up
        since the admission, the hold then not taken either), and the window with it counted is the hold's ``rpm``,
        which its answer's x-ratelimit-* headers tell; one counted at admission is taken back on the 429.
        None: nothing held nor counted (no budget, or nothing to cost and no count pending)."""
        pending = key is not None and bool(key.rpm) and counted is not None and counted.pending
        if self.store is None or not has_budget(key) or (usd <= 0 and not pending):
            return None
        assert key is not None
        now = now or datetime.now(UTC)
        try:
            self.store.check_file()
            try:
                with self.store.engine.begin() as conn:  # a Denied rolls the hold, and the count, back
                    h = spend_holds.Hold(key.id, int(now.timestamp() // 60), 0.0)  # nothing to cost: no hold
                    if usd > 0:
                        h = spend_holds.add(conn, key.id, usd, now.timestamp())
                        self._over_budget(conn, key, now, holding=usd)
                    if not pending:
                        return h
                    assert key.rpm
                    window = count_in(conn, key.id, key.rpm, now.timestamp())
                    if window.retry_after is not None:
                        raise self._rate_limited(key, window)
                    return dataclasses.replace(h, rpm=window)
            except Denied as e:
                if e.window is None:  # the budget's refusal: the RPM window as it stands, without this request
                    e.window = self._told(key, now, counted)
                raise
        except SQLAlchemyError as e:
            self._failed(e)
            log.warning("cannot check the budget of key %s: %s", key.id, driver_reason(e))
            raise self._unavailable() from None

    def release(self, hold: spend_holds.Hold | None) -> None:
        """Give a hold back once its request is recorded; a database that fails now lets it fade instead."""
        if hold is None or self.store is None or hold.usd <= 0:  # nothing held (only counted)
            return
        try:
            spend_holds.release(self.store, hold)
        except SQLAlchemyError as e:
            self._failed(e)
            log.warning("cannot release a budget hold of key %s (it fades in %d min): %s", hold.key_id,
                        spend_holds.HOLD_TTL_MIN, driver_reason(e))

    def _limits(self, key: ApiKey, now: datetime) -> Window | None:
        if self.store is not None and (has_budget(key) or key.rpm):
            self.store.check_file()  # limits read from a SQLite file that is gone would hold nothing back
        if self.store is not None and has_budget(key):
            try:
                with self.store.engine.connect() as conn:
                    self._over_budget(conn, key, now)
            except Denied as e:  # not counted against the RPM limit, which is still told as it stands
                e.window = self._told(key, now)
                raise
        if key.rpm and self.store is not None:
            # a budgeted key's request is counted with its hold (``hold``): here only whether it fits
            window = (check if has_budget(key) else tally)(self.store, key.id, key.rpm, now.timestamp())
            if window.retry_after is not None:
                raise self._rate_limited(key, window)
            return window
        return None

    def _rate_limited(self, key: ApiKey, window: Window) -> Denied:
        return Denied(429, f"Rate limit of {key.rpm} requests per minute reached for this key.",
                      "rate_limit_exceeded", retry_after=window.retry_after, window=window)
