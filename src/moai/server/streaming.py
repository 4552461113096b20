"""A chat completion streamed as Server-Sent Events in OpenAI's chunk format; a failure once the stream has
started is reported in-band, as an error event before [DONE]."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import StreamingResponse
from starlette.types import Receive, Send

from moai import deadline
from moai.mixture import Mixture, Prepared
from moai.providers.base import Delta
from moai.server.auth import DATABASE_UNAVAILABLE, Gatekeeper
from moai.server.errors import public
from moai.server.openai_schema import chunk_delta, error_body, fingerprint_field, usage_object
from moai.server.spend_holds import Hold
from moai.strategies.outcome import Execution


class EventStream(StreamingResponse):
    """A streamed answer that says when its client disconnects, before the stream is stopped for it: the request's
    record must tell a client that left from a stream the server stopped (while it drains, both are cancelled)."""

    def __init__(self, content: AsyncIterator[Any], on_gone: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.on_gone = on_gone

    async def listen_for_disconnect(self, receive: Receive) -> None:
        await super().listen_for_disconnect(receive)  # returns only on the client's disconnect, then the stream stops
        self.on_gone()

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        except OSError:  # servers of ASGI spec 2.4 report a gone client by failing the send
            self.on_gone()
            raise


async def releasing(events: AsyncIterator[Any], keeper: Gatekeeper, hold: Hold) -> AsyncIterator[Any]:
    """A stream that gives its budget hold back once it has ended (finished, failed or cut by the client)."""
    try:
        async for event in events:
            yield event
    finally:
        await asyncio.to_thread(keeper.release, hold)


def _chunk(prep: Prepared, model: str, delta: dict[str, Any], finish: str | None = None,
           **extra: Any) -> str:
    obj = {
        "id": prep.id, "object": "chat.completion.chunk", "created": int(prep.started), "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra,
    }
    return f"data: {json.dumps(obj)}\n\n"


async def prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``first`` (unless None: an empty stream) followed by ``rest``, which is closed when this is."""
    try:
        if first is not None:
            yield first
        async for item in rest:
            yield item
    finally:
        with contextlib.suppress(Exception):
            await rest.aclose()  # type: ignore[attr-defined]


async def sse(mix: Mixture, prep: Prepared, model: str, include_usage: bool, items: AsyncIterator[Any],
               timeout_s: float | None = None) -> AsyncIterator[str]:
    """OpenAI's chunk format: a role chunk, content chunks, a finish chunk, [usage chunk], [DONE].

    ``items`` is the mix's stream (already started: its first item was waited for before the response). Every chunk
    names the answering upstream's ``system_fingerprint`` once it is known, as OpenAI's do."""
    # with include_usage, every chunk but the last carries "usage": null, as OpenAI's do (typed clients expect it)
    nulled: dict[str, Any] = {"usage": None} if include_usage else {}
    finish = "stop"
    try:
        items = aiter(items)
        head = await anext(items, None)  # at hand (waited for already): it tells the role chunk the fingerprint
        fingerprint: str | None = getattr(head, "system_fingerprint", None)
        yield _chunk(prep, model, {"role": "assistant", "content": ""}, **fingerprint_field(fingerprint), **nulled)
        async with contextlib.aclosing(prepend(head, items)) as stream:
            async for item in stream:
                if prep.client_gone:
                    # the client left: stop reading the upstream now (closing the mix's stream records the
                    # request as cancelled, billed what was generated). Sends to a gone client return at once, so
                    # with an upstream this fast the stream's own cancellation might only land after its end
                    return
                if isinstance(item, Execution):
                    fingerprint = item.system_fingerprint or fingerprint
                    fp = fingerprint_field(fingerprint)
                    summary = mix.summary(prep, item)
                    yield _chunk(prep, model, {}, item.answer.finish_reason or finish, moai=summary, **fp, **nulled)
                    if include_usage:
                        obj = {"id": prep.id, "object": "chat.completion.chunk", "created": int(prep.started),
                               "model": model, **fp, "choices": [], "usage": usage_object(item.usage)}
                        yield f"data: {json.dumps(obj)}\n\n"
                elif isinstance(item, Delta):
                    fingerprint = item.system_fingerprint or fingerprint
                    if item.finish_reason:
                        finish = item.finish_reason
                    if item.text or item.tool_calls or item.refusal:
                        delta = chunk_delta(item.text, item.tool_calls, item.refusal)
                        yield _chunk(prep, model, delta, **fingerprint_field(fingerprint), **nulled)
    except TimeoutError:
        await deadline.record(mix, prep, timeout_s)
        body = error_body(deadline.message(timeout_s), "server_error", code=deadline.CODE)
        yield f"data: {json.dumps(body)}\n\n"
    except SQLAlchemyError:  # the answer was sent but could not be recorded
        mix.metrics.observe_database_error("record")
        body = error_body("the gateway's telemetry database is unavailable", "server_error", code=DATABASE_UNAVAILABLE)
        yield f"data: {json.dumps(body)}\n\n"
    except Exception as e:  # noqa: BLE001 - the stream has started: report in-band, as OpenAI does
        status = getattr(e, "status", 502)
        code = "rate_limit_exceeded" if status == 429 else "upstream_failed"
        failed = f"stream failed: {public(str(e), mix.config)}"
        yield f"data: {json.dumps(error_body(failed, 'server_error', code=code))}\n\n"
    yield "data: [DONE]\n\n"
