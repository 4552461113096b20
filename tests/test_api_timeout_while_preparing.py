"""A call given up on by ``timeout=`` while its request is still being prepared (a first call's imports, a slow
gate) is recorded as cancelled, streamed or not: the streamed one used to leave no record at all."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from stub_openai import Script, StubServer
from test_api import HI, config

from moai import Mixture
from moai.api import shutdown
from moai.telemetry.store import TelemetryStore


def rows_within(db: Path, wait_s: float = 5.0) -> list[tuple[str, int, int]]:
    """The requests on record, once there is one (the writer commits in the background)."""
    end = time.monotonic() + wait_s
    while True:
        with sqlite3.connect(db) as c:
            found = c.execute("select status, http_status, stream from requests").fetchall()
        if found or time.monotonic() > end:
            return found
        time.sleep(0.05)


def slow_to_prepare(m: Mixture, seconds: float) -> None:
    """Preparing blocks the engine's loop for ``seconds``, as a first call's imports do."""
    prepare = m.prepare

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return prepare(*args, **kwargs)

    m.prepare = slow  # type: ignore[method-assign]


@pytest.mark.parametrize("how", ["sync", "async"])
@pytest.mark.parametrize("stream", [True, False])  # not streamed: a guard, recorded so already
async def test_a_timeout_while_preparing_is_recorded_as_cancelled(tmp_path: Path, how: str, stream: bool) -> None:
    db = tmp_path / "t.db"
    with StubServer(Script(reply="late", delay_s=1.0)) as stub:
        m = Mixture.from_config(config(tmp_path, stub.url), store=TelemetryStore(f"sqlite:///{db}"))
        try:
            slow_to_prepare(m, 0.6)
            with pytest.raises(openai.APITimeoutError):
                if how == "sync":
                    m.chat.completions.create(model="moai/default", messages=HI, stream=stream, timeout=0.2)
                else:
                    await m.achat.completions.create(model="moai/default", messages=HI, stream=stream, timeout=0.2)
            assert rows_within(db) == [("cancelled", 499, int(stream))]
        finally:
            shutdown(m)
