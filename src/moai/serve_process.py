"""How ``moai serve`` runs uvicorn: its address and log level checked before start-up, moai's log lines beside
uvicorn's, a concurrency limit within the open-file limit, and a shutdown that drains on every stop signal and
answers the requests it stops.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from moai.cli_common import fail


def log_to_stderr(level: str) -> None:
    """moai's own log lines (a live tuner's changes, errors before any model ran) beside uvicorn's: uvicorn
    configures only its loggers, so records of the ``moai`` loggers were dropped."""
    import logging

    logger = logging.getLogger("moai")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper() if level.upper() in logging.getLevelNamesMapping() else "INFO")


def check_log_level(level: str) -> str:
    """An unknown --log-level is one line before start-up, not uvicorn's KeyError once the banner is printed."""
    from uvicorn.config import LOG_LEVELS

    if level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)} (got {level!r})")
    return level.lower()


def check_listen(host: str, port: int) -> None:
    """Fail in one line, before start-up work, when the address cannot be listened on (a server already there)."""
    import socket

    try:
        socket.create_server((host, port)).close()  # SO_REUSEADDR, as uvicorn binds
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}")


def default_concurrency(cap: int = 1000) -> int:
    """``cap``, or half the soft open-file limit when lower: each request in flight holds its client's socket and
    often an upstream one, and a server out of descriptors fails every connection, health checks included."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # no such limit here (Windows)
        return cap
    return cap if soft == resource.RLIM_INFINITY else max(1, min(cap, soft // 2))


_SHUTDOWN_FINISH_S = 2.0  # how long the app's shutdown waits for the requests just stopped to record themselves


def draining(run: Callable[[], None]) -> None:
    """``run`` uvicorn so that SIGHUP drains like SIGTERM, and a drained server exits 0.

    uvicorn handles only SIGINT and SIGTERM: SIGHUP (a closed terminal, ``kill -HUP``) killed the process at once,
    with nothing recorded; it is passed on as SIGTERM. Once drained, uvicorn puts back the handlers it found and
    raises the signal again, and SIGTERM's default action made the exit status 143, which Docker and Kubernetes
    show as a failure: the handlers it finds here take that signal and do nothing.
    """
    import signal

    def drained(_sig: int, _frame: Any) -> None:
        """The signal uvicorn raises again after its shutdown: the shutdown is done."""

    def hangup(_sig: int, _frame: Any) -> None:
        signal.raise_signal(signal.SIGTERM)

    wanted: dict[int, Any] = {signal.SIGINT: drained, signal.SIGTERM: drained}
    if hasattr(signal, "SIGHUP"):  # not on Windows
        wanted[signal.SIGHUP] = hangup
    try:
        before = {sig: signal.signal(sig, handler) for sig, handler in wanted.items()}
    except ValueError:  # not the main thread: the signals are not this code's to handle
        run()
        return
    try:
        run()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


class Stoppable:
    """ASGI wrapper for the requests uvicorn stops as it shuts down (the graceful timeout, a second Ctrl+C).

    uvicorn cancels a request's task only then, and answered it "500 Internal Server Error" in plain text (or cut
    a stream) and logged a traceback per request. Here a request not answered yet gets 503 in OpenAI's error
    format, and a stream an error event and [DONE]; the mixture has recorded it as cancelled by then. The app's
    shutdown, which writes the telemetry queue, first waits for those requests.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.running: set[asyncio.Task[Any]] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        if task is None or scope["type"] not in ("http", "lifespan"):
            await self.app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive, task), send)
        else:
            await self._request(scope, receive, send, task)

    async def _request(self, scope: dict[str, Any], receive: Any, send: Any, task: asyncio.Task[Any]) -> None:
        state = {"started": False, "stream": False, "done": False}

        async def tracked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                ctype = dict(message.get("headers") or []).get(b"content-type", b"")
                state.update(started=True, stream=ctype.startswith(b"text/event-stream"))
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["done"] = True
            await send(message)

        self.running.add(task)
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if state["done"]:
                raise
            task.uncancel()
            await self._stopped(send, state, (scope.get("state") or {}).get("moai_request_id"))
        finally:
            self.running.discard(task)

    @staticmethod
    async def _stopped(send: Any, state: dict[str, bool], request_id: str | None) -> None:
        """Tell the client the shutdown stopped its request (503: another replica may answer it), with the id it
        was recorded under when it got that far, else a fresh one to quote (as every chat answer carries one)."""
        from moai.server.headers import fresh_request_id
        from moai.server.openai_schema import error_body

        body = json.dumps(error_body("the server is shutting down; retry the request", "server_error",
                                     code="server_shutting_down"))
        if not state["started"]:
            ids = [(b"x-request-id", request_id.encode()), (b"x-moai-request-id", request_id.encode())
                   ] if request_id else [(b"x-request-id", fresh_request_id().encode())]
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"), *ids]})
            await send({"type": "http.response.body", "body": body.encode()})
        elif state["stream"]:
            await send({"type": "http.response.body", "body": f"data: {body}\n\ndata: [DONE]\n\n".encode()})
        # another response already begun stays cut (uvicorn closes the connection): no end is made up for it

    def _lifespan_receive(self, receive: Any, task: asyncio.Task[Any]) -> Any:
        started = False

        async def wrapped() -> Any:
            nonlocal started
            try:
                message = await receive()
            except asyncio.CancelledError:
                if not started:
                    raise
                # a forced quit skips the shutdown event and cancels this task as the loop closes: shut down all
                # the same (the app's shutdown ran then too, but as a failure, with a traceback)
                task.uncancel()
                message = {"type": "lifespan.shutdown"}
            started = started or message.get("type") == "lifespan.startup"
            if message.get("type") == "lifespan.shutdown" and self.running:
                await asyncio.wait(list(self.running), timeout=_SHUTDOWN_FINISH_S)
            return message

        return wrapped
