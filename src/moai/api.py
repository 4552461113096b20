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
``code`` is the server's, ``request_timeout``.

``create`` takes the OpenAI client's own keyword arguments (read from the installed ``openai``) and moai's
body fields (``moai=``, ``cache=``); anything else is a ``TypeError``, as from the OpenAI client, and may be
sent through ``extra_body``. ``openai.NOT_GIVEN`` and ``openai.omit`` mean "not sent"; ``extra_headers``
may name the session (``x-moai-session``), as over HTTP.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import inspect
import queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import ValidationError

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
    """One event loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or not self._loop.is_running():
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

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

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

    async def arun(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = asyncio.wrap_future(self.submit(coro))
        if timeout is None:
            return await fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise openai.APITimeoutError(_http.Request("POST", _URL)) from None

    def stop(self) -> None:
        with self._lock:
            if self._loop is not None and self._loop.is_running():
                self._loop.call_soon_threadsafe(self._loop.stop)
                if self._thread is not None:
                    self._thread.join(timeout=5)
            self._loop = self._thread = None


_LOOPS: weakref.WeakKeyDictionary[Any, _LoopThread] = weakref.WeakKeyDictionary()
_LOOPS_LOCK = threading.Lock()


def _loop_for(mixture: Mixture) -> _LoopThread:
    with _LOOPS_LOCK:
        if mixture not in _LOOPS:
            _LOOPS[mixture] = _LoopThread()
        return _LOOPS[mixture]


def shutdown(mixture: Mixture) -> None:
    """Close the Mixture's connections, flush its telemetry and stop its private loop (done at exit anyway)."""
    runner = _LOOPS.pop(mixture, None)
    if runner is not None:
        runner.run(mixture.aclose(), timeout=30)
        runner.stop()


@atexit.register
def _shutdown_all() -> None:
    """At interpreter exit: close what callers left open, so pooled connections end cleanly and every
    acknowledged request's telemetry record is written."""
    for mixture in list(_LOOPS.keys()):
        with contextlib.suppress(Exception):
            shutdown(mixture)


# ---------------------------------------------------------------- errors


def status_error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> openai.APIStatusError:
    """The exception the openai client raises for this status and error body."""
    from moai.server.openai_schema import error_body

    body = error_body(message, type_, param, code)
    response = _http.Response(status, request=_http.Request("POST", _URL), json=body)
    cls: type[openai.APIStatusError] = {
        400: openai.BadRequestError, 401: openai.AuthenticationError, 403: openai.PermissionDeniedError,
        404: openai.NotFoundError, 409: openai.ConflictError, 422: openai.UnprocessableEntityError,
        429: openai.RateLimitError,
    }.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return cls(f"Error code: {status} - {body}", response=response, body=body["error"])


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


def _translate(e: Exception) -> Exception:
    """Engine exceptions -> openai exceptions, with the statuses the HTTP server uses."""
    from moai.mixture import BadRequest, UnknownModel
    from moai.providers.base import ProviderError, is_refusal
    from moai.strategies.context import NoEligibleModel
    from moai.strategies.executor import PlanFailed

    if isinstance(e, ValidationError):
        from moai.server.openai_schema import validation_message

        message, param = validation_message(e)
        return status_error(400, message, param=param)
    if isinstance(e, UnknownModel):
        return status_error(404, str(e), "not_found_error", "model", "model_not_found")
    if isinstance(e, BadRequest):
        return status_error(400, str(e), param=e.param, code=e.code)
    if isinstance(e, NoEligibleModel):
        detail = "; ".join(f"{m}: {why}" for m, why in e.excluded.items())
        return status_error(422, f"{e} ({detail})", param="model", code=getattr(e, "code", "no_eligible_model"))
    if isinstance(e, PlanFailed) and is_refusal(e.status):
        return status_error(e.status, f"no model accepts this request: {e}", param=e.param, code=e.code)
    if isinstance(e, PlanFailed) and e.status == 429:
        return status_error(429, f"every model of this mix is rate limited: {e}", "rate_limit_error", code=e.code)
    if isinstance(e, PlanFailed):
        return status_error(502, f"no model could answer: {e}", "server_error", code="upstream_failed")
    if isinstance(e, ProviderError):
        return status_error(e.status if e.status >= 500 else 502, f"stream failed: {e}", "server_error")
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
    payload = {"model": model, "messages": list(messages), "stream": stream if _sent(stream) else False,
               **kw, **extra}
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
        await mixture.record_refusal(body, e, session=session, started=started)
        raise _translate(e) from e


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
        raise _translate(e) from e
    return completion(mixture, prep, call.payload["model"], ex)


async def _chunks(mixture: Mixture, prep: Prepared, model: str, include_usage: bool) -> AsyncIterator[Any]:
    """OpenAI's chunk sequence: role, content/tool-call deltas, finish (with ``moai``), [usage]."""
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
        raise _translate(e) from e

    async def items() -> AsyncIterator[Any]:
        if first is not None:
            yield first
        async for item in source:
            yield item

    # every chunk names the answering upstream's fingerprint once it is known, as the server's do
    base.update(fingerprint_field(getattr(first, "system_fingerprint", None)))
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
        raise _translate(e) from e


# ---------------------------------------------------------------- streams


