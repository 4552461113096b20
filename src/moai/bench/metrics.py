"""Routing metrics: RouteLLM's APGR and CPT(x%), and quality-vs-cost curves for many-model sets.

APGR/CPT follow lm-sys/RouteLLM routellm/evals/{evaluate,benchmarks}.py: thresholds are the 11 edges of
a 10-quantile split of the router's scores; a query goes to the strong model when its score >= the
threshold (> for the last edge, so that point is 0% strong); accuracy is in percent; points are sorted by
strong share; APGR = (AUC - weak AUC) / (strong AUC - weak AUC) with trapezoids over strong share in
[0, 1]; CPT(x) = np.interp of the accuracy x% of the way from weak to strong onto strong share (%).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """np.trapz (gone in NumPy 2.x as trapz), written out."""
    if len(x) < 2:
        return 0.0
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    strong_pct: float  # 0..100
    accuracy: float  # mean score * 100


def routellm_curve(
    scores: Sequence[float] | np.ndarray,
    y_strong: Sequence[float] | np.ndarray,
    y_weak: Sequence[float] | np.ndarray,
    num_results: int = 10,
) -> list[CurvePoint]:
    """RouteLLM's threshold sweep: one point per quantile edge of the router's scores."""
    s = np.asarray(scores, dtype=float)
    ys, yw = np.asarray(y_strong, dtype=float), np.asarray(y_weak, dtype=float)
    if not (len(s) == len(ys) == len(yw)) or len(s) == 0:
        raise ValueError("scores, y_strong and y_weak must be non-empty and of equal length")
    edges = np.quantile(s, np.linspace(0.0, 1.0, num_results + 1))  # = pandas qcut retbins
    points = []
    for i, t in enumerate(edges):
        sel = s >= t if i != len(edges) - 1 else s > t
        acc = float(np.where(sel, ys, yw).sum() / len(s) * 100)
        points.append(CurvePoint(float(t), float(sel.sum() / len(s) * 100), acc))
    return points


def _sorted(points: Sequence[CurvePoint]) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort([p.strong_pct for p in points], kind="stable")
    pct = np.array([points[i].strong_pct for i in order])
    acc = np.array([points[i].accuracy for i in order])
    return pct, acc


def apgr(points: Sequence[CurvePoint], weak_acc: float, strong_acc: float) -> float:
    """Average performance gap recovered: 0 = always weak, 1 = always strong (accuracies in %).

    NaN where there is no gap to recover (strong and weak score alike): the ratio is undefined there."""
    pct, acc = _sorted(points)
    auc = _trapezoid(acc, pct / 100)
    weak_auc = _trapezoid(np.full(len(pct), weak_acc), pct / 100)
    strong_auc = _trapezoid(np.full(len(pct), strong_acc), pct / 100)
    if strong_auc == weak_auc:
        return float("nan")
    return (auc - weak_auc) / (strong_auc - weak_auc)


def cpt(points: Sequence[CurvePoint], weak_acc: float, strong_acc: float, frac: float) -> float:
    """Call-performance threshold: % strong calls needed to recover ``frac`` of the quality gap (NaN with no gap:
    any share recovers all of nothing)."""
    if strong_acc == weak_acc:
        return float("nan")
    pct, acc = _sorted(points)
    return float(np.interp(frac * (strong_acc - weak_acc) + weak_acc, acc, pct))


@dataclass(frozen=True)
class PairReport:
    apgr: float
    cpt50: float
    cpt80: float
    weak_acc: float
    strong_acc: float


def pair_report(scores: np.ndarray, y_strong: np.ndarray, y_weak: np.ndarray) -> PairReport:
    """APGR, CPT(50%), CPT(80%) for one router on one strong/weak pair."""
    ys, yw = np.asarray(y_strong, float), np.asarray(y_weak, float)
    w, s = float(yw.mean() * 100), float(ys.mean() * 100)
    pts = routellm_curve(scores, ys, yw)
    return PairReport(apgr(pts, w, s), cpt(pts, w, s, 0.5), cpt(pts, w, s, 0.8), w, s)


def fixed_report(strong_share: float, y_strong: np.ndarray, y_weak: np.ndarray) -> PairReport:
    """APGR and CPT of a router that sends the same share of calls to the strong model whatever the query
    (always-strong: 1, always-weak: 0).

    Its scores are constant, so the threshold sweep has no quantiles to split on (RouteLLM's qcut refuses it); but
    its quality does not depend on any threshold, so its curve is the flat line at its own quality. That is how
    ``apgr`` draws the references it normalises by (``weak_auc``/``strong_auc``: flat lines at the weak and the
    strong model's quality), so always-weak's APGR is exactly 0 and always-strong's exactly 1; in general it is
    the share of the gap recovered at that one point. CPT(x) is that share of strong calls where it recovers x of
    the gap, and NaN where it never does (always-weak). NaN throughout when there is no gap."""
    ys, yw = np.asarray(y_strong, float), np.asarray(y_weak, float)
    w, s = float(yw.mean() * 100), float(ys.mean() * 100)
    if s == w:
        return PairReport(float("nan"), float("nan"), float("nan"), w, s)
    acc = strong_share * s + (1 - strong_share) * w
    recovered = (acc - w) / (s - w)
    at = [strong_share * 100 if recovered >= frac - 1e-12 else float("nan") for frac in (0.5, 0.8)]
    return PairReport(recovered, at[0], at[1], w, s)


# ---------------------------------------------------------------- many models: quality vs cost


def realised(choice: np.ndarray, y: np.ndarray, cost: np.ndarray) -> tuple[float, float]:
    """Mean quality and mean cost when record i is answered by model ``choice[i]``."""
    rows = np.arange(len(choice))
    return float(np.nanmean(y[rows, choice])), float(np.nanmean(cost[rows, choice]))


def pareto_front(costs: Sequence[float], quals: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points no other point beats on both cost (lower) and quality (higher), by increasing cost."""
    c, q = np.asarray(costs, float), np.asarray(quals, float)
    order = np.lexsort((-q, c))
    fc, fq, best = [], [], -np.inf
    for i in order:
        if q[i] > best + 1e-12:
            fc.append(c[i])
            fq.append(q[i])
            best = q[i]
    return np.array(fc), np.array(fq)


def quality_at_budget(costs: Sequence[float], quals: Sequence[float], budget: float) -> float:
    """Best quality among operating points whose mean cost is within the budget (NaN if none)."""
    c, q = np.asarray(costs, float), np.asarray(quals, float)
    ok = c <= budget * (1 + 1e-9)
    return float(q[ok].max()) if ok.any() else float("nan")


def curve_auc(costs: Sequence[float], quals: Sequence[float], c_lo: float, c_hi: float, n: int = 200) -> float:
    """Mean of the best-quality-within-budget step curve over log-cost in [c_lo, c_hi].

    Budgets below the router's cheapest point count as quality 0, so a router that cannot go cheap
    is penalised; the log axis treats a 10x saving the same at every price level.
    """
    grid = np.logspace(np.log10(c_lo), np.log10(c_hi), n)
    vals = [quality_at_budget(costs, quals, b) for b in grid]
    return float(np.mean(np.nan_to_num(vals, nan=0.0)))


@dataclass(frozen=True)
class CostReport:
    auc: float
    q_at_25: float  # quality at 25% / 50% / 100% of the best single model's cost
    q_at_50: float
    q_at_100: float
    best_model: str
    best_quality: float
    best_cost: float
    max_quality: float


def cost_report(
    costs: Sequence[float], quals: Sequence[float], y: np.ndarray, cost: np.ndarray, models: Sequence[str]
) -> CostReport:
    """Summarise a router's operating points against the best single model on the same records."""
    mq, mc = np.nanmean(y, 0), np.nanmean(cost, 0)
    b = int(np.nanargmax(mq))
    paid = mc[mc > 0]  # a free (local) model has no log cost: the axis starts at the cheapest paid one
    auc = curve_auc(costs, quals, float(paid.min()), float(paid.max())) if paid.size else float("nan")
    return CostReport(
        auc=auc,
        q_at_25=quality_at_budget(costs, quals, 0.25 * mc[b]),
        q_at_50=quality_at_budget(costs, quals, 0.5 * mc[b]),
        q_at_100=quality_at_budget(costs, quals, mc[b]),
        best_model=models[b],
        best_quality=float(mq[b]),
        best_cost=float(mc[b]),
        max_quality=float(np.max(quals)),
    )
