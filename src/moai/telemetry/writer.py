"""A background writer: requests never wait on the database's lock, only on their own commit.

Records go into a bounded queue; one thread drains it in batches, one transaction per batch (group
commit), and resolves each record's future once it is durable. A response is sent after its record is
acknowledged, so a crash afterwards loses nothing acknowledged; under load, batching keeps the per-request
cost near a single queue hand-off. On shutdown the queue is flushed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any

from moai.telemetry.store import TelemetryStore

log = logging.getLogger("moai.telemetry")
_STOP = object()


class TelemetryWriter:
    def __init__(self, store: TelemetryStore, max_queue: int = 10_000, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._loop, name="moai-telemetry", daemon=True)
        self._thread.start()
        self.written = 0
        self.failed = 0

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

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
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
        try:
            self.store.write_many([rec for rec, _ in batch])
        except Exception as e:  # noqa: BLE001 - retry one by one so one bad record can't sink the batch
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

    def close(self, timeout: float = 30) -> None:
        """Flush everything queued, then stop."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
