"""Telemetry at scale: what the hot paths that read the database cost once it holds months of traffic.

    .venv/bin/python benchmarks/db_scale.py [--requests 500000] [--days 90] [--db /tmp/moai-scale.db]

Fills a SQLite database (the default store) with ``--requests`` requests spread over ``--days`` days, two model
calls each (1% of the calls rate limited, a 429), feedback on 5% of them, a tenth of them under one busy API key,
then times, with the database warm:
  refresh     LiveStats.refresh (every ``stats_refresh_s``, 2 s, in each server process): each model's latest calls
  spend       a budgeted key's monthly spend (each request of a key with a budget)
  session     a session's pinned model (each request that names a session)
  report 24h  ``moai report --since 24h`` (load + tables' figures)
  prune       ``moai db prune --older-than 30d``: rows removed, and the time it took
The database is filled once and reused (``--db``); ``--fresh`` fills it again.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, insert, select

from moai.server.auth import period_starts, spend
from moai.telemetry.adapt import LiveStats
from moai.telemetry.records import CallRecord, FeedbackRecord, RequestRecord
from moai.telemetry.report import build_report
from moai.telemetry.retention import prune
from moai.telemetry.store import TelemetryStore

MODELS = [f"model-{i}" for i in range(8)]
BUSY_KEY = "mk_busy"
CHUNK = 20_000


def fill(store: TelemetryStore, n: int, days: int, seed: int = 0) -> None:
    """``n`` requests over the last ``days`` days (oldest first, as a server writes them)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    span = days * 86400
    with Progress() as bar, store.engine.begin() as conn:
        task = bar.add_task("filling", total=n)
        for start in range(0, n, CHUNK):
            reqs, calls, fbs = [], [], []
            for i in range(start, min(n, start + CHUNK)):
                at = now - timedelta(seconds=span * (1 - i / n))
                rid = f"chatcmpl-{uuid.UUID(int=rng.getrandbits(128)).hex}"
                model = rng.choice(MODELS)
                key = BUSY_KEY if rng.random() < 0.1 else f"mk_{rng.randrange(200):04d}"
                reqs.append({"id": rid, "created_at": at, "mix": "default", "strategy": "route", "model": model,
                             "status": "ok", "http_status": 200, "stream": False, "prompt_tokens": 200,
                             "completion_tokens": 300, "latency_ms": 900.0, "ttft_ms": 120.0, "cost_usd": 1e-4,
                             "energy_kwh": 1e-6, "co2_g": 4e-4, "error": None, "decision": {"model": model},
                             "api_key": key, "session": f"s{rng.randrange(n // 20 + 1)}" if rng.random() < 0.3
                             else None})
                t = at.timestamp()
                for step, m in (("route", model), ("answer", model)):
                    luck = rng.random()
                    status = "ok" if luck > 0.03 else "failed" if luck > 0.01 else "rate_limited"
                    calls.append({"request_id": rid, "step": step, "role": "answer", "model": m,
                                  "status": status, "started_at": t,
                                  "ended_at": t + 0.9, "latency_ms": 900.0, "ttft_ms": 120.0, "prompt_tokens": 200,
                                  "completion_tokens": 150, "cost_usd": 5e-5, "energy_kwh": 5e-7, "co2_g": 2e-4,
                                  "error": None, **({"retry_after_s": 30.0} if status == "rate_limited" and
                                                    "retry_after_s" in CallRecord.__table__.c else {})})
                if rng.random() < 0.05:
                    fbs.append({"request_id": rid, "created_at": at, "score": rng.choice((-1.0, 1.0)),
                                "comment": None})
            conn.execute(insert(RequestRecord.__table__), reqs)
            conn.execute(insert(CallRecord.__table__), calls)
            if fbs:
                conn.execute(insert(FeedbackRecord.__table__), fbs)
            bar.advance(task, len(reqs))


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, max) milliseconds over ``repeat`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=500_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--db", default="/tmp/moai-scale.db")
    ap.add_argument("--fresh", action="store_true", help="Fill the database again.")
    ap.add_argument("--no-prune", action="store_true", help="Leave the database as filled (prune changes it).")
    args = ap.parse_args()
    console = Console()
    path = Path(args.db)
    if args.fresh:
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    store = TelemetryStore(f"sqlite:///{path}")
    open_ms = (time.perf_counter() - t0) * 1000
    with store.engine.connect() as conn:
        have = conn.scalar(select(func.count()).select_from(RequestRecord))
    if have == 0:
        fill(store, args.requests, args.days)
        have = args.requests
        t0 = time.perf_counter()
        store = TelemetryStore(f"sqlite:///{path}")
        open_ms = (time.perf_counter() - t0) * 1000
    console.print(f"{have:,} requests in {path} ({path.stat().st_size / 1e6:.0f} MB)")

    now = datetime.now(UTC)
    _, month = period_starts(now)
    stats = LiveStats()
    t0 = time.perf_counter()
    stats.refresh(store)
    first_refresh_ms = (time.perf_counter() - t0) * 1000
    rows: list[tuple[str, str, str]] = [("open + migrate", f"{open_ms:.1f}", "once per process"),
                                        ("first refresh", f"{first_refresh_ms:.1f}", "once per process")]
    for name, fn, repeat, when in (
        ("refresh", lambda: stats.refresh(store), 5, "every 2 s per process"),
        ("spend (month, busy key)", lambda: spend(store, BUSY_KEY, month), 5, "each request of a budgeted key"),
        ("session model", lambda: store.session_model("s7", "default", "mk_0001"), 20, "each request in a session"),
        ("report --since 24h", lambda: build_report(store, now - timedelta(hours=24)).model_rows(), 3, "on demand"),
    ):
        med, worst = timed(fn, repeat)
        rows.append((name, f"{med:.1f} (max {worst:.1f})", when))
    if not args.no_prune:
        t0 = time.perf_counter()
        gone = prune(store, now - timedelta(days=30))
        rows.append((f"prune > 30 d ({gone.requests:,} requests)", f"{(time.perf_counter() - t0) * 1000:.0f}",
                     "on demand / daily"))
    table = Table(title=f"telemetry reads at {have:,} requests")
    for col in ("operation", "ms", "runs"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    store.close()


if __name__ == "__main__":
    sys.exit(main())
