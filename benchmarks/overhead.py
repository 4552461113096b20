"""moai's added latency: the same requests sent straight to an OpenAI-compatible endpoint, then through moai.

    .venv/bin/python benchmarks/overhead.py                 # fast stub endpoint (separate process), 1 client
    .venv/bin/python benchmarks/overhead.py --n 2000 --concurrency 4
    .venv/bin/python benchmarks/overhead.py --llama         # llama.cpp's server with SmolLM2 (slow: few requests)

Everything runs on 127.0.0.1: a minimal raw-ASGI stub on uvicorn (uvloop + httptools when installed), moai's real
server as a subprocess (`moai serve`, SQLite telemetry), and an aiohttp client. Added latency is reported as the
difference of percentiles (p50, p99) between the two paths, sequential requests by default so queueing does not
blur it. ``load.py`` imports the helpers here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SMOLLM = Path.home() / ".cache" / "moai" / "models" / "smollm2-135m.gguf"

# ------------------------------------------------------------------------------------------- the fast stub

_COMPLETION = json.dumps({
    "id": "stub-1", "object": "chat.completion", "created": 0, "model": "stub",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "stub answer"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
}).encode()
_CHUNK = {"id": "stub-1", "object": "chat.completion.chunk", "created": 0, "model": "stub"}
_STREAM = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in [
    {**_CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "stub"}}]},
    {**_CHUNK, "choices": [{"index": 0, "delta": {"content": " answer"}}]},
    {**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {**_CHUNK, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}},
]) + b"data: [DONE]\n\n"
_MODELS = b'{"object": "list", "data": [{"id": "stub", "object": "model"}]}'


async def stub_app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                   send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """The smallest OpenAI-compatible endpoint: fixed answers, no validation, no framework."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    if scope["method"] == "GET":
        payload, ctype = _MODELS, b"application/json"
    elif b'"stream": true' in body or b'"stream":true' in body:
        payload, ctype = _STREAM, b"text/event-stream"
    else:
        payload, ctype = _COMPLETION, b"application/json"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def serve_stub(port: int) -> None:
    import uvicorn

    kw: dict[str, Any] = {}
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401

        kw["loop"] = "uvloop"
    with contextlib.suppress(ImportError):
        import httptools  # noqa: F401

        kw["http"] = "httptools"
    uvicorn.run(stub_app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **kw)


# ------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited early with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class Proc:
    name: str
    url: str  # the /v1 base
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_stub(workdir: Path, name: str = "stub") -> Proc:
    port = free_port()
    log = workdir / f"{name}.log"
    with log.open("wb") as f:
        proc = subprocess.Popen([PY, str(Path(__file__).resolve()), "--serve-stub", str(port)], stdout=f,
                                stderr=subprocess.STDOUT)
    p = Proc(name, f"http://127.0.0.1:{port}/v1", proc, log)
    wait_http(p.url + "/models", proc)
    return p


def start_llama(workdir: Path, threads: int = 1) -> Proc:
    port = free_port()
    log = workdir / "llama.log"
    cmd = [PY, "-m", "llama_cpp.server", "--model", str(SMOLLM), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "2048", "--n_threads", str(threads), "--model_alias", "stub"]
    with log.open("wb") as f:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    p = Proc("llama", f"http://127.0.0.1:{port}/v1", proc, log)
    wait_http(p.url + "/models", proc, timeout=180)
    return p


def start_moai(workdir: Path, config: str, env: dict[str, str] | None = None,
               module: str | None = None) -> tuple[Proc, Path]:
    """moai's real server (`moai serve`) with SQLite telemetry; returns it and its database file."""
    port = free_port()
    cfg, db, log = workdir / "mix.yaml", workdir / "moai.db", workdir / "moai.log"
    cfg.write_text(config)
    entry = [module] if module else ["-m", "moai.cli"]
    cmd = [PY, *entry, "serve", "--config", str(cfg), "--port", str(port),
           "--database-url", f"sqlite:///{db}", "--log-level", "warning"]
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    p = Proc("moai", f"http://127.0.0.1:{port}/v1", proc, log)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    return p, db


