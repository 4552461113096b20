"""The Python API: moai in process, with the OpenAI client's surface and types, no server needed.

    from moai import Mixture

    m = Mixture.from_config("mix.yaml")                  # or Mixture.from_config() for the embedded default
    r = m.chat.completions.create(model="moai/default", messages=[{"role": "user", "content": "hi"}])
    r.choices[0].message.content, r.moai["model"]        # openai.types.chat.ChatCompletion + moai's summary
    for chunk in m.chat.completions.create(model="moai/default", messages=..., stream=True):
        ...                                              # openai.types.chat.ChatCompletionChunk
    r = await m.achat.completions.create(...)            # async twin; ``stream=True`` gives an async iterator
    m.route([{"role": "user", "content": "hi"}])         # the gate's decision, no model called

Why a private event loop: the engine's providers hold connection pools and semaphores bound to the loop
that first used them. Running every call on one loop thread owned by the Mixture makes the sync API work
inside Jupyter or any running loop, and lets sync and async calls share one Mixture safely; the async API
awaits that loop's futures from whatever loop the caller is on.

Errors are the ``openai`` client's own exception classes for the status the HTTP server would return
(``openai.NotFoundError`` for an unknown model, ``BadRequestError`` for invalid input,
``UnprocessableEntityError`` when no model satisfies the constraints, ``InternalServerError`` when every
model failed), so code written against the OpenAI client handles moai unchanged. A request past the mix
file's ``settings.request_timeout_s`` (a 504 from the server) raises ``openai.APITimeoutError``, as the
OpenAI client does when a call takes too long, for a stream too (the limit covers the whole stream); its
``code`` is the server's, ``request_timeout``. The caller's own ``timeout=`` raises ``openai.APITimeoutError``
too: on a stream it bounds the wait for the first chunk and then for each next one, as the OpenAI client's read
timeout does. A call given up on (a timeout, Ctrl-C, a stream closed or dropped unfinished) stops its model call
and is recorded as cancelled, as the server records a client that disconnects.

Messages, tools and other arguments may hold the OpenAI client's typed objects (``r.choices[0].message``
appended to ``messages``): they are sent as the OpenAI client would serialise them.

``create`` takes the OpenAI client's own keyword arguments (read from the installed ``openai``) and moai's
body fields (``moai=``, ``cache=``); anything else is a ``TypeError``, as from the OpenAI client, and may be
sent through ``extra_body``. ``openai.NOT_GIVEN`` and ``openai.omit`` mean "not sent"; ``extra_headers``
may name the session (``x-moai-session``), as over HTTP.

A stream's ``response`` is the HTTP response the server would have answered it with (``openai.Stream.response``):
status 200 and the server's headers, ``x-request-id`` and ``x-moai-model`` among them.

A process forked after using a Mixture (multiprocessing's ``fork`` start method, a pre-loading server) uses it
too: the parent's loop thread does not exist in the child, so the child starts its own on its first call, with
connections, concurrency limits and a telemetry writer of its own. What it inherited stays untouched (closing the
parent's sockets from the child would disturb the parent's calls); a stream opened before the fork raises
``openai.APIConnectionError`` in the child.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import inspect
import math
import os
import queue
import select
import selectors
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel, ValidationError

from moai import deadline

if TYPE_CHECKING:
    from moai.mixture import Mixture, Prepared
    from moai.strategies.executor import Execution

try:  # the openai SDK's own HTTP library: its exceptions want a response object of that type
    import httpx2 as _http  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - older openai releases use httpx
    import httpx as _http  # type: ignore[no-redef]

T = TypeVar("T")
_URL = "http://moai.local/v1/chat/completions"
_DONE = object()
# the OpenAI client's "not sent" markers (Omit is missing from older openai releases)
_UNSENT: tuple[type, ...] = tuple(t for t in (getattr(openai, "NotGiven", None), getattr(openai, "Omit", None))
                                  if isinstance(t, type))

__all__ = ["AsyncChat", "AsyncChunkStream", "Chat", "ChunkStream", "RequestTimeout", "shutdown"]


# ---------------------------------------------------------------- the private loop


class _LoopThread:
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
        self._streams: weakref.WeakSet[ChunkStream | AsyncChunkStream] = weakref.WeakSet()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self.closed:
            raise _shut_down()
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
        self._tasks.add(task)
        try:
            return await coro
        finally:
            self._tasks.discard(task)

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
        if self._thread is not None and threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("the sync API cannot be called from the engine's own loop; use achat")
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise openai.APITimeoutError(_http.Request("POST", _URL)) from None
        except concurrent.futures.CancelledError:  # stopped by shutdown
            raise _shut_down() from None
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
            raise openai.APITimeoutError(_http.Request("POST", _URL)) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.closed and task is not None and not task.cancelling():  # stopped by shutdown, not the caller
                raise _shut_down() from None
            raise

    def close(self, mixture: Mixture, timeout: float = 30) -> None:
        """Refuse new calls, end open streams with an error, stop running calls (recorded as cancelled), then
        close the Mixture's connections and flush its telemetry, and stop the loop."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._home is not None and self._home != os.getpid():
                return  # inherited from the parent and not used here: nothing of this process's to close
            streams = list(self._streams)
        for stream in streams:
            stream._abort(_shut_down())
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
        running = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in running:
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
        streams, self._streams = list(self._streams), weakref.WeakSet()
        for stream in streams:
            stream._orphan(_forked())


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


