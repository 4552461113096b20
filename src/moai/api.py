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

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from openai.types.chat import ChatCompletion

from moai.api_errors import RequestTimeout
from moai.api_errors import status_error as status_error
from moai.api_loop import loop_for, shutdown
from moai.api_requests import answer, chunks, parse_call, prepare
from moai.api_requests import completion as completion
from moai.api_streams import AsyncChunkStream, ChunkStream

if TYPE_CHECKING:
    from moai.api_loop import LoopThread
    from moai.api_requests import _Call
    from moai.mixture import Mixture

__all__ = ["AsyncChat", "AsyncChunkStream", "Chat", "ChunkStream", "RequestTimeout", "shutdown"]


class _Completions:
    def __init__(self, mixture: Mixture) -> None:
        self._mixture = mixture
        self._runner = loop_for(mixture)


async def _complete(runner: LoopThread, m: Mixture, call: _Call) -> ChatCompletion:
    """Prepare and answer in one task, so that a call given up on while it is prepared is still stopped and
    recorded as cancelled; the request is noted for shutdown (a call answered and recorded returns its answer)."""
    prep = await prepare(m, call.payload, call.session)
    runner.prepared(prep)
    return await answer(m, call, prep)


async def _streamed(runner: LoopThread, m: Mixture, call: _Call) -> AsyncIterator[Any]:
    """A stream's items (see ``chunks``), prepared in the same task as ``_complete``: a ``timeout=`` passing while
    the request is prepared (a first call's imports) stops it and has it recorded, as a plain call's."""
    prep = await prepare(m, call.payload, call.session)
    runner.prepared(prep)
    include = bool((call.payload.get("stream_options") or {}).get("include_usage"))
    async for item in chunks(m, prep, call.payload["model"], include):
        yield item


class Completions(_Completions):
    def create(self, *, model: str, messages: Any, stream: Any = False, timeout: Any = None,
               **kwargs: Any) -> ChatCompletion | ChunkStream:
        """Like ``OpenAI().chat.completions.create``; ``moai={...}`` or ``extra_body={"moai": ...}`` narrow the mix."""
        call = parse_call("Completions.create", model, messages, stream, timeout, kwargs)
        m, run = self._mixture, self._runner
        if not call.payload["stream"]:
            return run.run(_complete(run, m, call), call.timeout)
        # ``timeout=`` bounds the wait for the first chunk, preparing included, as over HTTP
        return ChunkStream(run, _streamed(run, m, call), call.timeout)._ready(call.timeout)


class AsyncCompletions(_Completions):
    async def create(self, *, model: str, messages: Any, stream: Any = False, timeout: Any = None,
                     **kwargs: Any) -> ChatCompletion | AsyncChunkStream:
        """Like ``AsyncOpenAI().chat.completions.create``."""
        call = parse_call("AsyncCompletions.create", model, messages, stream, timeout, kwargs)
        m, run = self._mixture, self._runner
        if not call.payload["stream"]:
            return await run.arun(_complete(run, m, call), call.timeout)
        return await AsyncChunkStream(run, _streamed(run, m, call), call.timeout)._ready(call.timeout)


class Chat:
    """``m.chat``: holds ``completions`` as the OpenAI client does."""

    def __init__(self, mixture: Mixture) -> None:
        self.completions = Completions(mixture)


class AsyncChat:
    """``m.achat``: the async twin of ``m.chat``."""

    def __init__(self, mixture: Mixture) -> None:
        self.completions = AsyncCompletions(mixture)
