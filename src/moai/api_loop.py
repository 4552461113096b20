"""The private event loop behind a Mixture's Python API: one daemon thread per Mixture, and what keeps it
working across ``os.fork()`` and at interpreter exit (see moai.api for why calls run there)."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import select
import selectors
import sys
import threading
import time
import weakref
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import openai

from moai.api_errors import URL, forked, http, shut_down

if TYPE_CHECKING:
    from moai.api_streams import AsyncChunkStream, ChunkStream
    from moai.mixture import Mixture, Prepared

T = TypeVar("T")


class LoopThread:
    """One event loop in a daemon thread, started on first use; closed for good by ``shutdown``."""

    def __init__(self, mixture: Mixture) -> None:
        self._mixture = weakref.ref(mixture)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._home: int | None = None  # the process the loop was started in (a forked child starts its own)
        self._busy_at_fork = False  # forked while its thread was inside a call (see ``_before_fork``)
        self.closed = False
        # every coroutine running on the loop, held strongly (an abandoned stream's task is not collected while
        # its model call runs) so that shutdown can stop them and have them recorded as cancelled
        self._tasks: set[asyncio.Task[Any]] = set()
        # the request each running call prepared: shutdown lets one whose answer is already recorded finish
        self._requests: dict[asyncio.Task[Any], Prepared] = {}
        self._streams: weakref.WeakSet[ChunkStream | AsyncChunkStream] = weakref.WeakSet()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self.closed or getattr(self._mixture(), "closed", False):  # shutdown, or the Mixture's own aclose
            raise shut_down()
        return self._start()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            pid = os.getpid()
            # an inherited loop looks running in a forked child, but its thread is the parent's
            if self._loop is None or not self._loop.is_running() or self._home != pid:
                if sys.is_finalizing():  # a thread started now would never run: waiting on it would hang exit
                    raise RuntimeError("the interpreter is shutting down")
                if self._busy_at_fork:
                    raise RuntimeError(
                        "this process was forked while the Mixture's loop thread was inside a call (for over "
                        f"{_PARK_WAIT_S:g}s): locks it held stay taken here, so the Mixture cannot be used in this "
                        "process; fork while the Mixture is idle, or use the 'spawn' start method")
                if self._home != pid:
                    mixture = self._mixture()
                    if mixture is not None and _inherited(mixture, self._home):
                        _take_over(mixture)
                    self._home = pid
                loop = asyncio.new_event_loop()
                started = threading.Event()
                self._thread = threading.Thread(target=self._serve, args=(loop, started), name="moai-api-loop",
                                                daemon=True)
                self._thread.start()
                started.wait()
                self._loop = loop
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        loop.run_forever()

    async def _tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        if self.closed:  # submitted as shutdown began and not started before it stopped the others: refused
            coro.close()
            raise shut_down()
        self._tasks.add(task)
        try:
            return await coro
        finally:
            self._tasks.discard(task)
            self._requests.pop(task, None)

    def prepared(self, prep: Prepared) -> None:
        """Note the request the running call prepared (called from that call, on the loop): shutdown then knows
        whether its answer is already recorded (see ``_drain``)."""
        task = asyncio.current_task()
        if task is not None and task in self._tasks:
            self._requests[task] = prep

    def refuse_own_thread(self) -> None:
        """A sync call from the loop's own thread would wait for ever on work that thread should do."""
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError("the sync API cannot be called from the engine's own loop; use achat")

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        try:
            loop = self.loop
        except BaseException:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(self._tracked(coro), loop)

    def track(self, stream: ChunkStream | AsyncChunkStream) -> None:
        with self._lock:
            self._streams.add(stream)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        try:
            self.refuse_own_thread()
        except RuntimeError:
            coro.close()
            raise
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise openai.APITimeoutError(http.Request("POST", URL)) from None
        except concurrent.futures.CancelledError:  # stopped by shutdown
            raise shut_down() from None
        except BaseException:  # KeyboardInterrupt: stop the model call (recorded as cancelled), as async does
            fut.cancel()
            raise

    async def arun(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = asyncio.wrap_future(self.submit(coro))
        try:
            if timeout is None:
                return await fut
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise openai.APITimeoutError(http.Request("POST", URL)) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.closed and task is not None and not task.cancelling():  # stopped by shutdown, not the caller
                raise shut_down() from None
            raise

    def close(self, mixture: Mixture, timeout: float = 30) -> None:
        """Refuse new calls, end open streams with an error, stop running calls (recorded as cancelled, 503) but
        let those whose answer is already recorded return it, then close the Mixture's connections and flush its
        telemetry, and stop the loop."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._home is not None and self._home != os.getpid():
                return  # inherited from the parent and not used here: nothing of this process's to close
            streams = list(self._streams)
        for stream in streams:
            stream._abort(shut_down())
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError("shutdown cannot be called from the engine's own loop")
        try:
            loop = self._start()
        except RuntimeError:  # the interpreter is finalizing and the loop is gone: nothing can run any more
            return
        fut = asyncio.run_coroutine_threadsafe(self._drain(mixture), loop)
        with contextlib.suppress(Exception):
            fut.result(timeout)
        with self._lock:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._loop = self._thread = None

    async def _drain(self, mixture: Mixture) -> None:
        # at interpreter exit the standard thread pools take no more work, and closing the Mixture hands its
        # telemetry flush to a thread: give the loop one that starts a thread per call instead
        asyncio.get_running_loop().set_default_executor(_ThreadPerCall())
        # a call stopped now is recorded as the server records a request its shutdown stops: cancelled, 503
        mixture.stopping = lambda: True
        running = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in running:
            prep = self._requests.get(t)
            # answered and recorded as such (its record being committed): stopping it now would leave a success
            # on record that its caller never got; it returns its answer instead, in the moments it takes
            if prep is None or not prep.recorded:
                t.cancel()
        if running:
            await asyncio.wait(running, timeout=10)
        await mixture.aclose()

    def _park(self) -> tuple[threading.Event, threading.Event] | None:
        """Ask the loop's thread to wait between two callbacks while the process forks (see ``_before_fork``):
        (parked, release), or None when no loop runs here."""
        loop, thread = self._loop, self._thread
        if (loop is None or thread is None or not thread.is_alive() or threading.current_thread() is thread
                or self._home != os.getpid()):
            return None
        parked, release = threading.Event(), threading.Event()

        def wait() -> None:
            parked.set()
            release.wait(_PARK_MAX_S)  # bounded: the loop goes on should the fork never return

        try:
            loop.call_soon_threadsafe(wait)
        except RuntimeError:  # closed meanwhile
            return None
        return parked, release

    def _forget(self, busy: bool) -> None:
        """In a forked child: drop the parent's loop, thread and calls, so that the next call starts a loop here
        (unless the fork caught the thread ``busy`` inside a call: then calls raise, see ``_before_fork``).

        The old loop is kept (never closed or collected: its sockets are the parent's too) and given an epoll
        instance of its own, so that nothing the child does to it reaches the parent's. An open stream's call
        runs in the parent only: reading it here raises at once."""
        self._busy_at_fork = self._busy_at_fork or busy  # a fork's fork inherits the held locks too
        loop = self._loop
        if loop is not None:
            _detach(loop)
            _keep(loop, self._tasks)
        self._lock = threading.Lock()  # another thread of the parent may have held it at the fork
        self._loop = self._thread = None
        self._tasks = set()
        self._requests = {}
        streams, self._streams = list(self._streams), weakref.WeakSet()
        for stream in streams:
            stream._orphan(forked())


class _ThreadPerCall(concurrent.futures.ThreadPoolExecutor):
    """Runs each call in a thread of its own: still works during exit, unlike a pool (see ``_drain``)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def work() -> None:
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args, **kwargs))
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    fut.set_exception(e)

        threading.Thread(target=work, name="moai-api-close", daemon=True).start()
        return fut


