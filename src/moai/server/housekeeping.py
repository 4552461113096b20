"""The server's background work while it runs: other replicas' statistics pulled from the database, the key table
re-read, and requests older than ``settings.retention_days`` deleted."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from moai.mixture import Mixture
from moai.server.auth import Gatekeeper
from moai.telemetry.store import TelemetryStore

log = logging.getLogger("moai.server")
RETENTION_EVERY_S = 3600.0  # settings.retention_days: how often old requests are deleted


async def refresh_forever(mix: Mixture, every_s: float) -> None:
    """Pull the shared statistics (other replicas' calls and feedback) from the database periodically."""
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(Exception):  # a database hiccup must not stop adaptation for good
            await mix.refresh_stats()


async def read_keys_forever(keeper: Gatekeeper) -> None:
    """Re-read the key table every ``keeper.refresh_s`` whether requests come or not: a key revoked or created on
    another replica counts within that time, and the key set a database outage finds is that fresh, so its grace
    runs from the outage (read only when requests came, it ran from the last request: none after an idle spell)."""
    while True:
        await asyncio.sleep(keeper.refresh_s)
        with contextlib.suppress(Exception):  # counted and logged by the keeper; the next round tries again
            await asyncio.to_thread(keeper.refresh)


async def retain_forever(store: TelemetryStore, days: float, every_s: float = RETENTION_EVERY_S) -> None:
    """``settings.retention_days``: delete old requests now and then every ``every_s``, off the event loop. A
    failure (the database down) is logged and tried again at the next round."""
    from moai.telemetry.retention import retain

    while True:
        try:
            gone, before = await asyncio.to_thread(retain, store, days)
            if gone.requests:
                log.info("retention: deleted %d requests (%d calls, %d feedback rows) older than %s",
                         gone.requests, gone.calls, gone.feedback, f"{before:%Y-%m-%d %H:%M} UTC")
        except Exception as e:  # noqa: BLE001 - retention must never take the server down
            log.warning("retention: could not delete old requests: %s", e)
        await asyncio.sleep(every_s)
