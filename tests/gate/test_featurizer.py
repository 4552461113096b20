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
