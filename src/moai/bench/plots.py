"""PNG plots of routers: quality vs strong-call share (RouteLLM style) and quality vs cost (log axis)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from moai.bench.metrics import CurvePoint, pareto_front


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_pair_curves(
    curves: Mapping[str, Sequence[CurvePoint]], weak_acc: float, strong_acc: float, path: str | Path,
    title: str = "", weak_name: str = "weak", strong_name: str = "strong",
    ylabel: str = "quality (%)", scale: float = 1.0,
) -> Path:
    """Accuracy vs % strong calls, one line per router, with the two single models as references.

    ``scale`` multiplies every quality (0.01 shows a 1-10 judge score, which the curves hold as x100)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, pts in curves.items():
        pts = sorted(pts, key=lambda p: p.strong_pct)
        lw = 2.5 if name.startswith("gate") else 1.2
        # one point (always-strong, always-weak: one model whatever the query) is no curve: mark it
        ax.plot([p.strong_pct for p in pts], [p.accuracy * scale for p in pts], marker="o" if len(pts) == 1 else ".",
                ms=8 if len(pts) == 1 else 6, lw=lw, label=name)
    ax.axhline(weak_acc * scale, color="grey", ls="--", label=weak_name)
    ax.axhline(strong_acc * scale, color="red", ls="--", label=strong_name)
    ax.set_xlabel("strong model calls (%)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_cost_curves(
    points: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    singles: Mapping[str, tuple[float, float]],
    path: str | Path,
    title: str = "",
) -> Path:
    """Mean quality vs mean cost per query (log x): each router's Pareto front, single models as dots."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, (c, q) in points.items():
        fc, fq = pareto_front(c, q)
        lw = 2.5 if name.startswith("gate") else 1.2
        # a front of one point (the router always takes the same model) draws no step: mark it
        ax.step(fc, fq, where="post", lw=lw, label=name, marker="o" if len(fc) == 1 else None, ms=4 + lw)
    for name, (c, q) in singles.items():
        ax.scatter([c], [q], s=14, color="black")
        ax.annotate(name.split("/")[-1][:18], (c, q), fontsize=6)
    allc = np.concatenate([np.asarray(c, float) for c, _ in points.values()] + [[c for c, _ in singles.values()]])
    paid = allc[np.isfinite(allc) & (allc > 0)]
    if paid.size and paid.size == np.isfinite(allc).sum():
        ax.set_xscale("log")
    else:  # free (local) models sit at 0, which a log axis cannot show: linear below the cheapest paid cost
        ax.set_xscale("symlog", linthresh=float(paid.min()) if paid.size else 1e-6)
    ax.set_xlabel("mean cost per query (USD)")
    ax.set_ylabel("mean quality")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