def _shut_down() -> openai.APIConnectionError:
    """What a call to a Mixture after ``shutdown`` raises: the OpenAI client's error once it is closed."""
    return openai.APIConnectionError(message="this Mixture was shut down (moai.api.shutdown)",
                                     request=_http.Request("POST", _URL))


def _forked() -> openai.APIConnectionError:
    """What a stream opened before ``os.fork()`` raises in the child: its model call runs in the parent."""
    return openai.APIConnectionError(message="this stream was opened before the process forked; its call runs in "
                                     "the parent process only", request=_http.Request("POST", _URL))


_LOOPS: weakref.WeakKeyDictionary[Any, _LoopThread] = weakref.WeakKeyDictionary()
_LOOPS_LOCK = threading.Lock()
_FORKED = False  # this process is a fork of one that had imported this module
# what a forked child inherited and must neither use nor close (nor let be collected: finalizers close sockets)
_INHERITED: list[Any] = []
_KEPT = False  # _INHERITED is immortal
_STORE_HOMES: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()  # store -> process its pool is for


def _loop_for(mixture: Mixture) -> _LoopThread:
    with _LOOPS_LOCK:
        if mixture not in _LOOPS:
            _LOOPS[mixture] = _LoopThread(mixture)
        return _LOOPS[mixture]


_PARK_WAIT_S = 10.0  # how long a fork waits for the loop threads to pause (a first call may import for seconds)
_PARK_MAX_S = 60.0
_parking: list[tuple[_LoopThread, threading.Event, threading.Event]] = []  # runner, parked, release


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
    _keep(registry._providers, registry._limits, mixture._session_slots, mixture._session_lookup_stuck)
    registry._providers, registry._limits = {}, {}  # providers are made again, lazily, on this process's loop
    mixture._session_slots = mixture._session_lookup_stuck = None
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


def shutdown(mixture: Mixture) -> None:
    """Close the Mixture's connections, flush its telemetry and stop its private loop (done at exit anyway).

    Calls still running are stopped and recorded as cancelled, and an open stream raises
    ``openai.APIConnectionError`` at its next chunk. The Mixture is closed for good: every later call raises
    ``openai.APIConnectionError`` at once, as the OpenAI client does after ``close()``. Calling it again does
    nothing."""
    with _LOOPS_LOCK:
        runner = _LOOPS.get(mixture)
        if runner is None:  # never used through this API: nothing of it to close, only later calls to refuse
            _LOOPS[mixture] = runner = _LoopThread(mixture)
            runner.closed = True
    runner.close(mixture)


@atexit.register
def _shutdown_all() -> None:
    """At interpreter exit: close what callers left open (streams included, recorded as cancelled), so pooled
    connections end cleanly and every acknowledged request's telemetry record is written."""
    for mixture in list(_LOOPS.keys()):
        with contextlib.suppress(Exception):
            shutdown(mixture)


# ---------------------------------------------------------------- errors


