"""A background writer: requests never wait on the database's lock, only on their own commit.

Records go into a bounded queue; one thread drains it in batches, one transaction per batch (group
commit), and resolves each record's future once it is durable. A response is sent after its record is
acknowledged, so a crash afterwards loses nothing acknowledged; under load, batching keeps the per-request
cost near a single queue hand-off. On shutdown the queue is flushed.

While the database is unreachable, requests are acknowledged once they are on the local spool (see
``moai.telemetry.spool``) and written to the database when it is back. A database that hangs (a paused server, a
connection whose packets go nowhere) counts as unreachable once a call has not returned within ``commit_timeout_s``:
a watchdog acknowledges that batch from the spool and hands the queue to a fresh thread, which spools everything
until the stuck call returns (the stuck write may still commit: replaying it later stores the same rows again).
A replay is watched batch by batch, never as a whole: a spool left by a long outage takes as long as it takes to
write, and is no hang. It is written in slices of ``REPLAY_SLICE_S`` between which the writer takes what was
queued meanwhile (behind the spool: appended to it), so that answers do not wait on a long replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Any

from sqlalchemy.exc import TimeoutError as PoolTimeout

from moai.telemetry.database import driver_reason
from moai.telemetry.records import RequestRecord
from moai.telemetry.spool import Spool, default_spool_dir, is_outage
from moai.telemetry.store import TelemetryStore

log = logging.getLogger("moai.telemetry")
_STOP = object()
# how long one replay goes on before the writer takes what was queued meanwhile (the answers waiting on it)
REPLAY_SLICE_S = 0.5


def _acknowledge(fut: Future[None], error: BaseException | None = None) -> None:
    """Resolve a record's future, unless it is already done: its request was cancelled (the client left), which
    cancels the future too, and setting a cancelled one raises, which would kill the writer's thread."""
    with contextlib.suppress(InvalidStateError):
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


class CommitTimeout(PoolTimeout):
    """The database did not answer a write in time: an outage like any other (``is_outage``)."""


class _Abandoned(CommitTimeout):
    """This thread's database call outlived ``commit_timeout_s``; another thread has taken over. An outage, so that
    a replay it ends leaves its spool file as it is for the thread that took over."""


class _WatchedStore:
    """The store as a replay sees it: each batch it writes is a database call of its own for the watchdog, so that
    a hang is judged on one batch, never on how long a whole spool takes."""

    def __init__(self, writer: TelemetryWriter, gen: int) -> None:
        self._writer = writer
        self._gen = gen

    def write_replayed(self, records: list[Any]) -> int:
        w = self._writer
        return int(w._watched(self._gen, None, w.store.write_replayed, records))


