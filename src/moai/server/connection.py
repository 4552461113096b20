"""The client's side of a request: its body, read within the size limit, and its leaving before the answer is
ready, which stops the work done for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from moai.server.errors import err

T = TypeVar("T")
# seconds a client may take to send its body: one trickling a byte at a time (slowloris) would hold its connection
# and a place among the server's concurrent requests for as long as it liked
BODY_READ_TIMEOUT_S = 30.0


async def read_body(request: Request, limit: int) -> bytes | JSONResponse:
    """The body, or a 413 as soon as it is known to exceed ``limit`` (never buffers more than limit + one chunk), or
    a 408 when it takes longer than ``BODY_READ_TIMEOUT_S`` to arrive."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return err(413, f"request body is {int(declared)} bytes; the limit is {limit}", code="request_too_large")
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT_S):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return err(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")
                parts.append(chunk)
    except TimeoutError:
        return err(408, f"the request body was not received within {BODY_READ_TIMEOUT_S:g}s",
                   code="request_body_timeout", headers={"connection": "close"})
    except ClientDisconnect:  # the client hung up while sending: nobody to answer, nothing to log as an error
        return err(499, "the client closed the connection while sending its request", code="client_closed")
    return b"".join(parts)


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _disconnected(request: Request) -> None:
    """Return once the client has gone away. The body has been read, so the next message the server has for this
    request is its disconnect (a server that repeats an empty body is asked again a little later)."""
    while (await request.receive()).get("type") != "http.disconnect":
        await asyncio.sleep(0.1)


async def unless_gone(request: Request, work: Awaitable[T], on_gone: Callable[[], None] | None = None) -> T:
    """``work``'s result; or, when the client disconnects first, ``work`` cancelled and ClientGone raised. The
    cancellation stops the plan (no further model is called) and the mixture records the request as cancelled
    (499), as for a stream the client leaves mid-answer. ``work`` runs in this task, and only the watch is a task
    of its own, which cancels this one on a disconnect: a second task per request cost ~0.2 ms of the gateway's
    ~3 ms (benchmarks/overhead.py). ``on_gone`` runs before the cancellation, so that whoever records the cancelled
    work knows the client left (a server that is draining would otherwise take the cancellation for its own)."""
    this = asyncio.current_task()
    assert this is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        await _disconnected(request)
        gone = True
        if on_gone is not None:
            on_gone()
        this.cancel()

    watcher = asyncio.create_task(watch())
    watcher.add_done_callback(lambda t: None if t.cancelled() else t.exception())  # retrieved: never logged as lost
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:  # the request's own cancellation (its time limit, the server stopping)
            raise
        this.uncancel()
        raise ClientGone from None
    finally:
        watcher.cancel()
