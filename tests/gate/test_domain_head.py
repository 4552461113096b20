"""The per-source experts: a model's score can mean opposite things in two data sets."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from moai.gate.quality import DomainHead


def _rows(n: int, seed: int = 0) -> tuple[sparse.csr_matrix, np.ndarray, list[str]]:
    """Features [set A, set B, cue, noise]; model 0 is right on A when the cue is there, on B when it is not
    (an interaction no single additive regression can fit); model 1 is only ever scored on A."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 2, n)
    cue = rng.integers(0, 2, n)
    X = np.c_[src == 0, src == 1, cue, rng.normal(0, 0.1, n)].astype(float)
    y0 = np.where(src == 0, cue, 1 - cue).astype(float)
    y1 = np.where(src == 0, 0.8, np.nan)
    return sparse.csr_matrix(X), np.c_[y0, y1], ["A" if s == 0 else "B" for s in src]


def test_experts_learn_each_source_and_defer_where_a_model_was_never_scored() -> None:
    Z, Y, src = _rows(600)
    head = DomainHead(C=10.0, min_rows=50).fit(Z, Y, src)
    assert head.sources == ["A", "B"]
    assert head.slots is not None and head.slots[1, 1] == -1  # no expert for model 1 on B

    probe = sparse.csr_matrix(np.array([[1, 0, 1, 0], [1, 0, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0]], float))
    post = head.posterior(probe)
    assert (post[:2, 0] > 0.9).all() and (post[2:, 1] > 0.9).all()
    fallback = np.full((4, 2), 0.33)
    q = head.predict(probe, fallback)
    assert q[0, 0] > 0.8 and q[1, 0] < 0.2  # set A: right with the cue
    assert q[2, 0] < 0.2 and q[3, 0] > 0.8  # set B: right without it
    assert abs(q[0, 1] - 0.8) < 0.1  # model 1's expert on A
    assert abs(q[2, 1] - 0.33) < 0.05  # on B it defers to the other heads


def test_one_source_means_one_expert_per_model() -> None:
    Z, Y, _ = _rows(300, seed=1)
    head = DomainHead(min_rows=50).fit(Z, Y, ["only"] * Z.shape[0])
    q = head.predict(Z[:5], np.zeros((5, 2)))
    assert q.shape == (5, 2) and np.isfinite(q).all()
    assert np.allclose(head.posterior(Z[:5]), 1.0)