def status_error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    """The exception the openai client raises for this status, error body and response headers (its text is
    the one it makes from the server's response: the status and the error's message)."""
    from moai.server.openai_schema import error_body

    body = error_body(message, type_, param, code)
    response = _http.Response(status, request=_http.Request("POST", _URL), json=body, headers=headers)
    cls: type[openai.APIStatusError] = {
        400: openai.BadRequestError, 401: openai.AuthenticationError, 403: openai.PermissionDeniedError,
        404: openai.NotFoundError, 409: openai.ConflictError, 422: openai.UnprocessableEntityError,
        429: openai.RateLimitError,
    }.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return cls(f"Error code: {status} - {message}", response=response, body=body["error"])


class RequestTimeout(openai.APITimeoutError):
    """The request ran past ``settings.request_timeout_s``: the OpenAI client's timeout error, carrying the
    error body the server's 504 has (``code == "request_timeout"``)."""

    def __init__(self, timeout_s: float | None) -> None:
        from moai.server.openai_schema import error_body

        body = error_body(deadline.message(timeout_s), "server_error", None, deadline.CODE)["error"]
        openai.APIError.__init__(self, body["message"], _http.Request("POST", _URL), body=body)


async def _timed_out(mixture: Mixture, prep: Prepared, timeout_s: float | None) -> RequestTimeout:
    """Record the request as the server does (failed, 504) and return the error to raise."""

    await deadline.record(mixture, prep, timeout_s)
    return RequestTimeout(timeout_s)


def _translate(e: Exception, request_id: str | None = None) -> Exception:
    """Engine exceptions -> openai exceptions, with the statuses and headers the HTTP server uses."""
    from moai.mixture import BadRequest, UnknownModel
    from moai.providers.base import ProviderError, is_refusal
    from moai.strategies.context import NoEligibleModel
    from moai.strategies.executor import PlanFailed

    ids = {"x-request-id": request_id, "x-moai-request-id": request_id} if request_id else {}
    if isinstance(e, ValidationError):
        from moai.server.openai_schema import validation_message

        message, param = validation_message(e)
        return status_error(400, message, param=param)
    if isinstance(e, UnknownModel):
        return status_error(404, str(e), param="model", code="model_not_found")
    if isinstance(e, BadRequest):
        return status_error(400, str(e), param=e.param, code=e.code, headers=ids)
    if isinstance(e, NoEligibleModel):
        detail = "; ".join(f"{m}: {why}" for m, why in e.excluded.items())
        return status_error(422, f"{e} ({detail})", param="model", code=getattr(e, "code", "no_eligible_model"),
                            headers=ids)
    if isinstance(e, PlanFailed) and is_refusal(e.status):
        return status_error(e.status, f"no model accepts this request: {e}", param=e.param, code=e.code,
                            headers=ids)
    if isinstance(e, PlanFailed) and e.status == 429:  # Retry-After: the OpenAI client backs off and retries
        wait = {"retry-after": str(math.ceil(e.retry_after))} if e.retry_after is not None else {}
        return status_error(429, f"every model of this mix is rate limited: {e}", "rate_limit_error", code=e.code,
                            headers={**ids, **wait})
    if isinstance(e, PlanFailed):
        return status_error(502, f"no model could answer: {e}", "server_error", code="upstream_failed",
                            headers=ids)
    if isinstance(e, ProviderError):
        return status_error(e.status if e.status >= 500 else 502, f"stream failed: {e}", "server_error",
                            headers=ids)
    return e


# ---------------------------------------------------------------- request / response shapes


