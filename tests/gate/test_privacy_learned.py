"""The learned second opinion for health/confidential: what it adds to the rules, what it must not touch
(precise hits, look-alikes, ordinary text), its windows over long texts, and its off switch / broken file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from moai.gate import privacy_learned as pl
from moai.gate.privacy import detect, detect_text

IMPLICIT_HEALTH = ("Since the accident my brother can't feel his legs and the wheelchair doesn't fit in our car, "
                   "what are my options?")
UNMARKED_CONFIDENTIAL = ("Los números del tercer trimestre salen el martes: perdimos el cliente principal y la "
                         "facturación cae un 18 %. Prepara el mensaje a inversores.")
BENIGN = ["What are the early warning signs of a stroke?",
          "Write a scene where a manager tells a fictional employee he is being laid off.",
          "Return the number of seconds since the epoch as a floating point number.",
          "Wie schreibe ich ein Arbeitszeugnis für einen Praktikanten?"]


def _fresh() -> None:
    getattr(pl.load_model, "cache_clear", lambda: None)()  # a test may have swapped in a plain function
    detect_text.cache_clear()


@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MOAI_PRIVACY_MODEL", raising=False)
    _fresh()
    yield
    _fresh()


def _kinds(text: str) -> list[str]:
    return detect(text).kinds


def test_shipped_model_adds_what_the_rules_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    model = pl.load_model()
    assert model is not None and set(model.thresholds) == {"health", "confidential"}
    assert all(0.25 <= t <= 0.99 for t in model.thresholds.values())
    monkeypatch.setenv("MOAI_PRIVACY_MODEL", "off")
    _fresh()
    assert _kinds(IMPLICIT_HEALTH) == [] and _kinds(UNMARKED_CONFIDENTIAL) == []  # the rules alone miss both
    monkeypatch.delenv("MOAI_PRIVACY_MODEL")
    _fresh()
    assert _kinds(IMPLICIT_HEALTH) == ["health"]
    assert _kinds(UNMARKED_CONFIDENTIAL) == ["confidential"]
    rep = detect(IMPLICIT_HEALTH)
    assert "learned classifier" in rep.reasons()[0] and "legs" not in rep.reasons()[0]  # no content in the trace


@pytest.mark.parametrize("text", BENIGN)
def test_shipped_model_leaves_look_alikes_and_ordinary_text(text: str) -> None:
    assert not detect(text).sensitive


def _toy_model() -> pl.SemanticModel:
    texts = ["my mother has cancer and starts chemo", "I was diagnosed with diabetes last week",
             "our CFO's salary is 300k, keep it quiet", "we will fire Anna on Monday, not announced",
             "how do I sort a list in python", "what is the capital of france", "recipe for pancakes",
             "explain how tcp handshakes work"]
    labels = ["health", "health", "confidential", "confidential", "none", "none", "none", "none"]
    return pl.SemanticModel(pl.build_pipeline().fit(texts, labels), {"health": 0.4, "confidential": 0.4})


def test_learned_hit_never_shadows_a_precise_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pl, "load_model", _toy_model)
    detect_text.cache_clear()
    text = "my mother has cancer, starts chemo; pay it with card 4539 1488 0343 6467"
    rep = detect(text)
    assert set(rep.kinds) >= {"payment_card", "health"}
    card = next(d for d in rep.detections if d.kind == "payment_card")
    assert text[card.start:card.end] == "4539 1488 0343 6467"  # the card's own span, not the learned window
    # health found by the rules already: the learned model does not add a second, vaguer health hit
    assert not any("learned" in d.explanation for d in rep.detections)


def test_long_text_is_read_in_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    filler = "The quarterly report covers shipping volumes, routes and warehouse capacity in detail. " * 40
    text = filler + IMPLICIT_HEALTH + " " + filler
    windows = pl.windows(text)
    assert windows[0][0] == 0 and max(b for _, b in windows) == len(text)
    assert all(b - a <= pl.PASSAGE for a, b in windows)
    assert all(nxt[0] <= cur[1] for cur, nxt in zip(windows, windows[1:], strict=False))  # no gap
    rep = detect(text)
    hit = next(d for d in rep.detections if d.kind == "health")
    assert "wheelchair" in text[hit.start:hit.end]  # the window holding the disclosure, not the whole text
    assert pl.windows("short text") == [(0, 10)]
    assert len(pl.windows("Some sentence here. " * 10**4)) <= pl.MAX_WINDOWS
    assert len(pl.windows("x" * 10**5)) <= pl.MAX_WINDOWS  # no sentence or space to cut at


def test_off_switch_and_unreadable_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOAI_PRIVACY_MODEL", "off")
    assert pl.load_model() is None
    # the rules keep working without it
    assert detect("I was diagnosed with diabetes last month, what should I eat?").kinds == ["health"]
    bad = tmp_path / "model.pkl"
    bad.write_bytes(b"not a pickle")
    monkeypatch.setenv("MOAI_PRIVACY_MODEL", str(bad))
    _fresh()
    with pytest.raises(pl.PrivacyModelError, match="not loaded"):  # only `off` runs on the rules alone
        pl.load_model()


def test_retrained_model_round_trips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "semantic.pkl"
    pl.save(_toy_model(), path)
    monkeypatch.setenv("MOAI_PRIVACY_MODEL", str(path))
    _fresh()
    model = pl.load_model()
    assert model is not None and model.thresholds == {"health": 0.4, "confidential": 0.4}
    assert [h.kind for h in model.find("we will fire Anna on Monday, not announced yet")] == ["confidential"]
