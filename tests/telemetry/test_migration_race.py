"""Replicas started together on one fresh database all migrate it at once: every one of them must come up."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import create_engine, inspect, text

from moai.telemetry.migrations import current

# each process opens the store only once every process is ready (imports done), so the migrations overlap
CHILD = """
import sys
from moai.telemetry.store import TelemetryStore
print("ready", flush=True)
sys.stdin.readline()
TelemetryStore(sys.argv[1]).close()
"""


def migrate_together(url: str, n: int = 3) -> list[str]:
    """Start ``n`` processes that migrate ``url`` at the same moment; the errors of those that failed."""
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", p.stderr and p.stderr.read()
    for p in procs:  # go
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    errors = []
    for p in procs:
        _, err = p.communicate(timeout=120)
        if p.returncode != 0:
            errors.append(err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}")
    return errors


def assert_migrated(url: str) -> None:
    engine = create_engine(url)
    try:
        assert current(engine) == "0008"
        assert {"requests", "calls", "feedback", "api_keys", "rate_windows"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_replicas_migrating_one_fresh_sqlite_file_at_once_all_start(tmp_path: Path) -> None:
    for i in range(2):  # the race is won by chance now and then: more than one fresh file
        url = f"sqlite:///{tmp_path / f'{i}.db'}"
        assert migrate_together(url) == []
        assert_migrated(url)


def test_replicas_migrating_one_fresh_postgres_database_at_once_all_start(postgres_url: str) -> None:
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        for _ in range(2):
            name = f"t_{uuid.uuid4().hex[:10]}"
            with admin.connect() as c:
                c.execute(text(f"CREATE DATABASE {name}"))
            url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
            assert migrate_together(url) == []  # was: duplicate key value violates ... "pg_type_typname_nsp_index"
            assert_migrated(url)
    finally:
        admin.dispose()