def one_model_config(endpoint: str, name: str = "m", max_tokens: int = 16) -> str:
    return f"""
models:
  {name}: {{provider: openai_compat, endpoint: "{endpoint}", model: stub, privacy: private, max_retries: 0,
      timeout_s: 60, concurrency: 1024}}
mixes:
  default: {{strategy: route, max_tokens: {max_tokens}}}
"""


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="moai-bench-") as d:
        yield Path(d)


# ------------------------------------------------------------------------------------------- the client


@dataclass
class Result:
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)  # acknowledged (200) responses: their ids
    wall_s: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def pct(self, q: float) -> float:
        return percentile(self.latencies_s, q)

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": dict(self.errors), "req_per_s": round(self.ok / self.wall_s, 1),
                "p50_ms": round(self.pct(50) * 1000, 2), "p99_ms": round(self.pct(99) * 1000, 2),
                "wall_s": round(self.wall_s, 2)}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


def request_body(max_tokens: int = 16, stream: bool = False, prompt: str = "Say hello.") -> bytes:
    """Greedy decoding with a fixed seed, so a real model generates the same tokens on both paths."""
    return json.dumps({"model": "moai/default", "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": max_tokens, "stream": stream, "temperature": 0, "seed": 1}).encode()


async def drive(url: str, body: bytes, n: int | None, concurrency: int, duration_s: float | None = None,
                timeout_s: float = 60, on_tick: Callable[[float], None] | None = None) -> Result:
    """``concurrency`` clients each send requests back to back until ``n`` in total (or ``duration_s``)."""
    import aiohttp

    res = Result()
    remaining = [n if n is not None else 10**12]
    stream = b'"stream": true' in body
    deadline = time.perf_counter() + duration_s if duration_s else None
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:

        async def client() -> None:
            while remaining[0] > 0 and (deadline is None or time.perf_counter() < deadline):
                remaining[0] -= 1
                t0 = time.perf_counter()
                try:
                    async with session.post(url + "/chat/completions", data=body,
                                            headers={"content-type": "application/json"}) as r:
                        raw = await r.read()
                    if r.status != 200:
                        res.error(f"http {r.status}")
                        continue
                    if stream:
                        # an in-band error event (the trace may mention failed attempts: those are fine)
                        if not raw.endswith(b"data: [DONE]\n\n") or b'\ndata: {"error"' in b"\n" + raw:
                            res.error("stream error event")
                            continue
                        first = raw.split(b"\n", 1)[0].removeprefix(b"data: ")
                        res.ids.append(json.loads(first)["id"])
                    else:
                        res.ids.append(json.loads(raw)["id"])
                except (TimeoutError, aiohttp.ClientError) as e:
                    res.error(type(e).__name__)
                    continue
                res.latencies_s.append(time.perf_counter() - t0)
                if on_tick is not None:
                    on_tick(time.perf_counter())

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        res.wall_s = time.perf_counter() - t0
    return res


def run(coro: Awaitable[Result]) -> Result:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    return asyncio.run(coro)  # type: ignore[arg-type]


