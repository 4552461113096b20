"""The spool and the writer when things go wrong in other ways than a database that is simply down: a damaged spool
file, a database that hangs, a server that never answers a connection, a SQLite file removed under the server."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_store import broken, request

from moai.telemetry import database
from moai.telemetry import spool as spool_module
from moai.telemetry.database import DatabaseFileGone
from moai.telemetry.spool import MAX_FILE_TRIES, Spool
from moai.telemetry.store import TelemetryStore
from moai.telemetry.writer import TelemetryWriter


def dead_pid() -> int:
    return int(subprocess.check_output(["sh", "-c", "echo $$"]).strip())  # a process that has exited


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------------ a damaged spool


def test_a_line_torn_inside_a_character_is_set_aside_and_the_rest_replayed(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'u.db'}")
    spool = Spool(tmp_path / "spool")
    records = [request(i) for i in range(3)]
    for r in records:
        r.session = "Zoë Ñúñez 東京"
    spool.append(records[:2])
    torn = spool_module.to_json(records[2]).encode()
    torn = torn[: torn.index("東".encode()) + 2]  # cut inside a three-byte character, as a crash mid-append leaves it
    with spool.path.open("ab") as f:
        f.write(torn)
    dead = tmp_path / "spool" / f"spool-{dead_pid()}.jsonl"
    spool.path.rename(dead)  # a process that crashed mid-append; this one claims its file
    Spool(tmp_path / "spool").append([request(7)])
    assert spool.replay(store) == 3
    assert {r.id for r in store.requests()} == {"chatcmpl-0", "chatcmpl-1", "chatcmpl-7"}
    assert store.get("chatcmpl-0").session == "Zoë Ñúñez 東京"
    assert spool.rejected.read_bytes() == torn + b"\n"
    assert not spool.pending() and not spool.has_own()


def test_a_file_that_keeps_failing_is_set_aside_without_holding_back_the_others(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'f.db'}")
    spool = Spool(tmp_path / "spool")
    (tmp_path / "spool" / f"spool-{dead_pid()}.jsonl").mkdir(parents=True)  # a "file" that cannot be read
    spool.append([request(1)])
    with pytest.raises(IsADirectoryError):  # raised, but only once the readable file is in
        spool.replay(store)
    assert {r.id for r in store.requests()} == {"chatcmpl-1"} and not spool.has_own()
    for _ in range(MAX_FILE_TRIES - 1):
        with pytest.raises(IsADirectoryError):
            spool.replay(store)
    assert not spool.pending() and len(list((tmp_path / "spool").glob("replay-*.jsonl.bad"))) == 1
    assert spool.replay(store) == 0


async def test_new_records_go_to_the_database_while_the_spool_cannot_be_replayed(tmp_path: Path) -> None:
    """Records of this process wait on the spool, the database is back, but the spool cannot be read (not an
    outage): new records are written to the database, not sent to the spool behind a replay that keeps failing."""
    store = TelemetryStore(f"sqlite:///{tmp_path / 'q.db'}")
    writer = TelemetryWriter(store, replay_s=0.05)
    good = broken(store, tmp_path)
    await writer.write(request(1))
    assert writer.spooled == 1 and writer.spool.has_own()

    def unreadable(_store: Any, claimed: Path) -> int:
        raise OSError(5, "Input/output error", str(claimed))

    writer.spool._replay_claimed = unreadable  # type: ignore[method-assign]
    store.engine = good
    await wait_for(lambda: writer._replay_failing)
    await writer.write(request(2))
    assert store.get("chatcmpl-2") is not None and writer.spooled == 1
    await wait_for(lambda: not writer.spool.pending())  # set aside after a few tries: nothing waits for it
    assert list(writer.spool.folder.glob("replay-*.jsonl.bad"))
    writer.close()


# ------------------------------------------------------------------------------------ a database that hangs


class Hanging:
    """Makes a store's method wait (as on a paused database server) while ``hang`` is set."""

    def __init__(self, store: TelemetryStore, name: str) -> None:
        self.hang, self.gate, self.entered = threading.Event(), threading.Event(), threading.Event()
        real = getattr(store, name)

        def call(*args: Any) -> Any:
            if self.hang.is_set():
                self.entered.set()
                self.gate.wait(20)
            return real(*args)

        setattr(store, name, call)


async def test_a_write_that_hangs_is_acknowledged_from_the_spool_and_stores_nothing_twice(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'h.db'}")
    spooled: list[int] = []
    writer = TelemetryWriter(store, replay_s=0.05, commit_timeout_s=0.3, on_spool=spooled.append)
    await writer.write(request(0))
    h = Hanging(store, "write_many")
    h.hang.set()
    started = time.monotonic()
    await asyncio.wait_for(writer.write(request(1)), 5)  # acknowledged once the bound has passed
    assert 0.3 <= time.monotonic() - started < 3 and writer.timeouts == 1 and writer.spooled == 1
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(writer.write(request(i)) for i in (2, 3))), 5)
    assert time.monotonic() - started < 0.3  # the database is taken to hang: no waiting again
    assert writer.spooled == 3 and sum(spooled) == 3 and writer.timeouts == 1
    h.hang.clear()
    h.gate.set()  # the stuck write returns and commits after all; the spool then holds that record again
    await wait_for(lambda: not writer.spool.pending())
    await writer.write(request(4))
    rows = {r.id: r for r in store.requests()}
    assert set(rows) == {f"chatcmpl-{i}" for i in range(5)}
    assert [len(r.calls) for r in rows.values()] == [1] * 5  # merged by id: no request or call twice
    assert writer.spooled == 3  # behind an empty spool, written as usual
    writer.close()


