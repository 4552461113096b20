"""Collaboration vs single models on GSM8K test questions with the local zoo.

For each system — every local model alone, ``moai/moa`` (0.5B + 1.5B + SmolLM proposers, 1.5B
aggregator), ``moai/critique`` and ``moai/auto`` from the embedded default config — answers N questions
one at a time (as a user would), grades the final number, and reports accuracy, mean latency and mean
energy, plus MoA's concurrency ratio (proposer-layer wall time / sum of the proposers' call times).

    .venv/bin/python benchmarks/collab_gsm8k.py --n 50 [--max-tokens 256] [--out out/collab]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from moai.bench.graders import grade_number, gsm8k_gold
from moai.config import load_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "questions"
PROMPT = "{q}\n\nSolve it step by step, briefly. End with the final answer on its own line as: #### <number>"
# --direct: the answer alone (as `moai bench collect` asks), for machines too small for chains of thought
DIRECT = "{q}\n\nGive only the final answer as a number, nothing else."
SHOT = [{"role": "user", "content": "A baker makes 3 trays of 12 cookies and sells 20. How many cookies are left?"
         "\n\nGive only the final answer as a number, nothing else."}, {"role": "assistant", "content": "16"}]
SYSTEMS = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "moai/moa", "moai/critique", "moai/auto"]


def questions(n: int, offset: int = 0) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (SHARED / "gsm8k-test.jsonl").open()]
    return rows[offset : offset + n]


def concurrency_ratio(trace: list[dict[str, Any]]) -> float | None:
    layer = [t for t in trace if t["role"] == "proposer" and t["status"] == "ok" and t["step"].startswith("p1.")]
    if len(layer) < 2:
        return None
    wall = max(t["end"] for t in layer) - min(t["start"] for t in layer)
    return wall / sum(t["end"] - t["start"] for t in layer)


def summarise(system: str, correct: list[bool], latency: list[float], energy: list[float], ratios: list[float],
              strategies: list[str], checks: list[str | None] | None = None,
              drafts: list[bool | None] | None = None) -> dict[str, Any]:
    graded = [d for d in drafts or [] if d is not None]
    return {"draft_accuracy": statistics.fmean(graded) if graded else None, "drafts_correct": drafts or [],
            "system": system, "accuracy": statistics.fmean(correct), "latency_s": statistics.fmean(latency),
            "energy_wh": statistics.fmean(energy), "concurrency_ratio": statistics.fmean(ratios) if ratios else None,
            "strategies": {s: strategies.count(s) for s in set(strategies)}, "n": len(correct), "correct": correct,
            "latencies_s": latency, "routes": strategies, "program_checks": checks or []}


async def run(system: str, qs: list[dict[str, Any]], mixture: Mixture, max_tokens: int, progress: Progress,
              task: Any, direct: bool = False,
              checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    correct: list[bool] = []
    latency: list[float] = []
    energy: list[float] = []
    ratios: list[float] = []
    strategies: list[str] = []
    checks: list[str | None] = []  # the critique's program-check verdict per question, when it ran
    # a critique's draft is its writer's answer to the unchanged request: at temperature 0 that is the
    # writer alone, so one run measures both the writer and what the critique made of its draft
    drafts: list[bool | None] = []
    for q in qs:
        ask = {"role": "user", "content": (DIRECT if direct else PROMPT).format(q=q["question"])}
        body = ChatCompletionRequest.model_validate({
            "model": system, "max_tokens": max_tokens, "temperature": 0,
            "messages": [*SHOT, ask] if direct else [ask]})
        t0 = time.perf_counter()
        prep = mixture.prepare(body)
        ex = await mixture.run(prep)
        latency.append(time.perf_counter() - t0)
        summary = mixture.summary(prep, ex)
        correct.append(grade_number(ex.answer.text, gsm8k_gold(q["answer"])))
        energy.append(summary["energy_kwh"] * 1000)
        strategies.append(summary["strategy"])
        checks.append(next((r for r in summary["reason"] if r.startswith("program check")), None))
        draft = next((r for r in ex.results if r.step == "draft" and r.ok), None)
        drafts.append(None if draft is None else grade_number(draft.text, gsm8k_gold(q["answer"])))
        if (r := concurrency_ratio(summary["trace"])) is not None:
            ratios.append(r)
        progress.advance(task)
        if checkpoint is not None:  # a stopped run keeps every question it answered
            checkpoint(summarise(system, correct, latency, energy, ratios, strategies, checks, drafts))
    return summarise(system, correct, latency, energy, ratios, strategies, checks, drafts)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    mixture = Mixture(load_config(args.config))
    qs = questions(args.n, args.offset)
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn()) as progress:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for system in args.systems:
            task = progress.add_task(system, total=len(qs))

            def save(partial: dict[str, Any]) -> None:
                (out / "results.json").write_text(json.dumps([*results, partial], indent=2))

            results.append(await run(system, qs, mixture, args.max_tokens, progress, task, args.direct, save))
    await mixture.aclose()
    return results


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for r in results:
        ax.scatter(r["latency_s"], r["accuracy"] * 100, s=60)
        ax.annotate(r["system"].removeprefix("moai/"), (r["latency_s"], r["accuracy"] * 100), fontsize=9,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("mean latency per question (s)")
    ax.set_ylabel("GSM8K accuracy (%)")
    ax.set_title(f"local zoo on {results[0]['n']} GSM8K test questions")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--offset", type=int, default=0, help="skip this many questions (continue an earlier run)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--systems", nargs="+", default=SYSTEMS)
    ap.add_argument("--out", default="benchmarks/out/collab")
    ap.add_argument("--direct", action="store_true", help="ask for the number only (short answers)")
    ap.add_argument("--config", default=None, help="mix instructions to use instead of the embedded default")
    args = ap.parse_args()
    results = asyncio.run(main_async(args))
    out = Path(args.out)
    plot(results, out / "accuracy_latency.png")
    mode = "answer only" if args.direct else "step by step"
    t = Table(title=f"GSM8K test, questions {args.offset + 1}–{args.offset + args.n}, {mode}, "
                    f"≤{args.max_tokens} tokens per call")
    for col in ("system", "accuracy", "its drafts", "mean latency (s)", "mean energy (Wh)", "MoA concurrency ratio",
                "routes"):
        t.add_column(col)
    for r in results:
        ratio = f"{r['concurrency_ratio']:.2f}" if r["concurrency_ratio"] is not None else "-"
        drafted = f"{r['draft_accuracy']:.1%}" if r["draft_accuracy"] is not None else "-"
        t.add_row(r["system"], f"{r['accuracy']:.1%}", drafted, f"{r['latency_s']:.1f}", f"{r['energy_wh']:.3f}", ratio,
                  ", ".join(f"{k}: {v}" for k, v in sorted(r["strategies"].items())))
    Console().print(t)
    print(f"wrote {out / 'results.json'} and {out / 'accuracy_latency.png'}")


if __name__ == "__main__":
    main()
