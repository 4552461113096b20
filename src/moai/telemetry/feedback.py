"""Feedback scores: the scales a rating may be given on, and the 0..1 quality every reader takes it as.

A rating is stored as a bare score (on a declared scale, its 0..1 quality), so the live statistics, the metrics and
the report read every stored score the same way, whatever scale the client rated on.
"""

from __future__ import annotations

import math
from typing import Any

SCALES: dict[str, tuple[float, float]] = {"thumbs": (-1.0, 1.0), "unit": (0.0, 1.0), "ten": (0.0, 10.0)}


def normalise_score(score: float, scale: str | None = None) -> float:
    """A feedback score as a quality on 0 (worst) .. 1 (best).

    With a declared scale: ``thumbs`` -1..1 → (score + 1) / 2, ``unit`` 0..1 as it is, ``ten`` 0..10 → score / 10
    (ValueError for a score off that scale or an unknown scale). A bare score keeps the documented reading: -1..0
    as a thumbs scale, 0..1 as it is (so 1 is a thumbs-up), above 1 a 0-10 rating. That reading cannot be monotonic
    (1 is top marks, 2 is 2/10): a client rating 0-10 declares ``ten``, and its 1 is then 1/10.
    """
    if math.isnan(score):
        raise ValueError("feedback score nan is not a number")
    if scale is None:
        if score > 1:
            return min(10.0, score) / 10
        return (max(-1.0, score) + 1) / 2 if score < 0 else score
    if scale not in SCALES:
        raise ValueError(f"unknown feedback scale {scale!r} (expected one of {', '.join(SCALES)})")
    lo, hi = SCALES[scale]
    if not (math.isfinite(score) and lo <= score <= hi):
        raise ValueError(f"feedback score {score:g} is outside the {scale} scale {lo:g}..{hi:g}")
    return (score - lo) / (hi - lo)


def stored_score(score: float, scale: str | None = None) -> float:
    """The bare score to store for a score on a declared scale: its quality on 0..1, which a bare reading
    (``normalise_score(stored)``) gives back, so that every reader of the stored scores (the live statistics,
    the metrics, the report) needs no scale. Without a scale the score is stored as it is."""
    return score if scale is None else round(normalise_score(score, scale), 9)


def predicted_quality(decision: Any, model: str) -> float | None:
    """The quality the gate expected of ``model`` in a stored decision (None when it has none)."""
    if isinstance(decision, dict):
        q = (decision.get("quality") or {}).get(model)
        if isinstance(q, int | float) and math.isfinite(q):
            return float(q)
    return None
