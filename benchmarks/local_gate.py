"""The embedded default's gate on the local zoo: held-out accuracy and latency vs always-one-model.

Splits data/local-zoo records 80/20 (seeded, whole records), trains a gate on the 80%, picks the latency
weight on the training part (the smallest weight whose in-sample accuracy stays within 2 points of the
best single model), then reports on the held-out 20%: accuracy and mean measured latency of the gate's
choices against always-1.5B, always-0.5B and always-SmolLM.

    .venv/bin/python benchmarks/local_gate.py [--data data/local-zoo/records.jsonl] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from moai.bench.datasets import load_records
from moai.config import Weights, load_config
from moai.gate.runtime import GateChooser
from moai.gate.store import train_gate

WEIGHTS = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0]


def latencies(path: Path) -> dict[str, dict[str, float]]:
    """Measured per-model latency (ms) by record id (the loader keeps scores; latency is read here)."""
    out = {}
    for line in path.open():
        if line.strip():
            r = json.loads(line)
            out[r["id"]] = r.get("latency_ms", {})
    return out


def evaluate(chooser: GateChooser, records: list[Any], lat: dict[str, dict[str, float]], cards: list[Any],
             weight: float) -> dict[str, float]:
    w = Weights(quality=1.0, latency=weight)
    acc, ms = [], []
    for r in records:
        d = chooser.decide(r.messages, cards, w)
        acc.append(r.scores[d.model])
        ms.append(lat[r.id][d.model])
    return {"accuracy": statistics.fmean(acc), "latency_ms": statistics.fmean(ms)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/local-zoo/records.jsonl")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    path = Path(args.data)
    records = [r for r in load_records(path) if len(r.scores) == 3]
    lat = latencies(path)
    rng = random.Random(args.seed)
    rng.shuffle(records)
    cut = int(len(records) * 0.8)
    train, test = records[:cut], records[cut:]
    cfg = load_config(None)
    cards = list(cfg.models.values())
    chooser = GateChooser(train_gate(train), "local-zoo")

    def single(rs: list[Any], m: str) -> dict[str, float]:
        return {"accuracy": statistics.fmean(r.scores[m] for r in rs),
                "latency_ms": statistics.fmean(lat[r.id][m] for r in rs)}

    best_model = max((c.name for c in cards), key=lambda m: single(train, m)["accuracy"])
    best_train = single(train, best_model)["accuracy"]
    chosen = 0.0
    for w in WEIGHTS:  # the largest latency weight that keeps in-sample accuracy within 2 points of the best
        if evaluate(chooser, train, lat, cards, w)["accuracy"] >= best_train - 0.02:
            chosen = w
    t = Table(title=f"held-out {len(test)} of {len(records)} local-zoo records (trained on {len(train)})")
    for col in ("router", "accuracy", "mean latency (ms)", "latency vs always-1.5B"):
        t.add_column(col)
    base = single(test, "qwen2.5-coder-1.5b")
    rows = [(f"always {m}", single(test, m)) for m in ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m")]
    rows.append(("gate, quality only", evaluate(chooser, test, lat, cards, 0.0)))
    rows.append((f"gate, latency weight {chosen:g} (chosen on train)", evaluate(chooser, test, lat, cards, chosen)))
    for name, r in rows:
        t.add_row(name, f"{r['accuracy']:.1%}", f"{r['latency_ms']:.0f}", f"{r['latency_ms'] / base['latency_ms']:.0%}")
    Console().print(t)
    print(json.dumps({"chosen_latency_weight": chosen, "best_single_on_train": best_model}))


if __name__ == "__main__":
    main()
