"""The writer replaying a spool left by a long outage while requests keep coming: a replay that takes longer than
``commit_timeout_s`` in all is no hang (each batch is judged on its own), answers do not wait for the whole replay,
and the records they bring queue behind the spooled ones (the last write of a request still wins)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_database_failures import wait_for
from test_store import request

from moai.telemetry import spool as spool_module
from moai.telemetry import writer as writer_module
from moai.telemetry.spool import Spool
from moai.telemetry.store import TelemetryStore
from moai.telemetry.writer import TelemetryWriter


class SlowBatches:
    """Each ``write_replayed`` call takes ``delay_s`` longer (a busy database); the ``hang_at``-th waits for
    ``release`` (a database that stops answering)."""

    def __init__(self, store: TelemetryStore, delay_s: float, hang_at: int | None = None) -> None:
        self.calls = 0
        self.entered, self.hanging, self.release = threading.Event(), threading.Event(), threading.Event()
        real = store.write_replayed

        def call(records: Any) -> Any:
            self.calls += 1
            self.entered.set()
            if self.calls == hang_at:
                self.hanging.set()
                self.release.wait(20)
            time.sleep(delay_s)
            return real(records)

        store.write_replayed = call  # type: ignore[method-assign]


def spooled(folder: Path, n: int) -> Spool:
    """A spool of this process holding ``n`` requests, request 1 as cancelled."""
    first = request(1)
    first.status, first.http_status = "cancelled", 499
    spool = Spool(folder)
    spool.append([first, *(request(i) for i in range(2, n + 1))])
    return spool


async def test_a_replay_longer_than_the_commit_timeout_is_no_hang(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Judged as a whole, a large replay was taken for a hung database, after which every new record went to the
    spool too: it could not drain while traffic lasted."""
    monkeypatch.setattr(spool_module, "REPLAY_BATCH", 100, raising=False)
    store = TelemetryStore(f"sqlite:///{tmp_path / 'a.db'}")
    spool = spooled(tmp_path / "spool", 2000)
    SlowBatches(store, delay_s=0.05)  # 20 batches or more: a second or more in all, each well under the timeout
    writer = TelemetryWriter(store, spool_dir=spool.folder, replay_s=0.05, commit_timeout_s=0.4)
    started = time.monotonic()
    # (a file being replayed is claimed, no longer pending: its last slice may still be running)
    await wait_for(lambda: writer.replayed == 2000 or writer.timeouts > 0, timeout=20)
    assert writer.timeouts == 0 and time.monotonic() - started > 0.4
    assert writer.replayed == 2000 and len(store.requests()) == 2000
    await writer.write(request(2001))  # behind an empty spool: written as usual
    assert writer.spooled == 0 and writer.written == 1
    writer.close()


async def test_answers_do_not_wait_for_a_long_replay_and_their_records_queue_behind_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "REPLAY_BATCH", 50, raising=False)
    monkeypatch.setattr(writer_module, "REPLAY_SLICE_S", 0.1, raising=False)
    store = TelemetryStore(f"sqlite:///{tmp_path / 'b.db'}")
    spool = spooled(tmp_path / "spool", 1500)
    slow = SlowBatches(store, delay_s=0.05)  # 30 batches: a replay of 1.5 s or more
    writer = TelemetryWriter(store, spool_dir=spool.folder, replay_s=0.05, commit_timeout_s=5)
    await asyncio.get_running_loop().run_in_executor(None, slow.entered.wait, 5)
    final = request(1)  # request 1 recorded again, with its final status, while its spooled record waits
    final.status, final.http_status = "error", 504
    waits: list[float] = []
    pending_at_ack: list[bool] = []

    async def answer(rec: Any) -> None:
        t = time.monotonic()
        await asyncio.wait_for(writer.write(rec), 10)
        waits.append(time.monotonic() - t)
        pending_at_ack.append(spool.pending())

    answers = [asyncio.create_task(answer(final))]
    started = time.monotonic()
    while spool.pending():  # requests keep coming (about 100/s) until the spool has drained
        assert time.monotonic() - started < 15, "the spool did not drain while requests kept coming"
        answers.append(asyncio.create_task(answer(request(5000 + len(answers)))))
        await asyncio.sleep(0.01)
    await asyncio.gather(*answers)
    assert pending_at_ack[0] and len(answers) > 50 and max(waits) < 1.0, waits
    rows = {r.id: r for r in store.requests()}
    assert len(rows) == 1500 + len(answers) - 1 and all(len(r.calls) == 1 for r in rows.values())
    assert (rows["chatcmpl-1"].status, rows["chatcmpl-1"].http_status) == ("error", 504)
    assert writer.timeouts == 0
    writer.close()


async def test_a_burst_of_answers_during_a_replay_waits_for_one_slice_not_one_per_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "REPLAY_BATCH", 50, raising=False)
    monkeypatch.setattr(writer_module, "REPLAY_SLICE_S", 0.3, raising=False)
    store = TelemetryStore(f"sqlite:///{tmp_path / 'd.db'}")
    spool = spooled(tmp_path / "spool", 2000)
    slow = SlowBatches(store, delay_s=0.05)  # 40 batches: a replay of 2 s or more
    writer = TelemetryWriter(store, max_batch=8, spool_dir=spool.folder, replay_s=0.05, commit_timeout_s=5)
    await asyncio.get_running_loop().run_in_executor(None, slow.entered.wait, 5)
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(writer.write(request(i)) for i in range(3000, 3200))), 10)
    assert time.monotonic() - started < 1.2 and spool.pending()  # 25 batches of 8: not 25 slices of 0.3 s
    await wait_for(lambda: not spool.pending())
    assert len(store.requests()) == 2200
    writer.close()


async def test_a_batch_that_hangs_mid_replay_is_given_up_on_and_the_rest_stored_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the batch that hangs counts: the replay goes on from there once the database answers again, storing the
    batches written before it, the one that hung (committed late) and the rest once each."""
    monkeypatch.setattr(spool_module, "REPLAY_BATCH", 50, raising=False)
    store = TelemetryStore(f"sqlite:///{tmp_path / 'c.db'}")
    spool = spooled(tmp_path / "spool", 300)
    slow = SlowBatches(store, delay_s=0.0, hang_at=3)
    writer = TelemetryWriter(store, spool_dir=spool.folder, replay_s=0.05, commit_timeout_s=0.3)
    await asyncio.get_running_loop().run_in_executor(None, slow.hanging.wait, 5)
    await wait_for(lambda: writer.timeouts == 1)
    await asyncio.wait_for(writer.write(request(301)), 3)  # spooled while the stuck batch has not returned
    assert writer.spooled == 1
    slow.release.set()
    await wait_for(lambda: not spool.pending())
    rows = {r.id: r for r in store.requests()}
    assert set(rows) == {f"chatcmpl-{i}" for i in range(1, 302)} and all(len(r.calls) == 1 for r in rows.values())
    assert writer.timeouts == 1 and not list(spool.folder.glob("*.bad"))
    writer.close()