@functools.cache
def _accepted() -> frozenset[str]:
    """The keyword arguments ``create`` takes: the installed OpenAI client's for ``chat.completions.create``
    (a parameter OpenAI adds is accepted once the client knows it) and the body fields moai reads."""
    from moai.server.openai_schema import ChatCompletionRequest

    sig = inspect.signature(openai.resources.chat.Completions.create)
    names = {n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return frozenset(names | set(ChatCompletionRequest.model_fields))


def _sent(value: Any) -> bool:
    """False for what the OpenAI client leaves out of the body: None, ``NOT_GIVEN``, ``omit``."""
    return value is not None and not isinstance(value, _UNSENT)


def _plain(value: Any) -> Any:
    """``value`` as the JSON the OpenAI client would send: pydantic objects (a returned ``ChatCompletionMessage``
    appended to ``messages``, openai's typed params) dumped as it dumps them, with only the fields they were given."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass
class _Call:
    payload: dict[str, Any]  # the JSON body the OpenAI client would send
    session: str | None  # the x-moai-session header, if extra_headers has it
    timeout: float | None  # the caller's own limit on waiting (``timeout=``)


def _call(where: str, model: Any, messages: Any, stream: Any, timeout: Any, kwargs: dict[str, Any]) -> _Call:
    """Check ``create``'s arguments as the OpenAI client's signature would, and shape the request from them:
    ``extra_body`` merged, unsent values dropped, the session header kept, other transport options dropped."""
    unknown = next((k for k in kwargs if k not in _accepted()), None)
    if unknown is not None:
        raise TypeError(f"{where}() got an unexpected keyword argument {unknown!r}")
    kw = {k: v for k, v in kwargs.items() if _sent(v)}
    extra = kw.pop("extra_body", None) or {}
    headers = kw.pop("extra_headers", None) or {}
    kw.pop("extra_query", None)
    session = next((str(v) for k, v in headers.items() if k.lower() == "x-moai-session" and _sent(v)), None)
    payload = _plain({"model": model, "messages": list(messages), "stream": stream if _sent(stream) else False,
                      **kw, **extra})
    if isinstance(timeout, _http.Timeout):  # the OpenAI client's per-phase limits: waiting is the read one
        timeout = timeout.read
    return _Call(payload, session, float(timeout) if _sent(timeout) else None)


def _usage(ex: Execution) -> dict[str, Any]:
    from moai.server.openai_schema import usage_object

    return usage_object(ex.usage)


def _build(cls: type[T], data: dict[str, Any]) -> T:
    """Validated where the data fits OpenAI's types; constructed leniently where moai says more."""
    try:
        return cls.model_validate(data)  # type: ignore[attr-defined,no-any-return]
    except ValidationError:
        return cls.construct(**data)  # type: ignore[attr-defined,no-any-return]


def completion(mixture: Mixture, prep: Prepared, model: str, ex: Execution) -> ChatCompletion:
    ans = ex.answer
    from moai.server.openai_schema import assistant_message, fingerprint_field

    message = assistant_message(ans)
    data = {"id": prep.id, "object": "chat.completion", "created": int(prep.started), "model": model,
            **fingerprint_field(ex.system_fingerprint),
            "choices": [{"index": 0, "message": message, "finish_reason": ans.finish_reason, "logprobs": None}],
            "usage": _usage(ex), "moai": mixture.summary(prep, ex)}
    return _build(ChatCompletion, data)


async def _prepare(mixture: Mixture, payload: dict[str, Any], session: str | None = None) -> Prepared:
    """Validate and plan; a request refused once its mix is known is recorded, as the server records it."""
    from moai.mixture import UnknownModel
    from moai.server.openai_schema import ChatCompletionRequest

    started = time.time()
    try:
        body = ChatCompletionRequest.model_validate(payload)
    except Exception as e:  # noqa: BLE001 - re-raised as the openai client's exception
        raise _translate(e) from e
    try:
        return mixture.prepare(body, session=session)
    except UnknownModel as e:
        raise _translate(e) from e
    except Exception as e:  # noqa: BLE001
        request_id = await mixture.record_refusal(body, e, session=session, started=started)
        raise _translate(e, request_id) from e


async def _complete(mixture: Mixture, call: _Call) -> ChatCompletion:
    prep = await _prepare(mixture, call.payload, call.session)
    limit = mixture.config.settings.request_timeout_s
    deadline.start(prep, limit)
    try:
        async with asyncio.timeout(limit):
            ex = await mixture.run(prep)
    except TimeoutError:
        raise await _timed_out(mixture, prep, limit) from None
    except Exception as e:  # noqa: BLE001
        raise _translate(e, prep.id) from e
    return completion(mixture, prep, call.payload["model"], ex)


def _request() -> _http.Request:
    return _http.Request("POST", _URL)


async def _response(mixture: Mixture, prep: Prepared, first: Any) -> _http.Response:
    """The response the server opens this stream with (its status and headers: request id, mix, the model whose
    answer streams, the cache's verdict), as ``openai.Stream.response`` has it; the chunks are not its body."""
    from moai.strategies.executor import Execution

    headers = {"content-type": "text/event-stream; charset=utf-8", "x-moai-mix": prep.ctx.mix_name,
               "x-moai-request-id": prep.id, "x-request-id": prep.id}
    if prep.ctx.decision:
        headers["x-moai-model"] = prep.ctx.decision.model
    # the model whose answer streams is known at the first chunk (an aggregator, a reviser: not the gate's pick)
    answering = first.answer if isinstance(first, Execution) else prep.plan.answering()
    if answering is not None and answering.model:
        headers["x-moai-model"] = answering.model
    if mixture.cache.enabled:  # looked up when the stream began: this reads its memo
        look = await mixture.cache.alookup(prep)
        headers["x-moai-cache"] = "hit" if look.status == "semantic" else look.status
    return _http.Response(200, headers=headers, request=_request())


async def _chunks(mixture: Mixture, prep: Prepared, model: str, include_usage: bool) -> AsyncIterator[Any]:
    """The response (see ``_response``), then OpenAI's chunk sequence: role, content/tool-call deltas, finish (with
    ``moai``), [usage]."""
    from moai.providers.base import Delta
    from moai.server.openai_schema import fingerprint_field
    from moai.strategies.executor import Execution

    base = {"id": prep.id, "object": "chat.completion.chunk", "created": int(prep.started), "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> ChatCompletionChunk:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return _build(ChatCompletionChunk, {**base, "choices": [choice], **extra})

    limit = mixture.config.settings.request_timeout_s
    source = deadline.within(mixture.stream(prep), limit, prep)  # the limit covers the whole stream
    try:  # the model's first output (or failure) comes before the role chunk, as the HTTP status does
        first = await anext(source, None)
    except TimeoutError:
        raise await _timed_out(mixture, prep, limit) from None
    except Exception as e:  # noqa: BLE001
        raise _translate(e, prep.id) from e

    async def items() -> AsyncIterator[Any]:
        if first is not None:
            yield first
        async for item in source:
            yield item

    # every chunk names the answering upstream's fingerprint once it is known, as the server's do
    base.update(fingerprint_field(getattr(first, "system_fingerprint", None)))
    yield await _response(mixture, prep, first)
    yield chunk({"role": "assistant", "content": ""})
    try:
        async for item in items():
            if isinstance(item, Execution | Delta):
                base.update(fingerprint_field(item.system_fingerprint))
            if isinstance(item, Execution):
                yield chunk({}, item.answer.finish_reason or "stop", moai=mixture.summary(prep, item))
                if include_usage:
                    yield _build(ChatCompletionChunk, {**base, "choices": [], "usage": _usage(item)})
            elif isinstance(item, Delta) and (item.text or item.tool_calls or item.refusal):
                delta: dict[str, Any] = {}
                if item.text:
                    delta["content"] = item.text
                if item.refusal:
                    delta["refusal"] = item.refusal
                if item.tool_calls:
                    delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(item.tool_calls)]
                yield chunk(delta)
    except TimeoutError:
        raise await _timed_out(mixture, prep, limit) from None
    except Exception as e:  # noqa: BLE001
        raise _translate(e, prep.id) from e


# ---------------------------------------------------------------- streams


def _timeout_error() -> openai.APITimeoutError:
    return openai.APITimeoutError(_http.Request("POST", _URL))


def _cancelled() -> concurrent.futures.Future[None]:
    """A future already done, standing for a call that cannot be stopped from here."""
    fut: concurrent.futures.Future[None] = concurrent.futures.Future()
    fut.cancel()
    return fut


class ChunkStream:
    """Iterator of ``ChatCompletionChunk`` (like ``openai.Stream``); ``close()`` stops the model call, and so do
    dropping it unfinished, Ctrl-C while it waits, and a ``timeout=`` passing with no chunk. ``response`` is the
    response the server would have opened it with (status and headers, e.g. ``x-request-id``)."""

    response: _http.Response

    def __init__(self, runner: _LoopThread, source: AsyncIterator[Any], timeout: float | None = None) -> None:
        q: queue.Queue[Any] = queue.Queue()

        async def pump() -> None:  # holds no reference to the stream, so an abandoned one is collected (and closed)
            try:
                async for item in source:
                    q.put(item)
                q.put(_DONE)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, cancellation included
                q.put(e)

        self._queue = q
        self._timeout = timeout  # the longest wait for any one chunk, as the OpenAI client's read timeout
        self._closed = False
        self._error: BaseException | None = None
        self._head: Any = None
        self.response = _http.Response(200, request=_request())  # until the server's is known (``_ready``)
        self._future = runner.submit(pump())
        runner.track(self)

    def _abort(self, error: BaseException) -> None:
        """End the stream with ``error`` (the Mixture is shutting down); a waiting reader wakes up."""
        self._error = error
        self._queue.put(error)

    def _orphan(self, error: BaseException) -> None:
        """In a forked child: the call runs in the parent, whose queue and future this must not touch (another
        thread may have held their locks at the fork); the next read raises ``error``."""
        self._error, self._head, self._future = error, None, _cancelled()
        self._queue = queue.Queue()
        self._queue.put(error)

    def _get(self, wait: float | None) -> Any:
        try:
            return self._queue.get(timeout=wait)
        except queue.Empty:
            self.close()
            raise _timeout_error() from None
        except BaseException:  # KeyboardInterrupt while waiting: stop the model call
            self.close()
            raise

    def _ready(self, wait: float | None = None) -> ChunkStream:
        """Wait for the first chunk, as OpenAI's client waits for the response's status: a request no model
        could start on raises here (``BadRequestError``, ``InternalServerError``...), not while iterating."""
        item = self._get(wait)
        if isinstance(item, BaseException) and not isinstance(item, asyncio.CancelledError):
            self._closed = True
            raise item
        if isinstance(item, _http.Response):
            self.response = item
        else:
            self._head = item
        return self

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self

    def __next__(self) -> ChatCompletionChunk:
        if self._closed:
            raise StopIteration
        item, self._head = (self._head, None) if self._head is not None else (self._get(self._timeout), None)
        if item is _DONE:
            self._closed = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._closed = True
            if self._error is not None:
                raise self._error
            if isinstance(item, asyncio.CancelledError):
                raise StopIteration
            raise item
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(RuntimeError):  # the loop is already gone: nothing runs any more
                self._future.cancel()

    def __del__(self) -> None:  # abandoned half-way: stop the model call rather than let it run on
        if not getattr(self, "_closed", True):
            self.close()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncChunkStream:
    """Async iterator of ``ChatCompletionChunk`` (like ``openai.AsyncStream``), fed from the private loop;
    ``close()`` / ``aclose()`` stop the model call, and so do dropping it unfinished and a ``timeout=`` passing
    with no chunk. ``response``: as ``ChunkStream``'s."""

    response: _http.Response

    def __init__(self, runner: _LoopThread, source: AsyncIterator[Any], timeout: float | None = None) -> None:
        self._runner = runner
        self._source = source
        self._timeout = timeout
        self._queue: asyncio.Queue[Any] | None = None
        self._caller: asyncio.AbstractEventLoop | None = None
        self._future: concurrent.futures.Future[None] | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._head: Any = None
        self.response = _http.Response(200, request=_request())  # until the server's is known (``_ready``)

    async def _ready(self, wait: float | None = None) -> AsyncChunkStream:
        """Wait for the first chunk (see ``ChunkStream._ready``)."""
        self._queue = self._start()
        item = await self._get(wait)
        if isinstance(item, BaseException) and not isinstance(item, asyncio.CancelledError):
            self._closed = True
            raise item
        if isinstance(item, _http.Response):
            self.response = item
        else:
            self._head = item
        return self

    def _start(self) -> asyncio.Queue[Any]:
        caller = asyncio.get_running_loop()
        q: asyncio.Queue[Any] = asyncio.Queue()
        source = self._source

        def post(item: Any) -> bool:
            try:
                caller.call_soon_threadsafe(q.put_nowait, item)
                return True
            except RuntimeError:  # the caller's loop is closed: nobody will read this stream
                return False

        async def pump() -> None:  # holds no reference to the stream, so an abandoned one is collected (and closed)
            try:
                async for item in source:
                    if not post(item):  # stop the model call at its next step: recorded as cancelled
                        task = asyncio.current_task()
                        if task is not None:
                            task.cancel()
                post(_DONE)
            except BaseException as e:  # noqa: BLE001
                post(e)

        self._caller = caller
        self._future = self._runner.submit(pump())
        self._runner.track(self)
        return q

    def _abort(self, error: BaseException) -> None:
        """End the stream with ``error`` (the Mixture is shutting down); a waiting reader wakes up."""
        self._error = error
        if self._caller is not None and self._queue is not None:
            with contextlib.suppress(RuntimeError):
                self._caller.call_soon_threadsafe(self._queue.put_nowait, error)

    def _orphan(self, error: BaseException) -> None:
        """In a forked child: the call runs in the parent; the next read raises ``error`` (a reader waiting now
        is on the forking thread's loop, if any: the only thread the child has)."""
        self._error, self._head, self._future = error, None, None
        if self._queue is None:
            self._queue = asyncio.Queue()
        with contextlib.suppress(RuntimeError):
            self._queue.put_nowait(error)

    async def _get(self, wait: float | None) -> Any:
        assert self._queue is not None
        if wait is None:
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), wait)
        except TimeoutError:
            await self.aclose()
            raise _timeout_error() from None

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        if self._closed:
            raise StopAsyncIteration
        if self._queue is None:
            self._queue = self._start()
        item, self._head = (self._head, None) if self._head is not None else (await self._get(self._timeout), None)
        if item is _DONE or isinstance(item, BaseException):
            self._closed = True
            if self._error is not None:
                raise self._error
            if item is _DONE or isinstance(item, asyncio.CancelledError):
                raise StopAsyncIteration
            raise item
        return item  # type: ignore[no-any-return]

    def _cancel(self) -> None:
        if not self._closed and self._future is not None:
            with contextlib.suppress(RuntimeError):
                self._future.cancel()
        self._closed = True

    async def aclose(self) -> None:
        self._cancel()

    async def close(self) -> None:
        """``aclose()``, by the name ``openai.AsyncStream`` uses."""
        self._cancel()

    def __del__(self) -> None:  # abandoned half-way: stop the model call rather than let it run on
        if not getattr(self, "_closed", True):
            self._cancel()

    async def __aenter__(self) -> AsyncChunkStream:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