def overhead(upstream: Proc, moai: Proc, n: int, concurrency: int, body: bytes, warmup: int) -> dict[str, Any]:
    """Alternate direct and through-moai rounds (so drift hits both), then compare their percentiles."""
    run(drive(upstream.url, body, warmup, concurrency))
    run(drive(moai.url, body, warmup, concurrency))
    direct, via = Result(), Result()
    rounds = 4
    for _ in range(rounds):
        for target, acc in ((upstream, direct), (moai, via)):
            r = run(drive(target.url, body, n // rounds, concurrency))
            acc.latencies_s += r.latencies_s
            acc.wall_s += r.wall_s
            for k, v in r.errors.items():
                acc.errors[k] = acc.errors.get(k, 0) + v
    return {
        "requests_each": direct.ok + direct.failed, "concurrency": concurrency,
        "direct": direct.summary(), "via_moai": via.summary(),
        "added_p50_ms": round((via.pct(50) - direct.pct(50)) * 1000, 2),
        "added_p99_ms": round((via.pct(99) - direct.pct(99)) * 1000, 2),
    }


def components(n: int = 2000) -> dict[str, Any]:
    """Per-call wall and CPU cost of the pieces a moai request goes through, measured in isolation on loopback:
    the upstream HTTP client (openai SDK as moai uses it, vs plain httpx and aiohttp), one telemetry record
    (SQLAlchemy ORM, as the writer does it), and one thread hop (asyncio.to_thread, as authentication does it)."""
    import aiohttp
    import httpx
    import openai

    out: dict[str, Any] = {}
    payload = {"model": "stub", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}

    async def timed(name: str, call: Callable[[], Awaitable[Any]]) -> None:
        for _ in range(100):
            await call()
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            await call()
        out[name] = {"wall_us": round((time.perf_counter() - w0) / n * 1e6, 1),
                     "cpu_us": round((time.process_time() - c0) / n * 1e6, 1)}

    async def clients(url: str) -> None:
        sdk = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=60)
        await timed("openai SDK chat.completions.create", lambda: sdk.chat.completions.create(**payload))
        await sdk.close()
        async with httpx.AsyncClient(base_url=url, timeout=60) as hx:
            async def via_httpx() -> Any:
                return (await hx.post("/chat/completions", json=payload)).json()
            await timed("httpx.AsyncClient post + json", via_httpx)
        async with aiohttp.ClientSession() as session:
            async def via_aiohttp() -> Any:
                async with session.post(url + "/chat/completions", json=payload) as r:
                    return await r.json()
            await timed("aiohttp post + json", via_aiohttp)
        await timed("asyncio.to_thread round trip", lambda: asyncio.to_thread(int))

    with workdir() as tmp:
        stub = start_stub(tmp)
        try:
            asyncio.run(clients(stub.url))
        finally:
            stub.stop()
        out.update(_telemetry_costs(tmp, n))
    return out


def _telemetry_costs(tmp: Path, n: int) -> dict[str, Any]:
    from moai.telemetry.records import CallRecord, RequestRecord
    from moai.telemetry.store import TelemetryStore

    store = TelemetryStore(f"sqlite:///{tmp / 'bench.db'}")

    def record(i: int) -> RequestRecord:
        rec = RequestRecord(id=f"r{i}", mix="default", strategy="route", model="m", status="ok", http_status=200,
                            stream=False, prompt_tokens=7, completion_tokens=2, latency_ms=1.0, cost_usd=0.0,
                            energy_kwh=0.0, co2_g=0.0)
        rec.calls.append(CallRecord(step="answer", role="answer", model="m", status="ok", started_at=0.0,
                                    ended_at=0.001, latency_ms=1.0))
        return rec

    out: dict[str, Any] = {}
    for batch in (1, 64):
        count = (n // batch) * batch
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, count, batch):
            store.write_many([record(f"{batch}-{i + j}") for j in range(batch)])  # type: ignore[arg-type]
        out[f"telemetry ORM write_many, batch {batch} (per record)"] = {
            "wall_us": round((time.perf_counter() - w0) / count * 1e6, 1),
            "cpu_us": round((time.process_time() - c0) / count * 1e6, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve-stub", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=2000, help="requests per path (default 2000; llama: 24)")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--stream", action="store_true", help="streamed requests")
    ap.add_argument("--llama", action="store_true", help="llama.cpp's server with SmolLM2 instead of the stub")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--components", action="store_true", help="cost of each piece in isolation (see components())")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.serve_stub:
        serve_stub(args.serve_stub)
        return
    if args.components:
        print(json.dumps(components(), indent=2))
        return
    with workdir() as tmp:
        upstream = start_llama(tmp) if args.llama else start_stub(tmp)
        moai, _db = start_moai(tmp, one_model_config(upstream.url, max_tokens=args.max_tokens))
        try:
            n = args.n if not args.llama or args.n != 2000 else 24
            body = request_body(args.max_tokens, args.stream, "Say hello." if not args.llama else "Name a colour.")
            out = overhead(upstream, moai, n, args.concurrency, body, warmup=4 if args.llama else 200)
        finally:
            moai.stop()
            upstream.stop()
    out["upstream"] = "llama.cpp smollm2-135m" if args.llama else "raw-ASGI stub"
    out["stream"] = args.stream
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
