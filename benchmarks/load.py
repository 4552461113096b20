"""Load and fault benchmark: concurrent clients through one moai server, bounded in count and time, loopback only.

    .venv/bin/python benchmarks/load.py                       # all scenarios (about 2-3 minutes)
    .venv/bin/python benchmarks/load.py stub kill             # only these
    .venv/bin/python benchmarks/load.py --json out.json llama llama-kill

Scenarios:
  stub        N concurrent clients -> moai -> a fast OpenAI-compatible stub (separate process, raw ASGI on uvicorn
              with uvloop/httptools): throughput, latency, moai's CPU per request, errors, records lost
  kill        the same with two stub providers and ``fallbacks: [backup]``; the primary is SIGKILLed a third of the
              way in: client-visible failures (goal 0), throughput before/after, records lost
  llama       llama.cpp's server (SmolLM2-135M) directly and through moai: added latency and throughput
  llama-kill  llama.cpp as primary with the stub as fallback; llama.cpp is killed mid-generation

"Records lost" = responses acknowledged with 200 whose request id is missing from the telemetry database (SQLite);
it must be 0. Helpers (stub, process control, aiohttp client) live in ``overhead.py``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import (  # noqa: E402
    SMOLLM,
    Proc,
    Result,
    drive,
    one_model_config,
    overhead,
    request_body,
    run,
    start_llama,
    start_moai,
    start_stub,
    workdir,
)

CARD = "provider: openai_compat, model: stub, privacy: private, max_retries: 0, concurrency: 1024"


def lost_records(db: Path, ids: list[str]) -> int:
    """Acknowledged request ids that are not in the telemetry database."""
    found: set[str] = set()
    with sqlite3.connect(db) as conn:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            found |= {r[0] for r in conn.execute(f"select id from requests where id in ({marks})", chunk)}
    return len(set(ids) - found)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(moai: Proc, db: Path, body: bytes, n: int, concurrency: int, max_s: float) -> dict[str, Any]:
    before = cpu_s(moai.proc.pid)
    res = run(drive(moai.url, body, n, concurrency, duration_s=max_s))
    used = cpu_s(moai.proc.pid) - before
    out = res.summary()
    out.update(concurrency=concurrency, moai_cpu_ms_per_req=round(used / max(res.ok, 1) * 1000, 3),
               records_lost=lost_records(db, res.ids))
    return out


def scenario_stub(n: int, levels: list[int], max_s: float, stream: bool) -> dict[str, Any]:
    with workdir() as tmp:
        stub = start_stub(tmp)
        moai, db = start_moai(tmp, one_model_config(stub.url))
        try:
            body = request_body(16, stream)
            run(drive(moai.url, body, 300, 8))  # warm-up: connections, first-call effects
            rows = [measured(moai, db, body, n, c, max_s) for c in levels]
            added = overhead(stub, moai, 1000, 1, body, warmup=100)
        finally:
            moai.stop()
            stub.stop()
    return {"stream": stream, "by_concurrency": rows,
            "added_latency_sequential": {k: added[k] for k in ("added_p50_ms", "added_p99_ms")},
            "direct_p50_ms": added["direct"]["p50_ms"], "via_moai_p50_ms": added["via_moai"]["p50_ms"]}


def _kill_run(moai: Proc, db: Path, victim: Proc, body: bytes, duration_s: float, concurrency: int,
              kill_at: float) -> dict[str, Any]:
    """Drive for ``duration_s``; SIGKILL ``victim`` at ``kill_at`` (fraction of the run)."""
    stamps: list[float] = []
    killed: list[float] = []

    def killer(t0: float) -> None:
        time.sleep(duration_s * kill_at)
        victim.proc.send_signal(signal.SIGKILL)
        killed.append(time.perf_counter())

    t0 = time.perf_counter()
    threading.Thread(target=killer, args=(t0,), daemon=True).start()
    res: Result = run(drive(moai.url, body, None, concurrency, duration_s=duration_s, timeout_s=120,
                            on_tick=stamps.append))
    k = killed[0] if killed else t0 + duration_s
    before = sum(1 for s in stamps if s < k) / max(k - t0, 1e-9)
    after = sum(1 for s in stamps if s >= k) / max(t0 + res.wall_s - k, 1e-9)
    out = res.summary()
    out.update(concurrency=concurrency, killed_after_s=round(k - t0, 2), req_per_s_before_kill=round(before, 1),
               req_per_s_after_kill=round(after, 1), client_failures=res.failed,
               records_lost=lost_records(db, res.ids))
    return out


def scenario_kill(duration_s: float, concurrency: int, stream: bool) -> dict[str, Any]:
    with workdir() as tmp:
        primary, backup = start_stub(tmp, "primary"), start_stub(tmp, "backup")
        config = f"""
