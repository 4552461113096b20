"""Metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from moai.bench.metrics import (
    CurvePoint,
    apgr,
    cost_report,
    cpt,
    curve_auc,
    pair_report,
    pareto_front,
    quality_at_budget,
    routellm_curve,
)


def test_apgr_bounds_for_perfect_and_inverted_router() -> None:
    # strong right exactly where weak is wrong: a perfect score recovers the gap fastest
    ys = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1], float)
    yw = np.array([0, 0, 1, 1, 0, 0, 1, 1, 1, 1], float)
    gain = ys - yw
    perfect = pair_report(gain, ys, yw)
    inverted = pair_report(-gain, ys, yw)
    assert perfect.apgr > 0.5 > inverted.apgr
    assert perfect.cpt50 < inverted.cpt50


def test_apgr_hand_computed_three_points() -> None:
    pts = [CurvePoint(0, 0.0, 50.0), CurvePoint(0, 50.0, 80.0), CurvePoint(0, 100.0, 90.0)]
    # trapezoids: 0.5*(50+80)/2 + 0.5*(80+90)/2 = 32.5 + 42.5 = 75; weak 50, strong 90
    assert apgr(pts, 50.0, 90.0) == pytest.approx((75 - 50) / (90 - 50))
    # 50% of the gap = 70 -> interpolate between (0,50) and (50,80): 100/3 %
    assert cpt(pts, 50.0, 90.0, 0.5) == pytest.approx(100 / 3)


def test_routellm_curve_endpoints_are_all_strong_and_all_weak() -> None:
    rng = np.random.default_rng(0)
    s = rng.random(50)
    ys, yw = rng.integers(0, 2, 50).astype(float), rng.integers(0, 2, 50).astype(float)
    pts = routellm_curve(s, ys, yw)
    assert len(pts) == 11
    assert pts[0].strong_pct == 100.0 and pts[0].accuracy == pytest.approx(ys.mean() * 100)
    assert pts[-1].strong_pct == 0.0 and pts[-1].accuracy == pytest.approx(yw.mean() * 100)


def test_constant_router_apgr_is_half() -> None:
    ys = np.array([1, 0, 1, 1], float)
    yw = np.array([0, 0, 1, 0], float)
    assert pair_report(np.zeros(4), ys, yw).apgr == pytest.approx(0.5)


def test_no_gap_between_strong_and_weak_has_no_apgr_or_cpt() -> None:
    ys = yw = np.array([1, 0, 1], float)
    rep = pair_report(np.array([0.1, 0.5, 0.9]), ys, yw)
    assert np.isnan(rep.apgr) and np.isnan(rep.cpt50) and np.isnan(rep.cpt80)


def test_pareto_and_budget() -> None:
    c, q = [1.0, 2.0, 3.0, 2.5], [0.5, 0.7, 0.6, 0.8]
    fc, fq = pareto_front(c, q)
    assert list(fc) == [1.0, 2.0, 2.5] and list(fq) == [0.5, 0.7, 0.8]
    assert quality_at_budget(c, q, 2.2) == 0.7
    assert np.isnan(quality_at_budget(c, q, 0.5))
    # a router better at every budget has the larger area
    assert curve_auc(c, [x + 0.1 for x in q], 1.0, 3.0) > curve_auc(c, q, 1.0, 3.0)


def test_cost_report_with_a_free_model() -> None:
    """A free (local) model has no log cost: the area spans the paid models' costs, not log(0)."""
    y = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    cost = np.array([[0.01, 0.0, 0.002], [0.01, 0.0, 0.002]])
    rep = cost_report([0.0, 0.002, 0.01], [0.5, 0.6, 1.0], y, cost, ["big", "local", "mid"])
    assert rep.auc == pytest.approx(curve_auc([0.0, 0.002, 0.01], [0.5, 0.6, 1.0], 0.002, 0.01))
    assert 0.6 < rep.auc < 1.0 and rep.q_at_50 == 0.6 and rep.best_model == "big"
    free = cost_report([0.0], [0.5], y, np.zeros_like(cost), ["big", "local", "mid"])
    assert np.isnan(free.auc) and free.q_at_100 == 0.5  # nothing is paid: no curve, but the budgets still hold


def test_cost_sweep_skips_records_no_model_can_answer() -> None:
    """A record with no scored+priced model must not turn the whole curve into NaN (RouterBench ARC has some)."""
    from moai.bench.compare import cost_sweep

    nan = float("nan")
    y = np.array([[1.0, 0.0], [1.0, 1.0], [nan, nan]])
    cost = np.array([[0.01, 0.001], [0.01, 0.001], [nan, nan]])
    q = np.array([[0.9, 0.2], [0.6, 0.55], [0.5, 0.5]])
    sw = cost_sweep(q, np.array([0.01, 0.001]), y, cost, n=20)
    assert all(np.isfinite(sw.costs)) and all(np.isfinite(sw.quals))
    # no cost weight: the strong model on both answerable records; a huge one: the cheap model on both
    assert sw.quals[0] == 1.0 and sw.costs[0] == pytest.approx(0.01)
    assert sw.quals[-1] == 0.5 and sw.costs[-1] == pytest.approx(0.001)
    # in between, the router keeps the strong model only where it expects a large gain (record 0)
    assert any(c == pytest.approx(0.0055) and qq == 1.0 for c, qq in zip(sw.costs, sw.quals, strict=True))


def test_cost_sweep_never_picks_a_model_without_a_predicted_cost() -> None:
    from moai.bench.compare import cost_sweep

    y = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    cost = np.array([[0.01, 0.001, 0.02], [0.01, 0.001, 0.02]])
    q = np.array([[0.9, 0.2, 0.95], [0.6, 0.55, 0.99]])
    sw = cost_sweep(q, np.array([0.01, 0.001, np.nan]), y, cost, n=10)
    assert sw.costs[0] == pytest.approx(0.01) and sw.costs[-1] == pytest.approx(0.001)  # model 2 never chosen


def test_cost_sweep_resolves_gaps_that_differ_little() -> None:
    """Ten records whose predicted gaps span 9%: the sweep finds mixes between all-strong and all-weak."""
    from moai.bench.compare import cost_sweep

    gaps = 0.30 + 0.003 * np.arange(10)
    q = np.c_[0.5 + gaps, np.full(10, 0.5)]
    y = np.c_[np.ones(10), np.zeros(10)]
    cost = np.tile([0.01, 0.001], (10, 1))
    fine = cost_sweep(q, np.array([0.01, 0.001]), y, cost)
    assert len(set(np.round(fine.costs, 6))) >= 5
    coarse = cost_sweep(q, np.array([0.01, 0.001]), y, cost, n=60)  # 10 weights per decade jump straight across
    assert set(np.round(coarse.costs, 6)) == {0.01, 0.001}