_LOOPS: weakref.WeakKeyDictionary[Any, LoopThread] = weakref.WeakKeyDictionary()
_LOOPS_LOCK = threading.Lock()
_FORKED = False  # this process is a fork of one that had imported this module
# what a forked child inherited and must neither use nor close (nor let be collected: finalizers close sockets)
_INHERITED: list[Any] = []
_KEPT = False  # _INHERITED is immortal
_STORE_HOMES: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()  # store -> process its pool is for


def loop_for(mixture: Mixture) -> LoopThread:
    with _LOOPS_LOCK:
        if mixture not in _LOOPS:
            _LOOPS[mixture] = LoopThread(mixture)
        return _LOOPS[mixture]


_PARK_WAIT_S = 10.0  # how long a fork waits for the loop threads to pause (a first call may import for seconds)
_PARK_MAX_S = 60.0
_parking: list[tuple[LoopThread, threading.Event, threading.Event]] = []  # runner, parked, release


def _before_fork() -> None:
    """Pause every loop thread between two callbacks while the process forks.

    A thread caught inside a call holds whatever locks that call took (an import, pydantic building a schema, a
    queue); in the child such a lock would stay taken for ever, and its first call would hang on it. A thread that
    does not pause in time is noted: in the child, that Mixture's calls raise rather than risk the hang."""
    if not _LOOPS_LOCK.acquire(timeout=_PARK_WAIT_S):
        return
    try:
        runners = list(_LOOPS.values())
    finally:
        _LOOPS_LOCK.release()
    _parking.extend((r, *w) for r in runners if (w := r._park()) is not None)
    deadline = time.monotonic() + _PARK_WAIT_S
    for _, parked, _ in _parking:
        parked.wait(max(0.0, deadline - time.monotonic()))


def _after_fork_in_parent() -> None:
    while _parking:
        _parking.pop()[2].set()


def _after_fork_in_child() -> None:
    """Forget the parent's loop threads (they do not exist here) without waiting on any lock it held."""
    global _LOOPS_LOCK, _FORKED
    busy = {id(r) for r, parked, _ in _parking if not parked.is_set()}  # as the fork found them
    _parking.clear()
    _LOOPS_LOCK = threading.Lock()
    _FORKED = True
    for runner in list(_LOOPS.values()):
        runner._forget(id(runner) in busy)


