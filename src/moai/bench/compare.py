"""Evaluate the gate and baselines on the same records: pair metrics and quality-vs-cost sweeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from moai.bench.baselines import Router
from moai.bench.datasets import RoutingRecord, cost_matrix, model_names, score_matrix
from moai.gate.quality import canonical
from moai.gate.store import Gate
from moai.gate.train import TrainConfig


class GateRouter(Router):
    """The gate behind the baseline interface (so one loop evaluates everything)."""

    name = "gate"

    def __init__(self, gate: Gate | None = None, config: TrainConfig | None = None) -> None:
        self.gate, self.config = gate, config or TrainConfig()

    @property  # type: ignore[override]
    def models(self) -> list[str]:
        """The gate's models now: ``cols`` adds a prior for a model it never trained on."""
        return self.gate.models if self.gate is not None else []

    def fit(self, records: Sequence[RoutingRecord]) -> GateRouter:
        from moai.gate.store import train_gate

        self.gate = train_gate(records, self.config)
        return self

    def predict_quality(self, records: Sequence[RoutingRecord]) -> np.ndarray:
        assert self.gate is not None
        return self.gate.quality_matrix([r.prompt for r in records], self.models, cached=True)

    def cols(self, names: Sequence[str]) -> list[int]:
        assert self.gate is not None
        return self.gate._ensure(names) if self.gate else []


def pick_pair(records: Sequence[RoutingRecord], coverage: float = 0.9) -> tuple[str, str]:
    """Strong = the best mean score, weak = the next best, among the models that score (nearly) every record
    (at least ``coverage`` of the most covered one's records): a mean over a few records is no ranking."""
    names = model_names(records)
    if len(names) < 2:
        raise ValueError("need at least two models with scores to evaluate a strong/weak pair")
    y = score_matrix(records, names)
    n = np.isfinite(y).sum(0)
    wide = [j for j in range(len(names)) if n[j] >= coverage * n[0]]
    if len(wide) < 2:
        wide = [0, 1]  # the two most covered (model_names is most covered first)
    mean = {j: float(np.nanmean(y[:, j])) for j in wide}
    s, w = sorted(wide, key=lambda j: (-mean[j], names[j]))[:2]
    return names[s], names[w]


def same_names(records: Sequence[RoutingRecord]) -> list[RoutingRecord]:
    """The records with one spelling per model (``canonical``, as the gate matches names): a record that writes
    'GPT-4-1106-Preview' counts for 'gpt-4-1106-preview'. Each model keeps its most frequent spelling."""
    seen: dict[str, dict[str, int]] = {}
    for r in records:
        for m in r.scores:
            spell = seen.setdefault(canonical(m), {})
            spell[m] = spell.get(m, 0) + 1
    name = {c: max(sp, key=lambda m: (sp[m], m)) for c, sp in seen.items()}
    if all(len(sp) == 1 for sp in seen.values()):
        return list(records)

    def one(d: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m, v in d.items():
            out.setdefault(name.get(canonical(m), m), v)
        return out

    return [replace(r, scores=one(r.scores), cost_usd=one(r.cost_usd), tokens=one(r.tokens),
                    latency_ms=one(r.latency_ms), energy_kwh=one(r.energy_kwh)) for r in records]


def predicted_costs(train: Sequence[RoutingRecord], models: Sequence[str]) -> np.ndarray:
    """Per-model mean USD per answer in the training records (NaN if never priced)."""
    c = cost_matrix(train, models)
    with np.errstate(all="ignore"):
        return np.nanmean(c, 0) if len(train) else np.full(len(models), np.nan)


@dataclass
class CostSweep:
    costs: list[float]
    quals: list[float]


def cost_sweep(
    q: np.ndarray, cost_pred: np.ndarray, y: np.ndarray, cost_real: np.ndarray, n: int = 600
) -> CostSweep:
    """Operating points of 'argmax quality - lam * predicted cost' for lam from 0 to very large.

    q, y, cost_real: (n_records, M) over the same model columns (NaN = model not available there).
    ``n`` log-spaced weights over six decades (100 per decade): where a router's predicted gaps between two
    models are alike across queries, they all flip within a narrow band of weights, and a coarse grid
    (10 per decade) stepped over the operating points in between.
    """
    cost_pred = np.asarray(cost_pred, float)
    # a model never priced in training cannot be traded against cost (NaN would win every argmax): skip it
    avail = np.isfinite(y) & np.isfinite(cost_real) & np.isfinite(np.broadcast_to(cost_pred, y.shape))
    keep = avail.any(1)  # a record no model has both a score and a cost for cannot be routed: leave it out
    q, y, cost_real, avail = q[keep], y[keep], cost_real[keep], avail[keep]
    scale = (float(np.nanmedian(cost_pred)) if np.isfinite(cost_pred).any() else 0.0) or 1e-3
    lams = np.concatenate([[0.0], np.logspace(-3, 3, n) / scale])
    cp = np.nan_to_num(np.broadcast_to(cost_pred, q.shape))
    costs, quals = [], []
    rows = np.arange(len(q))
    for lam in lams:
        u = np.where(avail, q - lam * cp, -np.inf)
        ch = np.argmax(u, 1)
        quals.append(float(np.mean(y[rows, ch])))
        costs.append(float(np.mean(cost_real[rows, ch])))
    return CostSweep(costs, quals)


def router_matrix(router: Router, records: Sequence[RoutingRecord], names: Sequence[str]) -> np.ndarray:
    """Router's expected quality for ``names`` (columns), with NaN-safe fallback for unknown models."""
    q = router.predict_quality(records)
    col = {m: j for j, m in enumerate(router.models)}
    out = np.zeros((len(records), len(names)))
    for k, n in enumerate(names):
        j = col.get(canonical(n))
        out[:, k] = q[:, j] if j is not None else -1.0
    return out
