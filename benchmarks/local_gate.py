"""The embedded default's gate on the local zoo: held-out accuracy and latency vs always-one-model.

Splits data/local-zoo records 80/20 (seeded, whole records) and trains a gate on the 80%. The latency weight
is chosen without looking at the held-out part: 5-fold out-of-fold decisions on the training part give,
for every weight, an honest accuracy and mean latency; the chosen weight is the largest whose out-of-fold
accuracy stays within 2 points of the best single model's. The held-out 20% then reports the accuracy and
mean measured latency of the gate's choices at that weight (and along the whole weight sweep, as a PNG)
against always-1.5B, always-0.5B and always-SmolLM.

    .venv/bin/python benchmarks/local_gate.py [--data data/local-zoo/records.jsonl] [--seed 0] [--plot out.png]
        [--set KEY=VALUE ...]   (training settings, as `moai gate train --set`)
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
from moai.config import load_config
from moai.gate.policy import Weights
from moai.gate.store import Gate, query_text, train_gate
from moai.gate.train import TrainConfig

WEIGHTS = [0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0, 5.0]
STRONG = "qwen2.5-coder-1.5b"


def latencies(path: Path) -> dict[str, dict[str, float]]:
    """Measured per-model latency (ms) by record id (the loader keeps scores; latency is read here)."""
    out = {}
    for line in path.open():
        if line.strip():
            r = json.loads(line)
            out[r["id"]] = r.get("latency_ms", {})
    return out


def sweep(gate: Gate, records: list[Any], lat: dict[str, dict[str, float]], cards: dict[str, Any]) -> dict[float, Any]:
    """Per weight: the chosen model for each record (quality predicted once, the policy applied per weight)."""
    names = list(cards)
    Q = gate.quality_matrix([query_text(r.messages) for r in records], names)
    out: dict[float, Any] = {}
    for w in WEIGHTS:
        picks = [gate.decide(r.messages, cards, Weights(quality=1.0, latency=w),
                             quality=dict(zip(names, map(float, q), strict=True))).model
                 for r, q in zip(records, Q, strict=True)]
        out[w] = {"accuracy": statistics.fmean(r.scores[m] for r, m in zip(records, picks, strict=True)),
                  "latency_ms": statistics.fmean(lat[r.id][m] for r, m in zip(records, picks, strict=True)),
                  "share": {n: picks.count(n) / len(picks) for n in names}}
    return out


def out_of_fold(train: list[Any], lat: dict[str, dict[str, float]], cards: dict[str, Any],
                cfg: TrainConfig, folds: int = 5) -> dict[float, dict[str, float]]:
    """Accuracy and latency per weight from gates that never saw the records they decide on."""
    picks: dict[float, list[tuple[float, float]]] = {w: [] for w in WEIGHTS}
    for k in range(folds):
        inner = [r for i, r in enumerate(train) if i % folds != k]
        held = [r for i, r in enumerate(train) if i % folds == k]
        res = sweep(train_gate(inner, cfg), held, lat, cards)
        for w in WEIGHTS:
            picks[w].append((res[w]["accuracy"] * len(held), res[w]["latency_ms"] * len(held)))
    n = len(train)
    return {w: {"accuracy": sum(a for a, _ in v) / n, "latency_ms": sum(b for _, b in v) / n} for w, v in picks.items()}


def single(rs: list[Any], lat: dict[str, dict[str, float]], m: str) -> dict[str, float]:
    return {"accuracy": statistics.fmean(r.scores[m] for r in rs),
            "latency_ms": statistics.fmean(lat[r.id][m] for r in rs)}


def plot(path: Path, curve: dict[float, Any], singles: dict[str, dict[str, float]], chosen: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = singles[STRONG]["latency_ms"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    xs = [curve[w]["latency_ms"] / base for w in WEIGHTS]
    ys = [curve[w]["accuracy"] * 100 for w in WEIGHTS]
    ax.plot(xs, ys, "o-", label="gate, latency weight swept")
    ax.plot([curve[chosen]["latency_ms"] / base], [curve[chosen]["accuracy"] * 100], "r*", ms=14,
            label=f"weight {chosen:g} (chosen out-of-fold on train)")
    for m, s in singles.items():
        ax.plot([s["latency_ms"] / base], [s["accuracy"] * 100], "ks")
        ax.annotate(f"always {m}", (s["latency_ms"] / base, s["accuracy"] * 100), fontsize=8,
                    xytext=(4, -10), textcoords="offset points")
    ax.axvline(0.6, color="grey", ls=":", lw=1)
    ax.axhline((singles[STRONG]["accuracy"] - 0.02) * 100, color="grey", ls=":", lw=1)
    ax.set_xlabel(f"mean latency / always-{STRONG}")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/local-zoo/records.jsonl")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", type=Path, default=None, help="PNG of the held-out accuracy-latency curve")
    ap.add_argument("--set", action="append", default=[], help="training setting KEY=VALUE (as moai gate train)")
    args = ap.parse_args()
    try:
        cfg = TrainConfig().override(args.set)
    except ValueError as e:
        ap.error(str(e))
    path = Path(args.data)
    records = [r for r in load_records(path) if len(r.scores) == 3]
    lat = latencies(path)
    random.Random(args.seed).shuffle(records)
    cut = int(len(records) * 0.8)
    train, test = records[:cut], records[cut:]
    cards = dict(load_config(None).models)

    best = max(cards, key=lambda m: single(train, lat, m)["accuracy"])
    oof = out_of_fold(train, lat, cards, cfg)
    floor = single(train, lat, best)["accuracy"] - 0.02
    ok = [w for w in WEIGHTS if oof[w]["accuracy"] >= floor]
    chosen = max(ok) if ok else 0.0
    held = sweep(train_gate(train, cfg), test, lat, cards)

    singles = {m: single(test, lat, m) for m in (STRONG, "qwen2.5-coder-0.5b", "smollm2-135m")}
    base = singles[STRONG]
    t = Table(title=f"held-out {len(test)} of {len(records)} local-zoo records "
                    f"(seed {args.seed}; trained on {len(train)})")
    for col in ("router", "accuracy", "mean latency (ms)", "latency vs always-1.5B", "share 1.5B/0.5B/135M"):
        t.add_column(col)
    rows = [(f"always {m}", s, None) for m, s in singles.items()]
    rows.append(("gate, quality only", held[0.0], held[0.0]["share"]))
    rows.append((f"gate, latency weight {chosen:g} (chosen out-of-fold)", held[chosen], held[chosen]["share"]))
    for name, r, share in rows:
        sh = "/".join(f"{share[m]:.0%}" for m in singles) if share else ""
        t.add_row(name, f"{r['accuracy']:.1%}", f"{r['latency_ms']:.0f}",
                  f"{r['latency_ms'] / base['latency_ms']:.0%}", sh)
    Console().print(t)
    sweep_t = Table(title="latency weight sweep: out-of-fold on train | held-out")
    for col in ("weight", "OOF accuracy", "OOF latency vs 1.5B", "held-out accuracy", "held-out latency vs 1.5B"):
        sweep_t.add_column(col)
    oof_base = single(train, lat, STRONG)["latency_ms"]
    for w in WEIGHTS:
        sweep_t.add_row(f"{w:g}", f"{oof[w]['accuracy']:.1%}", f"{oof[w]['latency_ms'] / oof_base:.0%}",
                        f"{held[w]['accuracy']:.1%}", f"{held[w]['latency_ms'] / base['latency_ms']:.0%}")
    Console().print(sweep_t)
    if args.plot:
        plot(args.plot, held, singles, chosen, f"local zoo, held-out {len(test)} records, seed {args.seed}")
    print(json.dumps({"seed": args.seed, "chosen_latency_weight": chosen, "best_single_on_train": best,
                      "held_out": {"gate": held[chosen], "gate_quality_only": held[0.0], **singles},
                      "latency_share_vs_1.5b": held[chosen]["latency_ms"] / base["latency_ms"],
                      "accuracy_gap_vs_1.5b": held[chosen]["accuracy"] - base["accuracy"]}, default=float))


if __name__ == "__main__":
    main()
