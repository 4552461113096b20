"""Sync and async iterators of ``ChatCompletionChunk``, fed from the Mixture's private loop as
``openai.Stream`` and ``openai.AsyncStream`` are fed from the network."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from openai.types.chat import ChatCompletionChunk

from moai.api_errors import http, request, timeout_error

if TYPE_CHECKING:
    from moai.api_loop import LoopThread

_DONE = object()


def _cancelled() -> concurrent.futures.Future[None]:
    """A future already done, standing for a call that cannot be stopped from here."""
    fut: concurrent.futures.Future[None] = concurrent.futures.Future()
    fut.cancel()
    return fut


class ChunkStream:
    """Iterator of ``ChatCompletionChunk`` (like ``openai.Stream``); ``close()`` stops the model call, and so do
    dropping it unfinished, Ctrl-C while it waits, and a ``timeout=`` passing with no chunk. ``response`` is the
    response the server would have opened it with (status and headers, e.g. ``x-request-id``)."""

    response: http.Response

    def __init__(self, runner: LoopThread, source: AsyncIterator[Any], timeout: float | None = None) -> None:
        runner.refuse_own_thread()
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
        self.response = http.Response(200, request=request())  # until the server's is known (``_ready``)
        self._future: concurrent.futures.Future[None] = _cancelled()
        # tracked before it runs: a shutdown beginning meanwhile either ends it or refuses it (``submit`` raises)
        runner.track(self)
        self._future = runner.submit(pump())

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
            raise timeout_error() from None
        except BaseException:  # KeyboardInterrupt while waiting: stop the model call
            self.close()
            raise

    def _ready(self, wait: float | None = None) -> ChunkStream:
        """Wait for the first chunk, as OpenAI's client waits for the response's status: a request no model
        could start on raises here (``BadRequestError``, ``InternalServerError``...), not while iterating."""
        item = self._get(wait)
        _take_first(self, item)
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

    response: http.Response

    def __init__(self, runner: LoopThread, source: AsyncIterator[Any], timeout: float | None = None) -> None:
        self._runner = runner
        self._source = source
        self._timeout = timeout
        self._queue: asyncio.Queue[Any] | None = None
        self._caller: asyncio.AbstractEventLoop | None = None
        self._future: concurrent.futures.Future[None] | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._head: Any = None
        self.response = http.Response(200, request=request())  # until the server's is known (``_ready``)

    async def _ready(self, wait: float | None = None) -> AsyncChunkStream:
        """Wait for the first chunk (see ``ChunkStream._ready``)."""
        self._queue = self._start()
        try:
            item = await self._get(wait)
        except BaseException:  # the caller's task cancelled while it waits: stop the call (recorded as cancelled)
            self._cancel()
            raise
        _take_first(self, item)
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

        self._caller, self._queue = caller, q  # where ``_abort`` puts its error
        self._runner.track(self)  # before it runs, as ``ChunkStream``'s
        self._future = self._runner.submit(pump())
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
            raise timeout_error() from None

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


def _take_first(stream: ChunkStream | AsyncChunkStream, item: Any) -> None:
    """A stream's first item: the error of a request no model could start on is raised (and the stream closed),
    the HTTP response is kept as the stream's, and a first chunk waits for the first iteration."""
    if isinstance(item, BaseException) and not isinstance(item, asyncio.CancelledError):
        stream._closed = True
        raise item
    if isinstance(item, http.Response):
        stream.response = item
    else:
        stream._head = item
