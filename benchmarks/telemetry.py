"""Telemetry figures: write throughput (SQLite, PostgreSQL), latency it adds per request, adaptation speed.

    .venv/bin/python benchmarks/telemetry.py [--records 5000] [--requests 400] [--no-postgres]

PostgreSQL is started on 127.0.0.1 by scripts/postgres.sh (installed if missing) and stopped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from stub_openai import Script, StubServer, free_port  # noqa: E402

from moai.config import parse_config  # noqa: E402
from moai.mixture import Mixture  # noqa: E402
from moai.server.openai_schema import ChatCompletionRequest  # noqa: E402
from moai.telemetry.records import CallRecord, RequestRecord  # noqa: E402
from moai.telemetry.store import TelemetryStore  # noqa: E402
from moai.telemetry.writer import TelemetryWriter  # noqa: E402


def record(i: int) -> RequestRecord:
    r = RequestRecord(id=f"bench-{i}-{time.time_ns()}", mix="default", strategy="route", model="m", status="ok",
                      http_status=200, stream=False, prompt_tokens=20, completion_tokens=50, latency_ms=120.0,
                      cost_usd=1e-5, energy_kwh=1e-6, co2_g=5e-4, decision={"model": "m"})
    r.calls.append(CallRecord(step="answer", role="answer", model="m", status="ok", started_at=1.0, ended_at=1.1,
                              latency_ms=100.0, prompt_tokens=20, completion_tokens=50, cost_usd=1e-5,
                              energy_kwh=1e-6, co2_g=5e-4))
    return r


async def throughput(url: str, n: int) -> float:
    """Records/s through the background writer with many requests in flight (as under load)."""
    writer = TelemetryWriter(TelemetryStore(url))
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(256)

    async def one(i: int) -> None:
        async with sem:
            await writer.write(record(i))

    await asyncio.gather(*(one(i) for i in range(n)))
    rate = n / (time.perf_counter() - t0)
    writer.close()
    return rate


CONFIG = """
models:
  fast: {{provider: openai_compat, endpoint: "{a}", privacy: private, params_b: 8, ttft_s: 0.02, tokens_per_s: 5000}}
  other: {{provider: openai_compat, endpoint: "{b}", privacy: private, params_b: 8, ttft_s: 0.02, tokens_per_s: 5000}}
mixes:
  default: {{strategy: route, weights: {{quality: 1, latency: 2}}}}
"""


def body() -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "moai/default", "messages": [{"role": "user", "content": "hello"}]})


async def added_latency(url: str, n: int) -> tuple[float, float]:
    """p50/p99 of the time a request spends recording itself (awaiting its commit), in ms."""
    with StubServer() as a, StubServer() as b:
        m = Mixture(parse_config(CONFIG.format(a=a.url, b=b.url)), store=TelemetryStore(url))
        costs = []
        for _ in range(n):
            prep = m.prepare(body())
            ex = await m.executor.run(prep.plan)
            t0 = time.perf_counter()
            await m.record(prep, ex)
            costs.append((time.perf_counter() - t0) * 1000)
        await m.aclose()
    costs.sort()
    return statistics.median(costs), costs[int(len(costs) * 0.99) - 1]


async def adaptation(window: int = 10) -> tuple[int, int]:
    """Requests after a slowdown until the slowed model is first avoided, and until its share halves."""
    with StubServer(Script()) as a, StubServer(Script()) as b:
        m = Mixture(parse_config(CONFIG.format(a=a.url, b=b.url)))
        chosen = []
        for _ in range(8):
            ex = await m.run(m.prepare(body()))
            chosen.append(ex.answer.model)
        favourite = max(set(chosen), key=chosen.count)
        (a if favourite == "fast" else b).script.delay_s = 0.3
        after: list[str] = []
        for _ in range(40):
            ex = await m.run(m.prepare(body()))
            after.append(ex.answer.model or "")
        await m.aclose()
    first_avoid = next((i + 1 for i, x in enumerate(after) if x != favourite), len(after))
    halved = next((i + 1 for i in range(len(after))
                   if after[max(0, i + 1 - window):i + 1].count(favourite) <= window // 2 and i + 1 >= window // 2),
                  len(after))
    return first_avoid, halved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="moai-tele-"))
    urls = {"SQLite (WAL)": f"sqlite:///{tmp / 'bench.db'}"}
    pg_dir = tempfile.mkdtemp(prefix="moai-pg-")
    script = ROOT / "scripts" / "postgres.sh"
    if not args.no_postgres:
        out = subprocess.run(["bash", str(script), "start", pg_dir, str(free_port())], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        urls["PostgreSQL"] = out
    try:
        t = Table(title="telemetry")
        for col in ("database", "write throughput (records/s)", "added latency p50 (ms)", "p99 (ms)"):
            t.add_column(col)
        for name, url in urls.items():
            rate = asyncio.run(throughput(url, args.records))
            p50, p99 = asyncio.run(added_latency(url, args.requests))
            t.add_row(name, f"{rate:,.0f}", f"{p50:.3f}", f"{p99:.3f}")
        Console().print(t)
        first, halved = asyncio.run(adaptation())
        Console().print(f"adaptation: after a 300 ms slowdown the slowed model was first avoided at request {first}; "
                        f"its share over the last 10 requests halved by request {halved}")
    finally:
        if not args.no_postgres:
            subprocess.run(["bash", str(script), "stop", pg_dir], check=False, capture_output=True)


if __name__ == "__main__":
    main()
