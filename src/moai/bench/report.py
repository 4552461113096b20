"""Summaries of collected routing records: quality, latency and energy per model, per task.

Reads the raw JSONL (not ``datasets.load_records``) because the collector's extra fields (latency,
energy, responses) are what this report is about. Scores are means of the per-answer scores: accuracy
for 0/1 tasks, mean F1 / coverage for graded-text tasks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from moai.bench.datasets import located, read_json_lines

ALL = "all"


class ReportError(ValueError):
    """A records file we cannot summarise; one line: ``file:line: problem``."""


@dataclass
class Row:
    """One (task, model) cell of the report."""

    task: str
    model: str
    n: int
    score: float
    latency_ms: float  # mean over answers with a measured latency (NaN if none)
    energy_wh: float  # mean per answer, watt-hours (NaN if none)
    cost_usd: float  # total over its answers (NaN if none was priced)
    out_tokens: float  # mean completion tokens (NaN if none)


def load(paths: Sequence[str | Path] | str | Path) -> list[dict[str, Any]]:
    """Records from one or more JSONL files; each must be an object with a ``scores`` mapping."""
    if isinstance(paths, str | Path):
        paths = [paths]
    out: list[dict[str, Any]] = []
    for p in map(Path, paths):
        n0 = len(out)
        for ln, obj in read_json_lines(p, lambda ln, reason, p=p: ReportError(located(p, ln, reason))):
            if not isinstance(obj, dict) or not isinstance(obj.get("scores"), dict):
                raise ReportError(f"{p}:{ln}: not a routing record (needs a 'scores' object)")
            out.append(obj)
        if len(out) == n0:
            raise ReportError(f"{p}: no records in file")
    return out


def task_of(record: dict[str, Any]) -> str:
    """The row label: the benchmark, prefixed by the question set when a set mixes several benchmarks.

    'gsm8k-train/12' with benchmark 'gsm8k' -> 'gsm8k'; 'multitask-train/7' with 'mmlu' -> 'multitask-train:mmlu'
    (so the multitask set's MMLU slice is not pooled with the MMLU set itself).
    """
    bench = str(record.get("benchmark") or "unknown")
    stem = str(record.get("id", "")).split("/")[0]
    return bench if not stem or stem == str(record.get("id")) or stem.startswith(bench) else f"{stem}:{bench}"


def _total(values: Iterable[Any]) -> float:
    """Sum of the numbers among ``values``; NaN when there is none (a file that records no cost)."""
    vals = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
    return float(sum(vals)) if vals else math.nan


def _mean(values: Iterable[float]) -> float:
    vals = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def summarise(records: Sequence[dict[str, Any]]) -> list[Row]:
    """Rows per (task, model), then one ``all`` row per model (mean over every answer it gave)."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    models: list[str] = []
    for r in records:
        task = task_of(r)
        for m in r["scores"]:
            if m not in models:
                models.append(m)
            cells.setdefault((task, m), []).append(r)
            cells.setdefault((ALL, m), []).append(r)
    rows: list[Row] = []
    tasks = sorted({t for t, _ in cells if t != ALL}) + [ALL]
    for t in tasks:
        for m in models:
            rs = cells.get((t, m))
            if not rs:
                continue
            rows.append(Row(
                task=t, model=m, n=len(rs),
                score=_mean(float(r["scores"][m]) for r in rs),
                latency_ms=_mean((r.get("latency_ms") or {}).get(m, math.nan) for r in rs),
                energy_wh=_mean((r.get("energy_kwh") or {}).get(m, math.nan) * 1000 for r in rs),
                cost_usd=_total((r.get("cost_usd") or {}).get(m) for r in rs),
                out_tokens=_mean(((r.get("tokens") or {}).get(m) or {}).get("output", math.nan) for r in rs),
            ))
    return rows


def _fmt(v: float, spec: str) -> str:
    return "–" if math.isnan(v) else format(v, spec)


def table(rows: Sequence[Row]) -> Table:
    """A rich table, one line per (task, model); the ``all`` block last."""
    t = Table(title="moai bench: per model and task", show_lines=False)
    for col, justify in (("task", "left"), ("model", "left"), ("n", "right"), ("score", "right"),
                         ("latency ms", "right"), ("energy mWh", "right"), ("out tok", "right"),
                         ("total cost $", "right")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    prev = None
    for r in rows:
        if prev is not None and r.task != prev:
            t.add_section()
        prev = r.task
        t.add_row(r.task, r.model, str(r.n), f"{r.score:.3f}", _fmt(r.latency_ms, ".0f"),
                  _fmt(r.energy_wh * 1000, ".2f"), _fmt(r.out_tokens, ".1f"), _fmt(r.cost_usd, ".4f"))
    return t


def plot(rows: Sequence[Row], path: str | Path) -> None:
    """Three grouped bar charts (score, mean latency, mean energy) per task, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(dict.fromkeys(r.task for r in rows))
    models = list(dict.fromkeys(r.model for r in rows))
    cell = {(r.task, r.model): r for r in rows}
    metrics = (("score", "score (accuracy / F1 / coverage)", 1.0),
               ("latency_ms", "mean latency (s)", 1e-3),
               ("energy_wh", "mean energy per answer (mWh)", 1e3))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(8.0, 0.8 * len(tasks) * max(1, len(models)) / 2), 11),
                             sharex=True)
    x = np.arange(len(tasks))
    width = 0.8 / max(1, len(models))
    for ax, (attr, label, scale) in zip(axes, metrics, strict=True):
        for j, m in enumerate(models):
            vals = [getattr(cell[(t, m)], attr) * scale if (t, m) in cell else np.nan for t in tasks]
            ax.bar(x + (j - (len(models) - 1) / 2) * width, vals, width, label=m)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncols=min(4, len(models)))
    axes[-1].set_xticks(x, tasks, rotation=45, ha="right", fontsize=8)
    fig.suptitle("moai bench report")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