class TelemetryWriter:
    def __init__(self, store: TelemetryStore, max_queue: int = 10_000, max_batch: int = 256,
                 spool_dir: Path | None = None, replay_s: float = 2.0,
                 on_spool: Callable[[int], None] | None = None, commit_timeout_s: float = 5.0) -> None:
        """``spool_dir``: where records wait while the database is down (default: see ``default_spool_dir``);
        ``replay_s``: how often the spool is offered to the database again; ``on_spool(n)``: told (from the
        writer's thread) each time n records go to the spool; ``commit_timeout_s``: how long a write (or one batch
        of a replay) may take before its records are acknowledged from the spool instead."""
        self.store = store
        self.max_batch = max_batch
        self.spool = Spool(spool_dir or default_spool_dir(store.url))
        self.replay_s = replay_s
        self.on_spool = on_spool
        self.commit_timeout_s = commit_timeout_s
        self._next_replay = 0.0  # a spool left by an earlier run is replayed at once
        self._replay_failing = False  # the last replay failed, not for an outage (a file it cannot get through)
        self._replay_more = False  # the last replay stopped at the end of its slice: the next one is due at once
        self._replay_count = 0  # requests written by the replay under way, over all its slices
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.written = 0
        self.failed = 0
        self.spooled = 0  # records acknowledged from the spool while the database was down
        self.replayed = 0  # spooled requests written to the database since
        self.timeouts = 0  # database calls given up on after commit_timeout_s
        # the watched database call: (thread generation, when it began, the batch waiting on it or None)
        self._lock = threading.Lock()
        self._gen = 0
        self._busy: tuple[int, float, list[tuple[Any, Future[None]]] | None] | None = None
        self._stuck: threading.Thread | None = None  # a thread given up on, still inside its database call
        self._stop_seen = False  # close() was called and its marker taken off the queue
        self._finished = threading.Event()  # everything queued before close() is acknowledged (or failed)
        self._closed = threading.Event()
        self._thread = self._start(0)
        self._watchdog = threading.Thread(target=self._watch, name="moai-telemetry-watchdog", daemon=True)
        self._watchdog.start()

    def _start(self, gen: int) -> threading.Thread:
        t = threading.Thread(target=self._loop, args=(gen,), name="moai-telemetry", daemon=True)
        t.start()
        return t

    def submit(self, record: Any) -> Future[None]:
        """Queue a record; the future resolves when it is committed. Blocks only if the queue is full."""
        fut: Future[None] = Future()
        self._queue.put((record, fut))
        self._unless_closed()
        return fut

    async def write(self, record: Any) -> None:
        """Await the record's commit without blocking the event loop."""
        try:
            fut = self.submit_nowait(record)
        except queue.Full:
            fut = await asyncio.to_thread(self.submit, record)  # back-pressure, off the loop
        # shielded: a request cancelled meanwhile (its client left) must not cancel the write of its record
        await asyncio.shield(asyncio.wrap_future(fut))

    def submit_nowait(self, record: Any) -> Future[None]:
        fut: Future[None] = Future()
        self._queue.put_nowait((record, fut))
        self._unless_closed()
        return fut

    def _unless_closed(self) -> None:
        """Once closed, nothing drains the queue: a record submitted then (a call that was still running when its
        Mixture closed) is spooled at once, or its answer would wait for ever. Checked after queueing, so that a
        record queued while ``close`` runs is taken by ``close`` or here, never by neither."""
        if self._closed.is_set():
            self._spool_left()

    # ------------------------------------------------------------------ watched database calls

    def _watched(self, gen: int, batch: list[tuple[Any, Future[None]]] | None, call: Callable[..., Any],
                 *args: Any) -> Any:
        """``call(*args)``, seen by the watchdog; raises _Abandoned when it returned too late (its batch has been
        acknowledged from the spool meanwhile, and another thread drains the queue)."""
        self._busy = (gen, time.monotonic(), batch)
        try:
            out = call(*args)
        except BaseException:
            if self._release(gen):
                raise
            raise _Abandoned from None
        if not self._release(gen):
            raise _Abandoned
        return out

    def _release(self, gen: int) -> bool:
        with self._lock:
            if self._gen != gen:
                return False
            self._busy = None
            return True

    def _hung(self) -> bool:
        """Whether a thread given up on is still inside its database call: the database is taken to hang."""
        stuck = self._stuck
        if stuck is None:
            return False
        if stuck.is_alive():
            return True
        self._stuck = None
        return False

    def _watch(self) -> None:
        tick = max(0.01, min(0.25, self.commit_timeout_s / 5))
        while not self._closed.wait(tick):
            with self._lock:
                busy = self._busy
                if busy is None or time.monotonic() - busy[1] < self.commit_timeout_s:
                    continue
                self._gen += 1
                gen, self._busy, self._stuck = self._gen, None, self._thread
            self.timeouts += 1
            e = CommitTimeout(f"the telemetry database did not answer within {self.commit_timeout_s:g}s")
            log.warning("%s; its writes go to the spool until it does", e)
            batch = busy[2]
            if batch:
                self._spool_or_fail(batch, e)
            if self._stop_seen:  # closing: nothing is queued after the stop marker
                self._finished.set()
                return
            self._thread = self._start(gen)

    # ------------------------------------------------------------------ the writer's thread

    def _replay(self, gen: int, slice_s: float | None = None) -> None:
        """Offer the spool to the database for up to ``slice_s`` seconds (default ``REPLAY_SLICE_S``) and one batch,
        at most every ``replay_s`` seconds while it keeps failing, at once again while it goes well and records are
        left. Not while a full batch is queued: the answers waiting on it go first (to the spool, behind the
        records being replayed), so that a drain takes in more than one batch per slice."""
        if self._queue.qsize() >= self.max_batch:
            return
        self._replay_more = False
        if time.monotonic() < self._next_replay or self._hung() or not self.spool.pending():
            return
        self._next_replay = time.monotonic() + self.replay_s
        try:
            until = time.monotonic() + (REPLAY_SLICE_S if slice_s is None else slice_s)
            n = self.spool.replay(_WatchedStore(self, gen), until=until)
        except _Abandoned:
            raise
        except Exception as e:  # noqa: BLE001 - still down (or a file it cannot get through): try again later
            # while the database is up but a file keeps failing, new records no longer wait behind the spool
            self._replay_failing = not is_outage(e)
            log.warning("telemetry spool not replayed yet (%s: %s)", type(e).__name__, driver_reason(e))
            return
        self._replay_failing = False
        self.replayed += n
        self._replay_count += n
        if self.spool.cut_short:
            self._next_replay = 0.0
            self._replay_more = True
            return
        if self._replay_count:
            log.warning("telemetry database back: %d spooled request(s) written", self._replay_count)
        self._replay_count = 0

    def _loop(self, gen: int) -> None:
        try:
            self._drain(gen)
        except _Abandoned:  # returned after the watchdog gave up on it: a newer thread has the queue
            return
        self._finished.set()

    def _drain(self, gen: int) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0 if self._replay_more else self.replay_s)
            except queue.Empty:
                self._replay(gen)
                continue
            if item is _STOP:
                self._stop_seen = True
                self._replay(gen, self.commit_timeout_s)
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._stop_seen = True
                    self._commit(gen, batch)
                    self._replay(gen, self.commit_timeout_s)
                    return
                batch.append(nxt)
            self._commit(gen, batch)

    def _commit(self, gen: int, batch: list[tuple[Any, Future[None]]]) -> None:
        if self._hung():  # the database is taken to hang until the call given up on returns
            e = CommitTimeout("an earlier write to the telemetry database has not returned yet")
            self._spool_or_fail(batch, e)
            return
        if self.spool.has_own() and not self._replay_failing and self._spool(batch):
            # records spooled earlier are not all in the database yet: this batch waits behind them, so that a
            # request recorded again (its final status after a cancellation) never meets its older record later
            self._replay(gen)
            return
        try:
            self._watched(gen, batch, self.store.write_many, [rec for rec, _ in batch])
        except _Abandoned:
            raise
        except Exception as e:  # noqa: BLE001 - retry one by one so one bad record can't sink the batch
            if is_outage(e) and self._spool(batch, e):
                return
            log.warning("telemetry batch of %d failed (%s); retrying one by one", len(batch), driver_reason(e))
            for i, (rec, fut) in enumerate(batch):
                try:
                    self._watched(gen, batch[i:], self.store.write_many, [rec])
                    self.written += 1
                    _acknowledge(fut)
                except _Abandoned:
                    raise
                except Exception as e1:  # noqa: BLE001
                    self.failed += 1
                    _acknowledge(fut, e1)
            return
        self.written += len(batch)
        for _, fut in batch:
            _acknowledge(fut)
        self._replay(gen)

    def _fail(self, batch: list[tuple[Any, Future[None]]], e: Exception) -> None:
        for _, fut in batch:
            if not fut.done():
                self.failed += 1
                _acknowledge(fut, e)

    def _spool_or_fail(self, batch: list[tuple[Any, Future[None]]], e: Exception) -> None:
        """Acknowledge a batch the database cannot take from the spool; when the disk refuses too, fail it."""
        if not self._spool(batch, e):
            self._fail(batch, e)

    def _spool(self, batch: list[tuple[Any, Future[None]]], e: Exception | None = None) -> bool:
        """Acknowledge a batch from the local spool (``e``: the database error that sent it there, else it queues
        behind earlier spooled records); False when it holds other kinds of record or the disk refuses too (then
        it is written as usual, or its futures fail: the answer is not sent unrecorded)."""
        if not all(isinstance(rec, RequestRecord) for rec, _ in batch):
            return False
        try:
            self.spool.append([rec for rec, _ in batch])
        except OSError as e2:
            log.error("telemetry spool not writable (%s)", e2)
            return False
        self.spooled += len(batch)
        if self.on_spool is not None:
            self.on_spool(len(batch))
        if e is not None:
            self._next_replay = time.monotonic() + self.replay_s
            log.warning("telemetry database unavailable (%s): %d record(s) spooled to %s", type(e).__name__,
                        len(batch), self.spool.path)
        for _, fut in batch:
            _acknowledge(fut)
        return True

    def close(self, timeout: float = 30) -> None:
        """Flush everything queued, then stop (a database call that hangs is given up on after
        ``commit_timeout_s``, its records spooled)."""
        self._queue.put(_STOP)
        self._finished.wait(timeout)  # the watchdog may hand the queue to a new thread meanwhile
        self._closed.set()
        self._spool_left()

    def _spool_left(self) -> None:
        """What is still queued (submitted after the stop marker, or left by a thread that died) goes to the spool:
        an answer waiting on its record must not wait for ever, nor be sent unrecorded."""
        left: list[tuple[Any, Future[None]]] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and not item[1].done():
                left.append(item)
        if left:
            self._spool_or_fail(left, CommitTimeout("the telemetry writer stopped before writing these"))
