"""The whole-request limit (``settings.request_timeout_s``), one implementation for every surface.

The HTTP server answers a request past it with a 504 (or an error event once a stream has started) and the
Python API raises ``openai.APITimeoutError``; both bound the model calls (not the gate's decision) and
record the request as failed with status 504, so a limit behaves the same whichever way moai is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from moai.mixture import Mixture, Prepared

T = TypeVar("T")
STATUS = 504
CODE = "request_timeout"


def message(timeout_s: float | None) -> str:
    """What the client is told."""
    return f"the request did not complete within {timeout_s}s"


async def record(mixture: Mixture, prep: Prepared, timeout_s: float | None) -> None:
    """Store and count the request as failed for running past the limit."""
    await mixture.record_failure(prep, f"request timed out after {timeout_s}s", [], STATUS)


def start(prep: Prepared, timeout_s: float | None) -> None:
    """Note when the request's limit ends, so that the cancellation it causes is told apart from a client
    leaving (`passed`): the request is then recorded once, as timed out, not also as cancelled."""
    prep.deadline = time.monotonic() + timeout_s if timeout_s is not None else None
    prep.plan.deadline = prep.deadline  # its layers of proposers share the time (strategies.stragglers)


def passed(prep: Prepared) -> bool:
    """Whether the request's limit has run out (a cancellation now is the limit's)."""
    return prep.deadline is not None and time.monotonic() >= prep.deadline - 0.01


async def within(items: AsyncIterator[T], timeout_s: float | None, prep: Prepared | None = None) -> AsyncIterator[T]:
    """``items``, raising TimeoutError once ``timeout_s`` has passed in total (checked while waiting only):
    a stream's limit covers all of it, not each wait for the next piece."""
    if prep is not None:
        start(prep, timeout_s)
    if timeout_s is None:
        async for item in items:
            yield item
        return
    deadline = prep.deadline if prep is not None and prep.deadline is not None else time.monotonic() + timeout_s
    it = aiter(items)
    try:
        while True:
            try:
                item = await asyncio.wait_for(anext(it), max(0.0, deadline - time.monotonic()))
            except StopAsyncIteration:
                return
            yield item
    finally:
        with contextlib.suppress(Exception):
            await it.aclose()  # type: ignore[attr-defined]
