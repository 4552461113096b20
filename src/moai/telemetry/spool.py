"""Records kept on local disk while the telemetry database cannot be reached, written to it once it is back.

An answer the gateway has already paid for should not be thrown away because its record cannot be committed
right now (a PostgreSQL restart, a full disk on the database host): the record is appended to a file of this
process's own, fsynced (the same promise a commit makes), and the answer is sent. The background writer
replays the file as soon as the database takes writes again, in batches of ``REPLAY_BATCH`` requests, one
transaction each, in the order they were spooled (the last write of a request winning, as it does in the
database), so a replay cut short and repeated stores nothing twice. Files left by a process that died are replayed
by whichever live process claims them first (an atomic rename).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from moai.telemetry.database import driver_reason
from moai.telemetry.records import CallRecord, FeedbackRecord, RequestRecord
from moai.telemetry.store import SpooledRequest, as_row, row_of

log = logging.getLogger("moai.telemetry")
MAX_FILE_TRIES = 3  # a spool file that fails this many replays for a reason other than an outage is set aside
# requests per replay transaction: small enough that each commit is as quick as the writer's own (the writer takes
# one that runs past its commit_timeout_s for a hung database), large enough to make bulk statements pay
REPLAY_BATCH = 500
_UNREADABLE = (ValueError, TypeError, KeyError, AttributeError)  # UnicodeDecodeError and JSON errors are ValueErrors
_OUTAGES = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


def is_outage(e: BaseException) -> bool:
    """The database could not be used (down, unreachable, locked, out of space, a damaged file), as opposed to a
    record it refuses (an integrity or data error), which no replay would change. A plain ``DatabaseError`` (none
    of its record-level subclasses) is SQLite's "file is not a database" / "disk image is malformed"."""
    return isinstance(e, _OUTAGES) or type(e) is DatabaseError