def _keep(*inherited: Any) -> None:
    """Hold what a forked child inherited to the very end, interpreter exit included: finalized in the child, it
    would close connections the parent still uses (a TLS goodbye, a database's terminate message on the shared
    socket). The list holding it is made immortal once per process line (a fork's fork inherits it so)."""
    global _KEPT
    if not _KEPT:
        _KEPT = True
        with contextlib.suppress(Exception):  # not CPython: collected at exit (the epoll at least is detached)
            import ctypes

            ctypes.pythonapi.Py_IncRef(ctypes.py_object(_INHERITED))
    _INHERITED.extend(inherited)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


def _detach(loop: asyncio.AbstractEventLoop) -> None:
    """Give an inherited loop a fresh epoll instance in place of the one it shares with the parent.

    An epoll instance survives ``fork`` shared: a socket the child's copy unregisters (its transports closing,
    at the latest when the child exits) would be unregistered for the parent too, whose calls would then wait
    on connections whose answers it no longer hears. Other selectors keep no state in the kernel."""
    selector = getattr(loop, "_selector", None)
    if isinstance(selector, selectors.EpollSelector) and selector.fileno() >= 0:
        fresh = select.epoll()
        try:
            os.dup2(fresh.fileno(), selector.fileno())
        finally:
            fresh.close()


def _inherited(mixture: Mixture, home: int | None) -> bool:
    """Whether the Mixture comes from a parent process: its telemetry writer's threads are gone though it was
    never closed, or, without one, it was used in another process or this one is a fork."""
    writer = mixture.writer
    if writer is not None:
        return _orphaned(writer)
    return home is not None or _FORKED


def _orphaned(writer: Any) -> bool:
    """A telemetry writer whose threads ran in the parent: nothing here would ever write what it is given."""
    watchdog, closed = getattr(writer, "_watchdog", None), getattr(writer, "_closed", None)
    return (isinstance(watchdog, threading.Thread) and not watchdog.is_alive()
            and isinstance(closed, threading.Event) and not closed.is_set())


def _take_over(mixture: Mixture) -> None:
    """In a forked child, before its loop starts: connection pools, concurrency limits, the telemetry writer and
    database connections of this process's own. The parent's are kept (see ``_INHERITED``), never used here:
    their sockets are shared with the parent, and their counters hold the parent's calls."""
    from moai.telemetry.writer import TelemetryWriter

    registry = mixture.registry
    _keep(registry._providers, registry._limits, mixture._session_lookups)
    registry._providers, registry._limits = {}, {}  # providers are made again, lazily, on this process's loop
    mixture._session_lookups = None
    pid, store, writer = os.getpid(), mixture.store, mixture.writer
    if store is not None and _STORE_HOMES.get(store) != pid:
        _keep(store.engine.pool)  # the parent's database connections: not closed from here
        store.engine.dispose(close=False)
        _STORE_HOMES[store] = pid
    if writer is not None and _orphaned(writer):
        _keep(writer)  # what it holds is the parent's to write
        mixture.writer = TelemetryWriter(writer.store, max_queue=writer._queue.maxsize, max_batch=writer.max_batch,
                                         spool_dir=writer.spool.folder, replay_s=writer.replay_s,
                                         on_spool=writer.on_spool, commit_timeout_s=writer.commit_timeout_s)


def runs_elsewhere(mixture: Mixture) -> bool:
    """Whether the Mixture's Python-API calls run on a private loop that is not the caller's: its connections
    belong to that loop, and only ``shutdown`` (which closes them there) can close them."""
    with _LOOPS_LOCK:
        runner = _LOOPS.get(mixture)
    return (runner is not None and not runner.closed and runner._thread is not None
            and threading.current_thread() is not runner._thread)


def shutdown(mixture: Mixture) -> None:
    """Close the Mixture's connections, flush its telemetry and stop its private loop (done at exit anyway).

    Calls still running are stopped: they raise ``openai.APIConnectionError`` and are recorded as cancelled with
    status 503, as the server records the requests its shutdown stops; a call whose answer was complete and recorded
    returns it. An open stream raises ``openai.APIConnectionError`` at its next chunk. The Mixture is closed for
    good: every later call raises ``openai.APIConnectionError`` at once, as the OpenAI client does after
    ``close()``. Calling it again does nothing."""
    with _LOOPS_LOCK:
        runner = _LOOPS.get(mixture)
        if runner is None:  # never used through this API: nothing of it to close, only later calls to refuse
            _LOOPS[mixture] = runner = LoopThread(mixture)
            runner.closed = True
    runner.close(mixture)


@atexit.register
def _shutdown_all() -> None:
    """At interpreter exit: close what callers left open (streams included, recorded as cancelled), so pooled
    connections end cleanly and every acknowledged request's telemetry record is written."""
    for mixture in list(_LOOPS.keys()):
        with contextlib.suppress(Exception):
            shutdown(mixture)