# ---------------------------------------------------------------- the client surface


class _Completions:
    def __init__(self, mixture: Mixture) -> None:
        self._mixture = mixture
        self._runner = _loop_for(mixture)


def _left(timeout: float | None, began: float) -> float | None:
    """What remains of ``timeout=`` for the first chunk: it bounds the wait for the response, as over HTTP."""
    return None if timeout is None else max(0.0, timeout - (time.monotonic() - began))


class Completions(_Completions):
    def create(self, *, model: str, messages: Any, stream: Any = False, timeout: Any = None,
               **kwargs: Any) -> ChatCompletion | ChunkStream:
        """Like ``OpenAI().chat.completions.create``; ``moai={...}`` or ``extra_body={"moai": ...}`` narrow the mix."""
        call = _call("Completions.create", model, messages, stream, timeout, kwargs)
        m, run = self._mixture, self._runner
        if not call.payload["stream"]:
            return run.run(_complete(m, call), call.timeout)
        began = time.monotonic()
        prep = run.run(_prepare(m, call.payload, call.session), call.timeout)
        include = bool((call.payload.get("stream_options") or {}).get("include_usage"))
        return ChunkStream(run, _chunks(m, prep, model, include), call.timeout)._ready(_left(call.timeout, began))


class AsyncCompletions(_Completions):
    async def create(self, *, model: str, messages: Any, stream: Any = False, timeout: Any = None,
                     **kwargs: Any) -> ChatCompletion | AsyncChunkStream:
        """Like ``AsyncOpenAI().chat.completions.create``."""
        call = _call("AsyncCompletions.create", model, messages, stream, timeout, kwargs)
        m, run = self._mixture, self._runner
        if not call.payload["stream"]:
            return await run.arun(_complete(m, call), call.timeout)
        began = time.monotonic()
        prep = await run.arun(_prepare(m, call.payload, call.session), call.timeout)
        include = bool((call.payload.get("stream_options") or {}).get("include_usage"))
        stream = AsyncChunkStream(run, _chunks(m, prep, model, include), call.timeout)
        return await stream._ready(_left(call.timeout, began))


class Chat:
    """``m.chat``: holds ``completions`` as the OpenAI client does."""

    def __init__(self, mixture: Mixture) -> None:
        self.completions = Completions(mixture)


class AsyncChat:
    """``m.achat``: the async twin of ``m.chat``."""

    def __init__(self, mixture: Mixture) -> None:
        self.completions = AsyncCompletions(mixture)

