"""The featurizer's one-request TF-IDF path gives scikit-learn's values exactly."""

from __future__ import annotations

import numpy as np

from moai.gate.train import Featurizer

TEXTS = [
    "Solve for x: 3x + 5 = 20", "What is the capital of France?", "Write a poem about the sea and the sky",
    "Solve the equation 2x - 4 = 10 for x", "Name the capital of Spain", "A poem about the moon, please",
    "Translate 'hello' into French", "How many legs does a spider have?",
]


def test_tfidf_rows_match_the_vectorizer() -> None:
    f = Featurizer()
    f.fit(TEXTS, np.zeros((len(TEXTS), 384), np.float32))
    queries = ["solve x + 1 = 2 for x", "the capital of the sea", "", "zzz unseen words only", "poem poem poem"]
    for q in queries:
        fast = f._tfidf_rows([q]).toarray()
        ref = f.tfidf.transform([q]).toarray()
        assert fast.shape == ref.shape and np.allclose(fast, ref, atol=1e-6)
    batch = f._tfidf_rows(queries[:3]).toarray()
    assert np.allclose(batch, f.tfidf.transform(queries[:3]).toarray(), atol=1e-6)


def test_one_row_stack_matches_scipy_hstack() -> None:
    from scipy import sparse

    from moai.gate.quality import stack_features

    f = Featurizer()
    f.fit(TEXTS, np.zeros((len(TEXTS), 384), np.float32))
    rng = np.random.default_rng(0)
    for q in ["solve x + 1 = 2 for x", "zzz unseen words only"]:
        X = rng.normal(size=(1, 396))
        S = f._tfidf_rows([q])
        fast = stack_features(X, S)
        ref = sparse.hstack([sparse.csr_matrix(X / np.sqrt(396)), S]).tocsr()
        assert fast.shape == ref.shape and np.allclose(fast.toarray(), ref.toarray())
        assert np.allclose((fast @ np.ones(fast.shape[1])), (ref @ np.ones(ref.shape[1])))