models:
  primary: {{{CARD}, endpoint: "{primary.url}", timeout_s: 10}}
  backup: {{{CARD}, endpoint: "{backup.url}", timeout_s: 10, price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
mixes:
  default: {{strategy: route, models: [primary, backup], fallbacks: [backup], weights: {{quality: 0, cost: 1}},
            max_tokens: 16}}
"""
        moai, db = start_moai(tmp, config)
        try:
            body = request_body(16, stream)
            run(drive(moai.url, body, 200, 8))
            out = _kill_run(moai, db, primary, body, duration_s, concurrency, kill_at=1 / 3)
            out["stream"] = stream
            out["answered_by"] = _answered_by(db)
        finally:
            moai.stop()
            primary.stop()
            backup.stop()
    return out


def _answered_by(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {str(m): n for m, n in conn.execute("select model, count(*) from requests group by model")}


def scenario_llama(n: int, concurrency: int, max_tokens: int) -> dict[str, Any]:
    with workdir() as tmp:
        llama = start_llama(tmp, threads=2)
        moai, db = start_moai(tmp, one_model_config(llama.url, max_tokens=max_tokens))
        try:
            body = request_body(max_tokens, False, "Name a colour.")
            seq = overhead(llama, moai, n, 1, body, warmup=2)
            load = measured(moai, db, body, n, concurrency, max_s=120)
        finally:
            moai.stop()
            llama.stop()
    return {"max_tokens": max_tokens, "sequential": seq, "through_moai_concurrent": load}


def scenario_llama_kill(duration_s: float, concurrency: int, stream: bool) -> dict[str, Any]:
    with workdir() as tmp:
        llama, backup = start_llama(tmp, threads=1), start_stub(tmp, "backup")
        config = f"""
models:
  llama: {{{CARD}, endpoint: "{llama.url}", timeout_s: 60}}
  backup: {{{CARD}, endpoint: "{backup.url}", timeout_s: 10, price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
mixes:
  default: {{strategy: route, models: [llama, backup], fallbacks: [backup], weights: {{quality: 0, cost: 1}},
            max_tokens: 24}}
"""
        moai, db = start_moai(tmp, config)
        try:
            body = request_body(24, stream, "Tell me about the sea.")
            run(drive(moai.url, body, 2, 1))
            out = _kill_run(moai, db, llama, body, duration_s, concurrency, kill_at=0.4)
            out["stream"] = stream
            out["answered_by"] = _answered_by(db)
        finally:
            moai.stop()
            llama.stop()
            backup.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", default=["stub", "kill", "llama", "llama-kill"],
                    choices=["stub", "kill", "llama", "llama-kill"])
    ap.add_argument("--n", type=int, default=4000, help="requests per concurrency level (stub)")
    ap.add_argument("--levels", default="1,8,32,64", help="client concurrency levels (stub)")
    ap.add_argument("--max-s", type=float, default=20, help="time cap per level (stub)")
    ap.add_argument("--kill-duration", type=float, default=12, help="seconds of load in the kill scenario")
    ap.add_argument("--kill-concurrency", type=int, default=32)
    ap.add_argument("--stream", action="store_true", help="streamed requests (stub, kill)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    out: dict[str, Any] = {}
    for name in args.scenarios:
        t0 = time.time()
        if name == "stub":
            levels = [int(c) for c in args.levels.split(",")]
            out[name] = scenario_stub(args.n, levels, args.max_s, args.stream)
        elif name == "kill":
            out[name] = scenario_kill(args.kill_duration, args.kill_concurrency, args.stream)
        elif not SMOLLM.exists():
            out[name] = {"skipped": f"{SMOLLM} not found (moai models pull smollm2-135m)"}
        elif name == "llama":
            out[name] = scenario_llama(24, 2, 8)
        else:
            out[name] = scenario_llama_kill(20, 2, args.stream)
        out[name]["scenario_s"] = round(time.time() - t0, 1)
        print(json.dumps({name: out[name]}, indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