class ChunkStream:
    """Iterator of ``ChatCompletionChunk`` (like ``openai.Stream``); ``close()`` stops the model call."""

    def __init__(self, runner: _LoopThread, source: AsyncIterator[Any]) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self._task: asyncio.Task[None] | None = None
        self._runner = runner
        ready = threading.Event()

        async def pump() -> None:
            self._task = asyncio.current_task()  # type: ignore[assignment]
            ready.set()
            try:
                async for item in source:
                    self._queue.put(item)
                self._queue.put(_DONE)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, cancellation included
                self._queue.put(e)

        runner.submit(pump())
        ready.wait()
        self._closed = False
        self._head: Any = None

    def _ready(self) -> ChunkStream:
        """Wait for the first chunk, as OpenAI's client waits for the response's status: a request no model
        could start on raises here (``BadRequestError``, ``InternalServerError``...), not while iterating."""
        item = self._queue.get()
        if isinstance(item, BaseException) and not isinstance(item, asyncio.CancelledError):
            self._closed = True
            raise item
        self._head = item
        return self

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self

    def __next__(self) -> ChatCompletionChunk:
        if self._closed:
            raise StopIteration
        item, self._head = (self._head, None) if self._head is not None else (self._queue.get(), None)
        if item is _DONE:
            self._closed = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._closed = True
            if isinstance(item, asyncio.CancelledError):
                raise StopIteration
            raise item
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        if not self._closed and self._task is not None:
            self._runner.loop.call_soon_threadsafe(self._task.cancel)
        self._closed = True

    def __del__(self) -> None:  # abandoned half-way: stop the model call rather than let it run on
        if not getattr(self, "_closed", True):
            self.close()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncChunkStream:
    """Async iterator of ``ChatCompletionChunk`` (like ``openai.AsyncStream``), fed from the private loop."""

    def __init__(self, runner: _LoopThread, source: AsyncIterator[Any]) -> None:
        self._runner = runner
        self._source = source
        self._queue: asyncio.Queue[Any] | None = None
        self._future: concurrent.futures.Future[None] | None = None
        self._closed = False
        self._head: Any = None

    async def _ready(self) -> AsyncChunkStream:
        """Wait for the first chunk (see ``ChunkStream._ready``)."""
        self._queue = self._start()
        item = await self._queue.get()
        if isinstance(item, BaseException) and not isinstance(item, asyncio.CancelledError):
            self._closed = True
            raise item
        self._head = item
        return self

    def _start(self) -> asyncio.Queue[Any]:
        caller = asyncio.get_running_loop()
        q: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for item in self._source:
                    caller.call_soon_threadsafe(q.put_nowait, item)
                caller.call_soon_threadsafe(q.put_nowait, _DONE)
            except BaseException as e:  # noqa: BLE001
                caller.call_soon_threadsafe(q.put_nowait, e)

        self._future = self._runner.submit(pump())
        return q

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        if self._closed:
            raise StopAsyncIteration
        if self._queue is None:
            self._queue = self._start()
        item, self._head = (self._head, None) if self._head is not None else (await self._queue.get(), None)
        if item is _DONE or isinstance(item, asyncio.CancelledError):
            self._closed = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._closed = True
            raise item
        return item  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        if not self._closed and self._future is not None:
            self._future.cancel()
        self._closed = True

    async def __aenter__(self) -> AsyncChunkStream:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


# ---------------------------------------------------------------- the client surface


class _Completions:
    def __init__(self, mixture: Mixture) -> None:
        self._mixture = mixture
        self._runner = _loop_for(mixture)


class Completions(_Completions):
    def create(self, *, model: str, messages: Any, stream: Any = False, timeout: Any = None,
               **kwargs: Any) -> ChatCompletion | ChunkStream:
        """Like ``OpenAI().chat.completions.create``; ``moai={...}`` or ``extra_body={"moai": ...}`` narrow the mix."""
        call = _call("Completions.create", model, messages, stream, timeout, kwargs)
        m, run = self._mixture, self._runner
        if not call.payload["stream"]:
            return run.run(_complete(m, call), call.timeout)
        prep = run.run(_prepare(m, call.payload, call.session), call.timeout)
        include = bool((call.payload.get("stream_options") or {}).get("include_usage"))
        return ChunkStream(run, _chunks(m, prep, model, include))._ready()


class AsyncCompletions(_Completions):
    async def create(self, *, model: str, messages: Any, stream: Any = False, timeout: Any = None,
                     **kwargs: Any) -> ChatCompletion | AsyncChunkStream:
        """Like ``AsyncOpenAI().chat.completions.create``."""
        call = _call("AsyncCompletions.create", model, messages, stream, timeout, kwargs)
        m, run = self._mixture, self._runner
        if not call.payload["stream"]:
            return await run.arun(_complete(m, call), call.timeout)
        prep = await run.arun(_prepare(m, call.payload, call.session), call.timeout)
        include = bool((call.payload.get("stream_options") or {}).get("include_usage"))
        return await AsyncChunkStream(run, _chunks(m, prep, model, include))._ready()


class Chat:
    """``m.chat``: holds ``completions`` as the OpenAI client does."""

    def __init__(self, mixture: Mixture) -> None:
        self.completions = Completions(mixture)


class AsyncChat:
    """``m.achat``: the async twin of ``m.chat``."""

    def __init__(self, mixture: Mixture) -> None:
        self.completions = AsyncCompletions(mixture)

