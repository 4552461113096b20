"""A database step that may hang (a paused server, a lock held elsewhere), run so that its request does not.

The step runs on a worker thread; its caller waits at most ``timeout_s`` for one of a few slots and at most
``timeout_s`` for the step, then gives up and answers without it. A step given up on (or whose caller was
cancelled) may still finish later, and what it then did (a request counted against a key's RPM limit, a budget
hold taken) would count for a request that was refused: ``undo`` takes it back, on a worker thread, right after
the step returns. A lock decides which side wins, so a step's result is either used or undone, never both and
never neither.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("moai.server")


class GaveUp(TimeoutError):
    """The step did not return within its time (it may still be running; its result will be undone)."""


class Abandonable(Generic[T]):
    """One run of ``step`` whose result goes to ``undo`` instead of the caller once the caller has given up."""

    def __init__(self, step: Callable[[], T], undo: Callable[[T], None]) -> None:
        self._step, self._undo = step, undo
        self._lock = threading.Lock()
        self._given_up = False
        self._returned = False

    def run(self) -> T | None:
        """The worker thread's part: the step, then its result handed over or undone."""
        result = self._step()
        with self._lock:
            self._returned = True
            if not self._given_up:
                return result
        _undo_quietly(self._undo, result)
        return None

    def give_up(self) -> bool:
        """Give up on the result; False when it is too late (the step returned: its result is the caller's)."""
        with self._lock:
            if self._returned:
                return False
            self._given_up = True
            return True


class BoundedSteps:
    """Runs database steps of one kind, at most ``at_once`` waiting at a time, each for at most ``timeout_s``.
    While one given up on has not returned, the database is taken to hang and the next ones give up at once."""

    def __init__(self, timeout_s: float, at_once: int) -> None:
        self.timeout_s = timeout_s
        self._at_once = at_once
        self._slots: asyncio.Semaphore | None = None
        self._stuck: asyncio.Future[object] | None = None

    def hanging(self) -> bool:
        return self._stuck is not None and not self._stuck.done()

    async def run(self, step: Callable[[], T], undo: Callable[[T], None]) -> T:
        """``step()``'s result, or GaveUp (and ``undo`` of the result whenever the step returns). The wait for a
        slot and the step's own run each get ``timeout_s``: a busy moment is no hang, and only a step that ran
        that long marks the database as hanging."""
        if self.hanging():
            raise GaveUp
        loop = asyncio.get_running_loop()
        slots = self._slots = self._slots or asyncio.Semaphore(self._at_once)
        try:
            await asyncio.wait_for(slots.acquire(), self.timeout_s)
        except TimeoutError:
            raise GaveUp from None
        job = Abandonable(step, undo)
        future = loop.run_in_executor(None, job.run)
        # the slot is freed when the thread is; an error of a step given up on is retrieved here (not logged twice)
        future.add_done_callback(lambda f: (slots.release(), f.cancelled() or f.exception()))
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)  # type: ignore[return-value]
        except TimeoutError:
            if not job.give_up():  # it returned meanwhile: the result is used, not undone
                return await future  # type: ignore[return-value]
            self._stuck = future
            raise GaveUp from None
        except asyncio.CancelledError:  # the caller went away: its result is nobody's, so it is taken back
            if not job.give_up():
                future.add_done_callback(lambda f: _undo_returned(f, undo))
            raise


def _undo_returned(future: asyncio.Future[object], undo: Callable[[T], None]) -> None:
    """``undo`` a step that returned after its caller was cancelled (on a thread of its own: it may wait on the
    database, and the loop may be stopping)."""
    if future.cancelled() or future.exception() is not None:
        return
    result = future.result()
    threading.Thread(target=_undo_quietly, args=(undo, result), daemon=True).start()


def _undo_quietly(undo: Callable[[T], None], result: T) -> None:
    try:
        undo(result)
    except Exception:  # noqa: BLE001 - logged: nothing else can be done for a request already gone
        log.warning("could not take back what a database step given up on did", exc_info=True)
