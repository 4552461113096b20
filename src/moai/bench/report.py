"""Summaries of collected routing records: quality, latency and energy per model, per task.

Records are read and validated by ``datasets.load_records``, the loader every gate command uses, so a
malformed or wrong-typed field (a non-finite score, ``latency_ms`` that is not a {model: ms} object) is one
``file:line:`` error here too; it keeps the collector's latency and energy. Scores are means of the
per-answer scores: accuracy for 0/1 tasks, mean F1 / coverage for graded-text tasks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table
from rich.text import Text

from moai.bench.datasets import RecordError, RoutingRecord, load_records
from moai.bench.scales import record_scales

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


def load(paths: Sequence[str | Path] | str | Path) -> list[RoutingRecord]:
    """Validated records from one or more JSONL files (each needs an id, a prompt and finite scores)."""
    if isinstance(paths, str | Path):
        paths = [paths]
    try:
        return load_records(paths, check_scale=True)
    except RecordError as e:
        raise ReportError(str(e)) from None


def task_of(record: RoutingRecord) -> str:
    """The row label: the benchmark, prefixed by the question set when a set mixes several benchmarks.

    'gsm8k-train/12' with benchmark 'gsm8k' -> 'gsm8k'; 'multitask-train/7' with 'mmlu' -> 'multitask-train:mmlu'
    (so the multitask set's MMLU slice is not pooled with the MMLU set itself).
    """
    bench = record.benchmark or "unknown"
    stem = record.id.split("/")[0]
    return bench if not stem or stem == record.id or stem.startswith(bench) else f"{stem}:{bench}"


def _total(values: Iterable[float | None]) -> float:
    """Sum of the known values; NaN when there is none (a file that records no cost)."""
    vals = [v for v in values if v is not None]
    return float(sum(vals)) if vals else math.nan


def _mean(values: Iterable[float | None]) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else math.nan


def mixes_scales(records: Sequence[RoutingRecord]) -> bool:
    """Whether some records are on the 1-10 judge scale and others on 0/1 or 0-1 (``bench.scales``)."""
    judge = record_scales(records)
    return bool(judge.any() and not judge.all())


def summarise(records: Sequence[RoutingRecord]) -> list[Row]:
    """Rows per (task, model), then one ``all`` row per model (mean over every answer it gave). Each task's score
    is in its own scale; when the records mix the 1-10 judge scale with 0/1 or 0-1, the ``all`` row puts each
    record on 0-1 first ((y - 1) / 9 for a judge's, as training does), never averaging a 9 with a 1."""
    judge = record_scales(records)
    unit: dict[int, dict[str, float]] = {}
    if judge.any() and not judge.all():
        unit = {id(r): {m: min(1.0, max(0.0, (v - 1.0) / 9.0)) if j else v for m, v in r.scores.items()}
                for r, j in zip(records, judge, strict=True)}
    cells: dict[tuple[str, str], list[RoutingRecord]] = {}
    models: list[str] = []
    for r in records:
        task = task_of(r)
        for m in r.scores:
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
            energy = [r.energy_kwh.get(m) for r in rs]
            rows.append(Row(
                task=t, model=m, n=len(rs),
                score=_mean((unit[id(r)] if t == ALL and unit else r.scores)[m] for r in rs),
                latency_ms=_mean(r.latency_ms.get(m) for r in rs),
                energy_wh=_mean(None if e is None else e * 1000 for e in energy),
                cost_usd=_total(r.cost_usd.get(m) for r in rs),
                out_tokens=_mean(r.tokens.get(m, {}).get("output") for r in rs),
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
        # task and model names are text, not rich markup ('[/x]' would crash the table, 'a[red]' lose a part)
        t.add_row(Text(r.task), Text(r.model), str(r.n), f"{r.score:.3f}", _fmt(r.latency_ms, ".0f"),
                  _fmt(r.energy_wh * 1000, ".2f"), _fmt(r.out_tokens, ".1f"), _fmt(r.cost_usd, ".4f"))
    return t


def plot_path(path: str | Path) -> Path:
    """The file a plot written to ``path`` lands in: a name without a suffix gets ".png", as matplotlib adds it."""
    path = Path(path)
    return path if path.suffix else path.with_name(path.name.rstrip(".") + ".png")


class PlotPathError(ValueError):
    """``--plot`` names a file that cannot be written as an image: said before any work is done."""


def plot_file(path: str | Path) -> Path:
    """The image file ``--plot`` will write (``plot_path``), checked before the work it plots (so none, and no
    YAML write of `mix tune`, is wasted on a plot that fails): a folder, a path under a file and a format
    matplotlib cannot write are refused."""
    from matplotlib.backend_bases import FigureCanvasBase

    given = Path(path)
    out = plot_path(given)
    for p in (given, out):
        if p.is_dir():
            raise PlotPathError(f"--plot {p} is a directory; name the PNG file to write")
    parent = next((a for a in out.parents if a.exists()), Path("."))
    if not parent.is_dir():
        raise PlotPathError(f"--plot {path}: {parent} is a file, not a folder")
    formats = FigureCanvasBase.get_supported_filetypes()
    fmt = out.suffix[1:].lower()
    if fmt not in formats:
        raise PlotPathError(f"--plot {path}: format {fmt!r} is not supported; use one of {', '.join(sorted(formats))}")
    return out


def default_plot_path(records: Path) -> Path:
    """``<records stem>-report.png`` in the current directory (a records folder may be shared or read-only)."""
    return Path(f"{records.stem}-report.png")


def plot(rows: Sequence[Row], path: str | Path) -> Path:
    """Three grouped bar charts (score, mean latency, mean energy) per task, one bar per model; returns the file
    written (``plot_path``). An image format matplotlib does not know is a ValueError."""
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
    out = plot_path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # as `gate eval --plot` and `gate score --out` make theirs
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out
