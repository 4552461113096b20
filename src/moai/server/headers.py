"""What every response carries in its headers, whatever the names in the config and whatever the method: header values
HTTP can carry, a request id, and HEAD answered as GET."""

from __future__ import annotations

import uuid
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# kept as they are in a percent-encoded value: what model and mix names usually hold besides letters and digits
HEADER_SAFE = "/:@._-"


def header_value(value: str) -> str:
    """``value`` as a header can carry it: printable ASCII as it is, anything else percent-encoded (UTF-8). Header
    values are Latin-1 bytes on the wire, so a mix named in Chinese failed every response it was named in (a 500
    after the upstream had answered)."""
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe=HEADER_SAFE)


def fresh_request_id() -> str:
    """An id for a response that has no completion id (refused before a request record existed), so that a client
    can still quote one."""
    return f"req-{uuid.uuid4().hex}"


class HeadAsGet:
    """HEAD answered as GET without the body, on every route that serves GET (FastAPI's routes take only the
    methods they name, so probes and link checkers that send HEAD got 405s). The headers, Content-Length included,
    are GET's; a route without GET answers 405 with its Allow header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
