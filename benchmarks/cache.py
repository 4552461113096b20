"""Response-cache figures: semantic precision/recall on data/paraphrases/pairs.jsonl, and hit latency.

    .venv/bin/python benchmarks/cache.py [--threshold 0.9] [--n 300]

Semantic: for each pair, would a cache holding ``a`` answer ``b``? (cosine of MiniLM embeddings at or above
the threshold, and no look-alike check objecting.) A hit on a non-paraphrase is a wrong answer served,
so precision is the figure that matters; recall is money saved.

Latency of an exact hit, three ways: the cache lookup alone; a whole in-process request (validate, prepare
with the engine's chooser, look up, replay, summary); and over HTTP with the official openai client
against moai's server on loopback. The model behind the first (missing) call is an in-process fake, so
only moai's own work is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from moai.cache import DEFAULT_THRESHOLD, ResponseCache, lookalike
from moai.config import parse_config
from moai.mixture import Mixture
from moai.providers.base import ChatParams, Delta, Provider, Usage
from moai.server.openai_schema import ChatCompletionRequest

DATA = Path(__file__).resolve().parents[1] / "data" / "paraphrases"
PAIRS = DATA / "pairs.jsonl"  # the threshold and the look-alike checks were chosen on these
HELDOUT = DATA / "heldout.jsonl"  # written after both were fixed; measured, never tuned on
CONFIG = """
models:
  fake: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: cloud}
mixes:
  default: {strategy: route, max_tokens: 64}
"""


# ---------------------------------------------------------------- semantic precision / recall


def pr(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, int]:
    tp, fp = int((pred & truth).sum()), int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), fp


def semantic(threshold: float, path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    cache = ResponseCache(mode="semantic")
    a = cache.embed([r["a"] for r in rows])
    t0 = time.perf_counter()
    b = cache.embed([r["b"] for r in rows])
    per_query_ms = (time.perf_counter() - t0) / len(rows) * 1000
    sims = (a * b).sum(1)
    truth = np.array([r["paraphrase"] for r in rows])
    guard = np.array([lookalike(r["a"], r["b"]) is None for r in rows])
    print(f"pairs: {len(rows)} ({truth.sum()} paraphrases, {(~truth).sum()} look-alikes) from {path.name}")
    print(f"embedding (MiniLM int8, batch of {len(rows)}): {per_query_ms:.2f} ms per query")
    print(f"{'threshold':>9}  {'embedding only':>24}  {'+ look-alike checks':>24}")
    for t in (0.80, 0.82, 0.84, 0.85, 0.86, 0.88, 0.90, 0.92, 0.94):
        p1, r1, f1 = pr(sims >= t, truth)
        p2, r2, f2 = pr((sims >= t) & guard, truth)
        mark = "  <- chosen" if abs(t - threshold) < 1e-9 else ""
        print(f"{t:>9.2f}  P={p1:.3f} R={r1:.3f} FP={f1:<3d}  P={p2:.3f} R={r2:.3f} FP={f2:<3d}{mark}")
    p, r, fp = pr((sims >= threshold) & guard, truth)
    print(f"{path.name}: semantic cache at threshold {threshold}: precision {p:.3f}, recall {r:.3f} "
          f"({fp} wrong answers served)")
    wrong = [(float(s), x["a"], x["b"]) for s, x, g in zip(sims, rows, guard, strict=True)
             if s >= threshold and g and not x["paraphrase"]]
    for s, qa, qb in wrong:
        print(f"  false hit {s:.3f}: {qa!r} ~ {qb!r}")


# ---------------------------------------------------------------- exact-hit latency


class FakeModel(Provider):
    """Answers at once: the benchmark times moai, not a model."""

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        yield Delta(text="The boiling point of water at sea level is 100 degrees Celsius.")
        yield Delta(finish_reason="stop", usage=Usage(20, 14))


def engine() -> Mixture:
    m = Mixture(parse_config(CONFIG))
    m.cache = ResponseCache(mode="exact", counter=m.metrics.cache)
    m.registry._providers["fake"] = FakeModel(m.config.models["fake"])  # noqa: SLF001 - benchmark-only injection
    return m


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q))


def report(name: str, ms: list[float]) -> None:
    print(f"{name:<52} p50 {statistics.median(ms):7.3f} ms   p90 {pct(ms, 90):7.3f} ms   (n={len(ms)})")


def latency(n: int) -> None:
    m = engine()
    question = "What is the boiling point of water?"
    payload = {"model": "moai/default", "messages": [{"role": "user", "content": question}]}

    async def request() -> dict[str, Any]:
        prep = m.prepare(ChatCompletionRequest.model_validate(payload))
        ex = await m.run(prep)
        return m.summary(prep, ex)

    async def inprocess() -> tuple[list[float], list[float]]:
        first = await request()
        assert first["cache"] == "miss", first["cache"]
        lookups, whole = [], []
        for _ in range(n):
            prep = m.prepare(ChatCompletionRequest.model_validate(payload))
            t0 = time.perf_counter()
            look = m.cache.lookup(prep)
            lookups.append((time.perf_counter() - t0) * 1000)
            assert look.status == "hit"
        for _ in range(n):
            t0 = time.perf_counter()
            s = await request()
            whole.append((time.perf_counter() - t0) * 1000)
            assert s["cache"] == "hit"
        return lookups, whole

    lookups, whole = asyncio.run(inprocess())
    print(f"chooser: {m.chooser.name}")
    report("exact hit: cache lookup (key + dict)", lookups)
    report("exact hit: whole in-process request (prepare..summary)", whole)
    http(m, payload, n)


def http(m: Mixture, payload: dict[str, Any], n: int) -> None:
    import openai
    import uvicorn

    from moai.server.app import create_app

    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(m.config, mixture=m), host="127.0.0.1", port=port,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        client.chat.completions.create(**payload)  # the answer is cached already, this warms the connection
        ms = []
        for _ in range(n):
            t0 = time.perf_counter()
            raw = client.chat.completions.with_raw_response.create(**payload)
            ms.append((time.perf_counter() - t0) * 1000)
            assert raw.headers["x-moai-cache"] == "hit"
        report("exact hit: over HTTP, official openai client (loopback)", ms)
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--n", type=int, default=300, help="timed requests per latency figure")
    args = ap.parse_args()
    for path in (PAIRS, HELDOUT):
        semantic(args.threshold, path)
        print()
    latency(args.n)


if __name__ == "__main__":
    main()
