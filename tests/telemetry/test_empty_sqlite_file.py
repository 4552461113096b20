"""An empty (0-byte) SQLite file is no database: the commands that only read (or change rows of) the telemetry
database refuse it in one line, as they refuse a missing file, and leave it empty; those that create the database
still do."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cli_support import one_line_error
from typer.testing import CliRunner

from moai.cli import app
from moai.telemetry.store import TelemetryStore


@pytest.fixture()
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 0-byte file where a database would be (``touch moai.db``)."""
    monkeypatch.delenv("MOAI_CONFIG", raising=False)
    monkeypatch.delenv("MOAI_DATABASE_URL", raising=False)
    path = tmp_path / "empty.db"
    path.touch()
    return path


@pytest.mark.parametrize("args", [
    ["report"],
    ["keys", "list"],
    ["keys", "revoke", "mk_x"],
    ["keys", "delete", "mk_x"],
    ["feedback", "chatcmpl-x", "1"],
    ["db", "prune", "--older-than", "30d"],
])
def test_read_commands_refuse_an_empty_file_and_leave_it_empty(empty: Path, args: list[str]) -> None:
    """`moai report` said "no requests recorded" and left the file holding the whole schema (106 KB)."""
    r = CliRunner().invoke(app, [*args, "--database-url", f"sqlite:///{empty}"])
    line = one_line_error(r, f"{empty} is an empty file (0 bytes), not a database")
    assert "no requests recorded" not in r.output and "does not exist" not in line
    assert empty.stat().st_size == 0
    assert sorted(p.name for p in empty.parent.iterdir()) == ["empty.db"]  # no -wal, -shm or journal either


def test_keys_create_still_makes_the_database_in_an_empty_file(empty: Path) -> None:
    """Guard: what creates the database (`moai keys create`, like `moai serve`) still does, there too."""
    url = f"sqlite:///{empty}"
    r = CliRunner().invoke(app, ["keys", "create", "--name", "ci", "--database-url", url])
    assert r.exit_code == 0, r.output
    assert empty.stat().st_size > 0
    r = CliRunner().invoke(app, ["keys", "list", "--database-url", url])
    assert r.exit_code == 0 and "ci" in r.output, r.output


def test_what_counts_as_no_database(tmp_path: Path) -> None:
    """Missing and empty are refused; a database, another backend and an in-memory one are not. A 0-byte file with
    a write-ahead log beside it is left to SQLite (a database's pages may still be only in the log)."""
    from moai.telemetry.report import missing_sqlite_file, sqlite_file_problem

    db = tmp_path / "real.db"
    TelemetryStore(f"sqlite:///{db}").close()
    assert sqlite_file_problem(f"sqlite:///{db}") is None and missing_sqlite_file(f"sqlite:///{db}") is None
    gone = tmp_path / "gone.db"
    assert sqlite_file_problem(f"sqlite:///{gone}") == f"{gone} does not exist"
    assert missing_sqlite_file(f"sqlite:///{gone}") == str(gone)
    empty = tmp_path / "empty.db"
    empty.touch()
    assert missing_sqlite_file(f"sqlite:///{empty}") == str(empty)  # `moai route` reads no live statistics there
    logged = tmp_path / "logged.db"
    logged.touch()
    (tmp_path / "logged.db-wal").write_bytes(b"\0" * 32)
    assert sqlite_file_problem(f"sqlite:///{logged}") is None
    for url in ("sqlite://", "sqlite:///:memory:", "postgresql://u@127.0.0.1:9/x"):
        assert sqlite_file_problem(url) is None
    with sqlite3.connect(empty):  # opened and closed without a table: SQLite writes nothing, still empty
        pass
    assert sqlite_file_problem(f"sqlite:///{empty}") == f"{empty} is an empty file (0 bytes), not a database"
