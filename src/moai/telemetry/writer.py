"""A background writer: requests never wait on the database's lock, only on their own commit.

Records go into a bounded queue; one thread drains it in batches, one transaction per batch (group
commit), and resolves each record's future once it is durable. A response is sent after its record is
acknowledged, so a crash afterwards loses nothing acknowledged; under load, batching keeps the per-request
cost near a single queue hand-off. On shutdown the queue is flushed.

While the database is unreachable, requests are acknowledged once they are on the local spool (see
``moai.telemetry.spool``) and written to the database when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from moai.telemetry.spool import Spool, default_spool_dir, is_outage
from moai.telemetry.store import RequestRecord, TelemetryStore

log = logging.getLogger("moai.telemetry")
_STOP = object()


class TelemetryWriter:
    def __init__(self, store: TelemetryStore, max_queue: int = 10_000, max_batch: int = 256,
                 spool_dir: Path | None = None, replay_s: float = 2.0,
                 on_spool: Callable[[int], None] | None = None) -> None:
        """``spool_dir``: where records wait while the database is down (default: see ``default_spool_dir``);
        ``replay_s``: how often the spool is offered to the database again; ``on_spool(n)``: told (from the
        writer's thread) each time n records go to the spool."""
        self.store = store
        self.max_batch = max_batch
        self.spool = Spool(spool_dir or default_spool_dir(store.url))
        self.replay_s = replay_s
        self.on_spool = on_spool
        self._next_replay = 0.0  # a spool left by an earlier run is replayed at once
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.written = 0
        self.failed = 0
        self.spooled = 0  # records acknowledged from the spool while the database was down
        self.replayed = 0  # spooled requests written to the database since
        self._thread = threading.Thread(target=self._loop, name="moai-telemetry", daemon=True)
        self._thread.start()

    def submit(self, record: Any) -> Future[None]:
        """Queue a record; the future resolves when it is committed. Blocks only if the queue is full."""
        fut: Future[None] = Future()
        self._queue.put((record, fut))
        return fut

    async def write(self, record: Any) -> None:
        """Await the record's commit without blocking the event loop."""
        try:
            fut = self.submit_nowait(record)
        except queue.Full:
            fut = await asyncio.to_thread(self.submit, record)  # back-pressure, off the loop
        await asyncio.wrap_future(fut)

    def submit_nowait(self, record: Any) -> Future[None]:
        fut: Future[None] = Future()
        self._queue.put_nowait((record, fut))
        return fut

    def _replay(self) -> None:
        """Offer the spool to the database, at most every ``replay_s`` seconds while it keeps failing."""
        if time.monotonic() < self._next_replay or not self.spool.pending():
            return
        self._next_replay = time.monotonic() + self.replay_s
        try:
            n = self.spool.replay(self.store)
        except Exception as e:  # noqa: BLE001 - still down (or a file it cannot read): try again later
            log.warning("telemetry spool not replayed yet (%s)", type(e).__name__)
            return
        self.replayed += n
        if n:
            log.warning("telemetry database back: %d spooled request(s) written", n)

    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.replay_s)
            except queue.Empty:
                self._replay()
                continue
            if item is _STOP:
                self._replay()
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._commit(batch)
                    return
                batch.append(nxt)
            self._commit(batch)

    def _commit(self, batch: list[tuple[Any, Future[None]]]) -> None:
        if self.spool.has_own() and self._spool(batch):
            # records spooled earlier are not all in the database yet: this batch waits behind them, so that a
            # request recorded again (its final status after a cancellation) never meets its older record later
            self._replay()
            return
        try:
            self.store.write_many([rec for rec, _ in batch])
        except Exception as e:  # noqa: BLE001 - retry one by one so one bad record can't sink the batch
            if is_outage(e) and self._spool(batch, e):
                return
            log.warning("telemetry batch of %d failed (%s); retrying one by one", len(batch), e)
            for rec, fut in batch:
                try:
                    self.store.write_many([rec])
                    self.written += 1
                    fut.set_result(None)
                except Exception as e1:  # noqa: BLE001
                    self.failed += 1
                    fut.set_exception(e1)
            return
        self.written += len(batch)
        for _, fut in batch:
            fut.set_result(None)
        self._replay()

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
            fut.set_result(None)
        return True

    def close(self, timeout: float = 30) -> None:
        """Flush everything queued, then stop."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
