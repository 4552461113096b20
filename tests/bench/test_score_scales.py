"""Score scales (shared/data/MANIFEST.md: 0/1 correctness, a 0-1 metric or a 1-10 judge score) are read per
record within its benchmark, and training (``target_matrix``) and evaluation (``score_matrix``) read them alike."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from moai.bench.datasets import RoutingRecord, normalise_scores, score_matrix
from moai.bench.metrics import pair_report
from moai.gate.train import target_matrix

NAN = float("nan")


def recs(bench: str, rows: list[dict[str, float]]) -> list[RoutingRecord]:
    return [RoutingRecord(id=f"{bench}/{i}", prompt=f"q{i}", scores=s, benchmark=bench, source="f.jsonl", line=i + 1)
            for i, s in enumerate(rows)]


def scale_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "mixes score scales" in r.getMessage()]


def test_a_benchmark_mixing_01_and_judge_records_keeps_each_on_its_scale(caplog: pytest.LogCaptureFixture) -> None:
    """Every correct 0/1 answer was learnt as 0 once one 1-10 record sat in its benchmark."""
    rows = recs("mixed-a", [
        {"s": 1.0, "w": 0.0},  # 0/1
        {"s": 1.0, "w": 0.0},
        {"s": 0.0, "w": 0.0},
        {"s": 9.0, "w": 3.0},  # judge
        {"s": 10.0, "w": 1.0},
        {"s": 1.0, "w": 1.0},  # either: the majority (0/1 here) decides
    ])
    want = np.array([[1, 0], [1, 0], [0, 0], [8 / 9, 2 / 9], [1, 0], [1, 1]])
    with caplog.at_level(logging.WARNING):
        models, y = target_matrix(rows)
        assert models == ["s", "w"]
        np.testing.assert_allclose(y, want)
        np.testing.assert_allclose(score_matrix(rows, ["s", "w"]), want)  # eval reads what training learnt
        score_matrix(rows, ["w"])
    said = scale_warnings(caplog)
    assert len(said) == 1, said  # once per benchmark, however often its matrix is built
    assert "benchmark 'mixed-a'" in said[0] and "3 records" in said[0] and "judge: 2" in said[0]


def test_records_scoring_1_everywhere_follow_a_judge_majority() -> None:
    rows = recs("mixed-b", [{"s": 8.0, "w": 2.0}, {"s": 6.0, "w": 4.0}, {"s": 1.0, "w": 1.0}, {"s": 1.0, "w": 0.0}])
    np.testing.assert_allclose(target_matrix(rows)[1], [[7 / 9, 1 / 9], [5 / 9, 3 / 9], [0, 0], [1, 0]])


def test_one_scale_per_benchmark_needs_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    rows = [*recs("unit-c", [{"s": 1.0, "w": 0.0}, {"s": 1.0, "w": 1.0}, {"s": 0.4, "w": NAN}]),
            *recs("judge-c", [{"s": 7.0, "w": 4.0}, {"s": 1.0, "w": 1.0}])]
    with caplog.at_level(logging.WARNING):
        y = score_matrix(rows, ["s", "w"])
    np.testing.assert_allclose(y, [[1, 0], [1, 1], [0.4, NAN], [6 / 9, 3 / 9], [0, 0]])
    assert scale_warnings(caplog) == []


def test_the_scale_comes_from_all_of_a_records_models() -> None:
    """Evaluating one pair must not read a judge record as 0-1 because the pair's own scores are 1 and 1."""
    rows = recs("judge-d", [{"s": 1.0, "w": 1.0, "other": 7.0}, {"s": 5.0, "w": 2.0}])
    np.testing.assert_allclose(score_matrix(rows, ["s", "w"]), [[0, 0], [4 / 9, 1 / 9]])


def test_a_file_on_the_judge_scale_keeps_its_apgr_and_cpt() -> None:
    """Rescaling 1-10 to 0-1 is affine per file, so a pair's APGR and CPT stay what the raw scores give."""
    rng = np.random.default_rng(0)
    raw = rng.integers(1, 11, size=(60, 2)).astype(float)
    rows = recs("judge-e", [{"s": a, "w": b} for a, b in raw])
    y = score_matrix(rows, ["s", "w"])
    np.testing.assert_allclose(y, (raw - 1) / 9)
    router = rng.normal(size=60)
    before, after = pair_report(router, raw[:, 0], raw[:, 1]), pair_report(router, y[:, 0], y[:, 1])
    assert after.apgr == pytest.approx(before.apgr)
    assert (after.cpt50, after.cpt80) == pytest.approx((before.cpt50, before.cpt80))


def test_normalise_scores_reads_rows_of_an_array_as_one_benchmark() -> None:
    y = np.array([[1.0, 0.0], [9.0, 5.0], [1.0, NAN], [0.5, 1.0]])
    np.testing.assert_allclose(normalise_scores(y), [[1, 0], [8 / 9, 4 / 9], [1, NAN], [0.5, 1]])
    np.testing.assert_allclose(normalise_scores(y, np.array([False, True, True, False])),
                               [[1, 0], [8 / 9, 4 / 9], [0, NAN], [0.5, 1]])
    assert y[1, 0] == 9.0  # the input is left as it was
