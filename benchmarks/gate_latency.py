"""Decision latency of a trained gate for one ~200-token query: embedding alone, and embedding + decision.

    .venv/bin/python benchmarks/gate_latency.py --gate DIR [--n 300]

Prints p50/p99 in milliseconds. The encoder is the one the gate was trained with (int8 MatMuls unless the gate
predates them), on ``moai.gate.encoder.default_threads()`` threads.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from moai.gate.store import Gate

QUERY = (
    "A train leaves the station at 9:15 am travelling at 72 km/h. A second train leaves the same station "
    "on a parallel track at 10:05 am travelling at 96 km/h in the same direction. The first train stops for "
    "twelve minutes at an intermediate town 130 km away, then continues at the same speed. At what time does "
    "the second train catch up with the first, and how far from the station are they at that moment? Explain "
    "each step of your reasoning, state any assumptions you make about acceleration and stopping, and then "
    "give the final answer as a clock time and a distance in kilometres, rounded to one decimal place. "
    "Finally, check your answer by computing both trains' positions at the time you found. If the second "
    "train had left ten minutes later, would it still catch up before the first train reaches the terminus "
    "320 km away? Show the inequality you solve and say which train arrives first."
)


@dataclass
class _Price:
    input_per_mtok: float
    output_per_mtok: float


@dataclass
class _Card:
    name: str
    price: _Price
    provider: str = "openai"
    privacy: str = "cloud"
    params_b: float | None = None
    family: str | None = None
    context: int = 32000
    supports_tools: bool = False
    tokens_per_s: float | None = 60.0
    ttft_s: float | None = 0.4
    power_w: float | None = None
    extra: dict = field(default_factory=dict)


def pct(ts: Sequence[float]) -> str:
    a = np.array(ts) * 1000
    return f"p50 {np.percentile(a, 50):.1f} ms, p99 {np.percentile(a, 99):.1f} ms (n={len(a)})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gate", required=True)
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    gate = Gate.load(args.gate)
    names = gate.models[:11]
    cards = {m: _Card(m, _Price(0.2 * (i + 1), 0.6 * (i + 1))) for i, m in enumerate(names)}
    enc = gate.featurizer._enc()
    variant = "int8 MatMuls" if enc.quantized else "float"
    print(f"query: {enc.count_tokens(QUERY)} tokens (encoder window {enc.max_tokens}, {variant}, "
          f"{enc.threads} threads); {len(names)} candidates")
    msgs = [{"role": "user", "content": QUERY}]
    for _ in range(10):
        gate.decide(msgs, cards, "quality=1,cost=0.3")
    emb, full = [], []
    for i in range(args.n):
        q = QUERY + f" ({i})"  # a new text every time: no cache can help
        t0 = time.perf_counter()
        enc.encode([q])
        emb.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        gate.decide([{"role": "user", "content": q}], cards, "quality=1,cost=0.3")
        full.append(time.perf_counter() - t0)
    print("embedding only:        ", pct(emb))
    print("embedding + decision:  ", pct(full))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
