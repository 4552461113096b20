"""uvicorn's HTTP protocol (httptools) with a deadline on every request's headers.

uvicorn times a connection out only while it idles between requests: one that was opened and never sent a byte,
or that trickles its headers, stays open for as long as its client likes, and counts against the server's
``limit_concurrency``, so a thousand such sockets from one unauthenticated client turned every request away with
503, ``/readyz`` included. Here a connection must finish a request's headers within ``headers_timeout_s`` of
opening, or of that request's first byte, else it is closed. (The body has its own deadline: ``connection``.)
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADERS_TIMEOUT_S = 10.0


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol, closing a connection whose request headers are not complete in time."""

    headers_timeout_s = HEADERS_TIMEOUT_S
    _headers_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is closed too

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # each request of a kept-alive connection, from its first byte

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._headers_timer = self.loop.call_later(self.headers_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _headers_late(self) -> None:
        self._headers_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def with_headers_timeout(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn's ``http`` setting, with its own headers deadline."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"headers_timeout_s": seconds})
