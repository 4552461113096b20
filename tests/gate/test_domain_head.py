"""The domain head: predicts a query's domain, scores each model by its record there, defers where it has none."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from moai.gate.quality import DomainHead, KNNHead, QualityHead, domain_label


def _data(n_per: int = 40, seed: int = 0) -> tuple[sparse.csr_matrix, list[str], np.ndarray]:
    """Two domains told apart by feature 0 vs 1; model 0 scores 0.9 / 0.2 there, model 1 only seen in 'law'."""
    rng = np.random.default_rng(seed)
    rows, labels, ys = [], [], []
    for d, (col, y0, y1) in {"math": (0, 0.9, np.nan), "law": (1, 0.2, 0.6)}.items():
        for _ in range(n_per):
            x = rng.normal(0, 0.1, 4)
            x[col] += 1.0
            rows.append(x)
            labels.append(d)
            ys.append([float(rng.random() < y0), np.nan if np.isnan(y1) else float(rng.random() < y1)])
    return sparse.csr_matrix(np.array(rows)), labels, np.array(ys)


def test_scores_by_predicted_domain_and_defers_where_unseen() -> None:
    Z, labels, Y = _data()
    head = DomainHead(C=10.0, smooth=0.0).fit(Z, labels, Y)
    assert head.domains == ["law", "math"]
    q_math = sparse.csr_matrix([[1.0, 0.0, 0.0, 0.0]])
    q_law = sparse.csr_matrix([[0.0, 1.0, 0.0, 0.0]])
    fallback = np.array([[0.5, 0.123]])
    pm, pl = head.predict(q_math, fallback)[0], head.predict(q_law, fallback)[0]
    math_mean = np.nanmean(Y[:40, 0])
    law_mean = np.nanmean(Y[40:, 0])
    assert pm[0] == pytest.approx(math_mean, abs=0.05) and pl[0] == pytest.approx(law_mean, abs=0.05)
    # model 1 was never scored on math: a math query gets (almost only) the fallback for it
    assert pm[1] == pytest.approx(0.123, abs=0.02)
    assert pl[1] == pytest.approx(np.nanmean(Y[40:, 1]), abs=0.05)


def test_smoothing_pulls_small_domains_to_the_overall_mean() -> None:
    Z, labels, Y = _data(n_per=3)
    raw = DomainHead(smooth=0.0).fit(Z, labels, Y)
    smooth = DomainHead(smooth=100.0).fit(Z, labels, Y)
    overall = np.nanmean(Y[:, 0])
    assert raw.means is not None and smooth.means is not None
    assert np.all(np.abs(smooth.means[:, 0] - overall) < np.abs(raw.means[:, 0] - overall) + 1e-12)


def test_one_domain_is_its_means_and_new_models_defer() -> None:
    Z, _, Y = _data()
    head = DomainHead(smooth=0.0).fit(Z, ["only"] * len(Y), Y)
    p = head.predict(Z[:2], np.full((2, 2), 0.3))
    assert np.allclose(p[:, 0], np.nanmean(Y[:, 0]))
    head.add_column(np.array([0.5, 0.5]))
    p = head.predict(Z[:2], np.full((2, 3), 0.3))
    assert np.allclose(p[:, 2], 0.3)


def test_quality_head_blends_the_domain_part_and_adds_models() -> None:
    Z, labels, Y = _data()
    E = np.asarray(Z.todense())
    E = E / np.linalg.norm(E, axis=1, keepdims=True)
    knn = KNNHead(k=5).fit(E, Y)
    head = QualityHead(models=["a", "b"], knn=knn, weights={"knn": 1.0, "domain": 3.0},
                       domain=DomainHead(C=10.0).fit(Z, labels, Y))
    X = np.asarray(Z.todense())
    parts = head.parts(X, None, E)
    assert set(parts) == {"knn", "domain"}
    blend = head.predict(X, None, E)
    assert np.allclose(blend, (parts["knn"] + 3.0 * parts["domain"]) / 4.0)
    j = head.add_model("c", "fam", 7.0)
    assert j == 2 and head.domain is not None and head.domain.seen is not None and not head.domain.seen[:, 2].any()


def test_domain_label() -> None:
    assert domain_label("mmlu", "anatomy") == "mmlu/anatomy"
    assert domain_label("gsm8k", None) == "gsm8k"


def test_knn_in_principal_components_finds_the_same_neighbours() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (4, 32))
    E = np.vstack([c + rng.normal(0, 0.2, (25, 32)) for c in centres])
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    Y = np.repeat(np.array([[1.0], [0.0], [1.0], [0.0]]), 25, axis=0)
    full = KNNHead(k=5).fit(E, Y)
    small = KNNHead(k=5, dims=8).fit(E, Y)
    assert small.E is not None and small.E.shape == (100, 8) and small.E.dtype == np.float32
    q = centres + rng.normal(0, 0.2, centres.shape)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    assert np.allclose(small.predict(q)[:, 0], [1, 0, 1, 0], atol=0.15)
    assert np.allclose(small.predict(q), full.predict(q), atol=0.15)


def test_a_small_subject_is_pulled_toward_its_benchmark() -> None:
    Z, _, Y = _data(n_per=40)
    # 'mmlu/tiny' has 2 records, both right; its benchmark 'mmlu' is mostly wrong; 'other' is mostly right
    labels = ["mmlu/big"] * 38 + ["mmlu/tiny"] * 2 + ["other"] * 40
    Y = np.zeros((80, 2))
    Y[38:40, 0] = 1.0
    Y[40:, 0] = 1.0
    Y[:, 1] = np.nan
    head = DomainHead(smooth=10.0).fit(Z, labels, Y)
    assert head.means is not None
    tiny = head.means[head.domains.index("mmlu/tiny"), 0]
    mmlu = (2 + 10 * 0.525) / (40 + 10)  # the benchmark's own mean, shrunk toward the overall 42/80
    assert tiny == pytest.approx((2 + 10 * mmlu) / 12)
    assert tiny < 0.5  # closer to its benchmark than a pull toward the overall mean would leave it