async def test_a_replay_that_hangs_does_not_hold_up_new_records(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'p.db'}")
    writer = TelemetryWriter(store, replay_s=0.05, commit_timeout_s=0.3)
    good = broken(store, tmp_path)
    await writer.write(request(1))
    h = Hanging(store, "write_replayed")
    h.hang.set()
    store.engine = good
    await asyncio.get_running_loop().run_in_executor(None, h.entered.wait, 5)  # a replay is stuck
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(writer.write(request(i)) for i in (2, 3))), 5)
    assert time.monotonic() - started < 3 and writer.spooled == 3
    h.hang.clear()
    h.gate.set()
    await wait_for(lambda: not writer.spool.pending())
    assert {r.id for r in store.requests()} == {"chatcmpl-1", "chatcmpl-2", "chatcmpl-3"}
    writer.close()


def test_closing_while_a_write_hangs_returns_once_it_is_spooled(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'c.db'}")
    writer = TelemetryWriter(store, commit_timeout_s=0.3)
    h = Hanging(store, "write_many")
    h.hang.set()
    fut = writer.submit(request(1))
    started = time.monotonic()
    writer.close(timeout=10)
    assert time.monotonic() - started < 3 and fut.result(0) is None and writer.spooled == 1
    h.gate.set()


def test_a_postgresql_server_that_never_answers_fails_to_connect_in_bounded_time(monkeypatch: Any) -> None:
    monkeypatch.setattr(database, "PG_CONNECT_TIMEOUT_S", 2)
    with socket.socket() as listener:  # accepts TCP connections (the kernel does), never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        store = TelemetryStore(f"postgresql+psycopg://moai:x@127.0.0.1:{port}/moai", migrate=False)
        started = time.monotonic()
        with pytest.raises(Exception) as e:
            store.engine.connect().close()
        assert time.monotonic() - started < 6
        assert spool_module.is_outage(e.value)
        store.close()


# ---------------------------------------------------------------------------- a SQLite file removed


async def test_a_sqlite_database_whose_folder_is_removed_is_an_outage(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    store = TelemetryStore(f"sqlite:///{folder / 'moai.db'}")
    writer = TelemetryWriter(store)
    await writer.write(request(0))
    shutil.rmtree(folder)
    with pytest.raises(DatabaseFileGone):
        store.check_file()
    await writer.write(request(1))  # not written into the deleted file: kept on the spool
    assert writer.spooled == 1 and writer.written == 1
    assert list((folder / "moai.db.spool").glob("spool-*.jsonl"))
    writer.close()


def test_a_sqlite_file_put_back_in_place_is_used(tmp_path: Path) -> None:
    db = tmp_path / "moai.db"
    store = TelemetryStore(f"sqlite:///{db}")
    store.write(request(0))
    store.engine.dispose()
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)
    os.replace(copy, db)  # a different file (a restored backup) in its place
    store.write(request(1))
    assert {r.id for r in TelemetryStore(f"sqlite:///{db}").requests()} == {"chatcmpl-0", "chatcmpl-1"}


async def test_a_damaged_sqlite_file_is_an_outage_and_records_are_spooled(tmp_path: Path) -> None:
    """"file is not a database" is the database being unusable, not a record it refuses: the record is kept on
    the spool for when the file is repaired or replaced, never refused."""
    db = tmp_path / "moai.db"
    store = TelemetryStore(f"sqlite:///{db}")
    writer = TelemetryWriter(store)
    await writer.write(request(0))
    store.engine.dispose()
    with db.open("r+b") as fh:  # the header and the first pages overwritten
        fh.write(os.urandom(8192))
    await writer.write(request(1))
    assert writer.spooled == 1 and writer.written == 1
    assert list((tmp_path / "moai.db.spool").glob("spool-*.jsonl"))
    writer.close()


# ------------------------------------------------------------------------------------------ after close


async def test_a_record_written_after_close_is_spooled_not_left_waiting(tmp_path: Path) -> None:
    """A call still running when its Mixture closed records its answer after the writer stopped: nothing drains
    the queue any more, so the answer waited for ever. Its record goes to the spool, for the next process."""
    store = TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")
    writer = TelemetryWriter(store, spool_dir=tmp_path / "spool")
    await writer.write(request(1))
    writer.close()
    await asyncio.wait_for(writer.write(request(2)), 5)  # acknowledged, not waiting for ever
    writer.submit(request(3)).result(5)
    assert [r.id for r in store.requests()] == ["chatcmpl-1"]
    assert writer.spooled == 2 and writer.spool.pending()
    later = TelemetryWriter(store, spool_dir=tmp_path / "spool", replay_s=0.05)
    await wait_for(lambda: len(store.requests()) == 3)
    later.close()
