"""Records kept on local disk while the telemetry database cannot be reached, written to it once it is back.

An answer the gateway has already paid for should not be thrown away because its record cannot be committed
right now (a PostgreSQL restart, a full disk on the database host): the record is appended to a file of this
process's own, fsynced (the same promise a commit makes), and the answer is sent. The background writer
replays the file as soon as the database takes writes again, request by request (the last write of a request
winning, as it does in the database), so a replay cut short and repeated stores nothing twice. Files left by a
process that died are replayed by whichever live process claims them first (an atomic rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from moai.telemetry.store import CallRecord, FeedbackRecord, RequestRecord, _row

log = logging.getLogger("moai.telemetry")
_OUTAGES = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


def is_outage(e: BaseException) -> bool:
    """The database could not be used (down, unreachable, locked, out of space), as opposed to a record it
    refuses (an integrity or data error), which no replay would change."""
    return isinstance(e, _OUTAGES)


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
    return json.dumps({"request": _jsonable(_row(RequestRecord, rec)),
                       "calls": [_jsonable(_row(CallRecord, c)) for c in rec.calls],
                       "feedback": [_jsonable(_row(FeedbackRecord, f)) for f in rec.feedback]},
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class Spool:
    """This process's spool file in ``folder``; used from one thread (the background writer's)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / f"spool-{os.getpid()}.jsonl"
        self.rejected = self.folder / f"rejected-{os.getpid()}.jsonl.bad"

    def append(self, records: Sequence[RequestRecord]) -> None:
        """Durably add ``records`` (fsynced before returning); raises OSError when the disk refuses too."""
        self.folder.mkdir(parents=True, exist_ok=True)
        data = "".join(to_json(r) + "\n" for r in records).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
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
        """Whether records this process spooled are still waiting (in its file, or in one it claimed)."""
        return self.path.exists() or (self.folder.is_dir() and any(self.folder.glob(f"replay-{os.getpid()}-*.jsonl")))

    def replay(self, store: Any) -> int:
        """Write every claimable spooled record to ``store``; returns how many requests were new there. A
        database error propagates, leaving the claimed file for the next try."""
        if not self.folder.is_dir():
            return 0
        written = 0
        for p in self._claimable():
            claimed = p if p.stem.startswith(f"replay-{os.getpid()}-") else \
                self.folder / f"replay-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            if claimed != p:
                try:
                    p.rename(claimed)
                except FileNotFoundError:  # another process claimed it first
                    continue
            lines = [ln for ln in claimed.read_text(encoding="utf-8").splitlines() if ln.strip()]
            records: list[tuple[str, RequestRecord]] = []
            for ln in lines:
                try:
                    records.append((ln, from_json(ln)))
                except (ValueError, TypeError, KeyError):  # a line torn by a crash mid-append: nothing to keep
                    continue
            for s in range(0, len(records), 256):
                written += self._write(store, records[s : s + 256])
            claimed.unlink()
        return written

    def _write(self, store: Any, chunk: list[tuple[str, RequestRecord]]) -> int:
        """Write a chunk; a record the database refuses (not an outage: it would refuse it on every try) is set
        aside in ``rejected-<pid>.jsonl.bad`` instead of holding back the whole spool for good."""
        try:
            return int(store.write_replayed([rec for _, rec in chunk]))
        except Exception as e:
            if is_outage(e):
                raise
            if len(chunk) > 1:  # find the one it refuses
                return sum(self._write(store, [one]) for one in chunk)
            line, rec = chunk[0]
            log.error("telemetry spool: request %s refused by the database (%s); kept in %s", rec.id,
                      type(e).__name__, self.rejected)
            with self.rejected.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
            return 0
