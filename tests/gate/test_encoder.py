"""The encoder's int8 copy: built once, reused, and close enough to the float model that routing keeps."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest

from moai.gate.encoder import MiniLMEncoder, encoder_installed, quantized_model_file
from moai.gate.train import Featurizer

needs_encoder = pytest.mark.skipif(not encoder_installed(), reason="MiniLM ONNX model/tokenizer not installed")

TEXTS = [
    "What is the capital of France?", "Which city is France's capital?",
    "Write a Python function that reverses a linked list.", "Implement linked-list reversal in Python.",
    "Solve for x: 3x + 5 = 20", "My doctor says the biopsy results come back on Friday.",
]


@needs_encoder
def test_quantized_copy_is_built_once_and_reused(tmp_path: Path) -> None:
    handlers = list(logging.getLogger().handlers)
    first = quantized_model_file(directory=tmp_path)
    stamp = first.stat().st_mtime_ns
    again = quantized_model_file(directory=tmp_path)
    assert again == first and again.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left behind
    assert logging.getLogger().handlers == handlers  # the quantizer's chatter did not rewire logging


@needs_encoder
def test_quantized_embeddings_stay_close_to_float() -> None:
    q = MiniLMEncoder(quantized=True).encode(TEXTS)
    f = MiniLMEncoder(quantized=False).encode(TEXTS)
    assert not np.allclose(q, f)  # really a different model
    assert np.all((q * f).sum(1) > 0.98)
    sim_q, sim_f = q @ q.T, f @ f.T
    for i in (0, 2):  # each paraphrase pair stays each other's nearest neighbour
        assert np.argsort(-sim_q[i])[1] == np.argsort(-sim_f[i])[1] == i + 1
    assert MiniLMEncoder(quantized=True).cache_tag != MiniLMEncoder(quantized=False).cache_tag


def test_gates_saved_before_the_variant_keep_embedding_in_float() -> None:
    state = Featurizer().__dict__.copy()
    del state["quantized"]
    old = Featurizer.__new__(Featurizer)
    old.__setstate__(state)
    assert old.quantized is False and old._enc().quantized is False
    assert pickle.loads(pickle.dumps(Featurizer())).quantized is True


@needs_encoder
def test_an_unwritable_cache_builds_the_copy_in_the_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory would go")
    monkeypatch.setenv("MOAI_CACHE_DIR", str(blocker))
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path / "tmp"))
    built = quantized_model_file()
    assert built.is_file() and built.parent.parent == tmp_path / "tmp"
    assert quantized_model_file() == built  # found there next time


@needs_encoder
@pytest.mark.parametrize("quantized", [False, True])
def test_one_text_embeds_as_it_does_in_a_batch(quantized: bool) -> None:
    """What a gate trains on (batches) is what it serves (one request's text): the int8 copy quantizes each
    run's activations with one scale, so it embeds texts one at a time to keep them independent."""
    enc = MiniLMEncoder(quantized=quantized)
    texts = [*TEXTS, "", "word " * 400]
    batch = enc.encode(texts)
    one = np.vstack([enc.encode([t]) for t in texts])
    np.testing.assert_allclose(one, batch, atol=1e-5)