def default_spool_dir(url: str) -> Path:
    """Beside a SQLite file (``moai.db.spool/``); for a database server, one folder per URL under ``MOAI_HOME``
    (default ``~/.cache/moai``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        db = Path(parsed.database)
        return db.with_name(db.name + ".spool")
    home = Path(os.environ.get("MOAI_HOME", Path.home() / ".cache" / "moai"))
    return home / "spool" / hashlib.sha256(url.encode()).hexdigest()[:16]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def to_json(rec: RequestRecord) -> str:
    """One request with its calls and feedback, as one line."""
    return json.dumps({"request": _jsonable(as_row(RequestRecord, rec)),
                       "calls": [_jsonable(as_row(CallRecord, c)) for c in rec.calls],
                       "feedback": [_jsonable(as_row(FeedbackRecord, f)) for f in rec.feedback]},
                      ensure_ascii=False, default=str)


def from_json(line: str) -> RequestRecord:
    d = json.loads(line)
    req = dict(d["request"])
    if isinstance(req.get("created_at"), str):
        req["created_at"] = datetime.fromisoformat(req["created_at"])
    rec = RequestRecord(**req)
    rec.calls = [CallRecord(**{k: v for k, v in c.items() if k != "request_id"}) for c in d.get("calls", [])]
    feedback = []
    for f in d.get("feedback", []):
        f = {k: v for k, v in f.items() if k != "request_id"}
        if isinstance(f.get("created_at"), str):
            f["created_at"] = datetime.fromisoformat(f["created_at"])
        feedback.append(FeedbackRecord(**f))
    if feedback:  # left untouched otherwise: replaying over a stored request keeps the ratings it got since
        rec.feedback = feedback
    return rec


def spooled_from_json(line: str) -> SpooledRequest:
    """One spooled line as plain column values (what a replay writes); raises what ``from_json`` raises for a line
    it cannot read."""
    d = json.loads(line)
    if not isinstance(d["request"].get("id"), str):
        raise ValueError("a spooled request without an id")
    return SpooledRequest(row_of(RequestRecord, d["request"]),
                          [row_of(CallRecord, c) for c in d.get("calls", [])],
                          [row_of(FeedbackRecord, f) for f in d.get("feedback", [])])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class Spool:
    """This process's spool file in ``folder``. Appends come from the background writer (or, while a database call
    hangs, from whoever acknowledges for it), replays from one thread at a time; a lock keeps an append from landing
    in a file that a replay has just claimed and read."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / f"spool-{os.getpid()}.jsonl"
        self.rejected = self.folder / f"rejected-{os.getpid()}.jsonl.bad"
        self._lock = threading.Lock()
        self._own_claims: set[Path] = set()  # this process's spool files, claimed for a replay not finished yet
        self._tries: dict[Path, int] = {}  # replays of a file that failed for a reason other than an outage
        self._done: dict[Path, int] = {}  # claimed files replayed in part: the offset up to which they are written
        self._until: float | None = None  # the running replay's deadline (time.monotonic())
        self.cut_short = False  # the last replay stopped at its deadline: claimed records are still waiting

    def append(self, records: Sequence[RequestRecord]) -> None:
        """Durably add ``records`` (fsynced before returning); raises OSError when the disk refuses too."""
        data = "".join(to_json(r) + "\n" for r in records).encode()
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                size = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:  # a write may take only part (a disk nearly full): the rest, or an error
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)  # no torn line left to swallow the next record
                    raise
            finally:
                os.close(fd)

    def _claimable(self) -> list[Path]:
        """Spool files this process may replay: its own, those of processes that are gone, and claimed files
        whose claimant is gone (a replay cut short)."""
        out = []
        for p in sorted(self.folder.glob("*.jsonl")):
            kind, _, rest = p.stem.partition("-")
            pid = rest.split("-")[0]
            if kind not in {"spool", "replay"} or not pid.isdigit():
                continue
            if int(pid) == os.getpid() or not _alive(int(pid)):
                out.append(p)
        return out

    def pending(self) -> bool:
        return self.folder.is_dir() and any(self.folder.glob("*.jsonl"))

    def has_own(self) -> bool:
        """Whether records this process spooled are still waiting (in its file, or in one it claimed). Files of
        other processes it replays do not count: no record of this process can meet an older one there."""
        return self.path.exists() or any(c.exists() for c in list(self._own_claims))

    def replay(self, store: Any, until: float | None = None) -> int:
        """Write every claimable spooled record to ``store`` (its ``write_replayed``, once per batch); returns how
        many requests were new there. A database outage propagates, leaving the claimed file for the next try. Any
        other failure of a file (it cannot be read, its refused records cannot be set aside) does not hold back the
        other files: it is raised once they are done, and a file that fails ``MAX_FILE_TRIES`` times is set aside
        (``<name>.bad``). With ``until`` (a ``time.monotonic()`` deadline) it stops after the batch that passes it
        and says so in ``cut_short``: the next replay goes on from there, so that a large spool does not keep the
        caller from other work for as long as it takes."""
        self.cut_short = False
        if not self.folder.is_dir():
            return 0
        written = 0
        failure: Exception | None = None
        self._until = until
        try:
            for i, p in enumerate(self._claimable()):
                if self.cut_short or (i and self._past_deadline()):
                    self.cut_short = True
                    break
                claimed: Path | None = p
                try:
                    claimed = self._claim(p)
                    if claimed is not None:
                        written += self._replay_claimed(store, claimed)
                except Exception as e:
                    if is_outage(e):
                        raise
                    failure = failure or e
                    self._failed(claimed or p, e)
        finally:
            self._until = None
        if failure is not None:
            raise failure
        return written

    def _past_deadline(self) -> bool:
        return self._until is not None and time.monotonic() >= self._until

    def _claim(self, p: Path) -> Path | None:
        """``p`` renamed to a name of this process (None when another process claimed it first)."""
        if p.stem.startswith(f"replay-{os.getpid()}-"):
            return p
        # named in claim order (replayed in name order: an older claim first, so the last write still wins)
        claimed = self.folder / f"replay-{os.getpid()}-{time.time_ns():020d}.jsonl"
        with self._lock:  # not while an append to this process's file is under way
            try:
                p.rename(claimed)
            except FileNotFoundError:
                return None
            if p == self.path:
                self._own_claims.add(claimed)
        self._tries.pop(p, None)
        return claimed

    def _replay_claimed(self, store: Any, claimed: Path) -> int:
        """Write a claimed file's records batch by batch (from where an earlier replay stopped), then remove it.
        Read as bytes and decoded line by line: a line torn by a crash mid-append (even inside a character) or
        otherwise damaged is set aside, never holding back the rest. Read a batch at a time, so that a spool of any
        size takes no more memory than one batch."""
        written = 0
        with claimed.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(self._done.get(claimed, 0))
            for records, unreadable in _batches(f):
                written += self._write(store, records) if records else 0
                if unreadable:  # once the batch is in (an outage meanwhile would have us read them again)
                    log.error("telemetry spool: %d unreadable line(s) in %s (torn by a crash mid-append?); kept "
                              "in %s", len(unreadable), claimed.name, self.rejected)
                    for raw in unreadable:
                        self._set_aside(raw)
                self._done[claimed] = f.tell()
                if f.tell() < size and self._past_deadline():
                    self.cut_short = True
                    return written
        claimed.unlink()
        self._own_claims.discard(claimed)
        self._tries.pop(claimed, None)
        self._done.pop(claimed, None)
        return written

    def _failed(self, claimed: Path, e: Exception) -> None:
        """Count a replay of ``claimed`` that failed, not for an outage; set it aside after ``MAX_FILE_TRIES``."""
        tries = self._tries[claimed] = self._tries.get(claimed, 0) + 1
        log.error("telemetry spool: %s not replayed (%s: %s), try %d of %d", claimed.name, type(e).__name__,
                  driver_reason(e), tries, MAX_FILE_TRIES)
        if tries < MAX_FILE_TRIES:
            return
        aside = claimed.with_name(claimed.name + ".bad")
        try:
            claimed.rename(aside)
        except OSError as e2:
            log.error("telemetry spool: %s cannot be set aside either (%s)", claimed.name, e2)
            return
        log.error("telemetry spool: %s set aside as %s after %d failed replays", claimed.name, aside.name, tries)
        self._own_claims.discard(claimed)
        self._tries.pop(claimed, None)
        self._done.pop(claimed, None)

    def _set_aside(self, raw: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.rejected.open("ab") as f:
            f.write(raw + b"\n")

    def _write(self, store: Any, chunk: list[tuple[bytes, SpooledRequest]]) -> int:
        """Write a chunk; a record the database refuses (not an outage: it would refuse it on every try) is set
        aside in ``rejected-<pid>.jsonl.bad`` instead of holding back the whole spool for good."""
        try:
            return int(store.write_replayed([rec for _, rec in chunk]))
        except Exception as e:
            if is_outage(e):
                raise
            if len(chunk) > 1:  # find the one it refuses, halving the batch (in order: the last write still wins)
                half = len(chunk) // 2
                return self._write(store, chunk[:half]) + self._write(store, chunk[half:])
            line, rec = chunk[0]
            log.error("telemetry spool: request %s refused by the database (%s); kept in %s", rec.id,
                      type(e).__name__, self.rejected)
            self._set_aside(line)
            return 0


def _batches(f: BinaryIO) -> Iterator[tuple[list[tuple[bytes, SpooledRequest]], list[bytes]]]:
    """The rest of a spool file from its current offset, ``REPLAY_BATCH`` lines at a time: the readable records
    (with their lines) and the unreadable lines. Only whole batches are read, so ``f.tell()`` after one is where
    the next begins."""
    while lines := list(itertools.islice(iter(f.readline, b""), REPLAY_BATCH)):
        records: list[tuple[bytes, SpooledRequest]] = []
        unreadable: list[bytes] = []
        for line in lines:
            raw = line.removesuffix(b"\n")
            if not raw.strip():
                continue
            try:
                records.append((raw, spooled_from_json(raw.decode("utf-8"))))
            except _UNREADABLE:
                unreadable.append(raw)
        yield records, unreadable
