"""A learned second opinion for the two privacy kinds that have no shape: `health` and `confidential`.

The rules in `privacy_context` catch disclosures phrased the way their lexicons expect and miss new
phrasings ("my chemo starts monday", gossip about a colleague's dismissal with no marker word). This model
reads the text as a whole (a long one sentence by sentence): word and character n-grams (characters carry
stems across FR/DE/ES inflections and typos) into a multinomial logistic regression over {none, health,
confidential}, trained by `data/privacy/train_semantic.py` on prompts written for it, the tuned splits of
the evaluation set and ordinary text. Each kind fires only above a threshold chosen out of fold to keep
false positives on benign look-alikes rare, so the rules stay the precise part and the model adds recall.
The fitted pipeline ships with the package (a few MB; the server loads it at start, other callers on first
use); `MOAI_PRIVACY_MODEL=off` turns the second opinion off, a path points at a retrained one.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scipy.sparse

from moai.gate.privacy_rules import FICTION, FIRST_PERSON, Hit, is_template, sentences, translated_quotes

log = logging.getLogger(__name__)

MODEL_PATH = Path(__file__).with_name("default") / "privacy_semantic.pkl"
LABELS = ("none", "health", "confidential")


@dataclass
class SemanticModel:
    """A fitted text pipeline and, per kind, the probability above which it reports that kind."""

    pipeline: Any
    thresholds: dict[str, float]

    def probabilities(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Per text, the model's probability of each label."""
        first, last = self.pipeline.steps[0][1], self.pipeline.steps[-1][1]
        parts = getattr(first, "transformer_list", None)
        if parts is not None and len(self.pipeline.steps) == 2:
            # the pipeline's own path validates and stacks through FeatureUnion: ~0.3 ms of 1.2 per prompt
            X = scipy.sparse.hstack([t.transform(texts) for _, t in parts], format="csr")
            P = last.predict_proba(X)
        else:
            P = self.pipeline.predict_proba(list(texts))
        classes = list(self.pipeline.classes_)
        return [{c: float(p[classes.index(c)]) for c in LABELS if c in classes} for p in P]

    def find(self, text: str) -> Iterator[Hit]:
        """Per kind whose probability clears its threshold, one hit over the window that reads most like it.

        Long texts are read sentence by sentence (see `windows`).
        """
        if len(text.strip()) < 12 or is_template(text):  # too short to disclose anything / a form to fill in
            return
        for qa, qb in translated_quotes(text):  # words to translate are nobody's; the request around them is read
            text = text[:qa] + " " * (qb - qa) + text[qb:]
        spans = windows(text)
        if len(text) <= WINDOW:  # a sentence read alone counts when it speaks of somebody, not a case or a topic
            spans = [sp for sp in spans if sp == (0, len(text)) or _SOMEONE.search(text, *sp)]
        probs = self.probabilities([text[a:b] for a, b in spans])
        for kind, t in self.thresholds.items():
            p, (a, b) = max(((pr.get(kind, 0.0), sp) for pr, sp in zip(probs, spans, strict=True)),
                            key=lambda x: x[0])
            # a novel's heroine or made-up data is nobody (a short text is one context: its sentences too)
            if p >= t and not (FICTION.search(text) if len(text) <= WINDOW else FICTION.search(text, a, b)):
                yield Hit(kind, a, b, kind.upper(),
                          f"learned classifier: reads as a {kind} disclosure (p={p:.2f} >= {t:.2f})")


WINDOW = 600  # characters: a text up to this long is read whole (the training prompts are 5 to 80 words)
PASSAGE = 300  # a longer one sentence by sentence, and two sentences at a time when they fit in this many
MAX_WINDOWS = 64
_SOMEONE = re.compile(FIRST_PERSON.pattern + r"|\b(?-i:[A-Z][a-z]+)'s\b|\b(?:he|she|his|her|him|il|elle|er|él|ella)\b",
                      re.I)
_SENTENCE_END = re.compile(r"[.!?;:]\s+|\n+")


def windows(text: str) -> list[tuple[int, int]]:
    """(start, end) spans to read: the whole text when short, else its sentences and pairs of sentences, so
    one disclosing sentence in a pasted document is not drowned by the rest (evenly thinned past
    `MAX_WINDOWS`, to bound the cost of very long texts)."""
    if len(text) <= WINDOW:
        # Read whole, and each sentence alone too: one unrelated sentence (or a prompt's own "Previous
        # answer:" line) next to a disclosure must not dilute it below the threshold.
        alone = [(a, b) for a, b in sentences(text) if len(text[a:b].split()) >= 4 and b - a < len(text)]
        return [(0, len(text)), *alone]
    pieces = _pieces(text)
    out: list[tuple[int, int]] = []
    for i, (a, b) in enumerate(pieces):  # each sentence, and each with the next one (a disclosure may span two)
        out.append((a, b))
        if i + 1 < len(pieces) and pieces[i + 1][1] - a <= PASSAGE:
            out.append((a, pieces[i + 1][1]))
    if len(out) > MAX_WINDOWS:
        step = -(-len(out) // MAX_WINDOWS)
        out = out[::step]
    return out


def _pieces(text: str) -> list[tuple[int, int]]:
    """Sentence spans, a run-on sentence cut at a space past `PASSAGE` characters."""
    pieces: list[tuple[int, int]] = []
    start = 0
    for end in [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]:
        while end - start > PASSAGE:  # a run-on sentence: cut at a space
            cut = text.rfind(" ", start + PASSAGE // 2, start + PASSAGE)
            cut = cut if cut > start else start + PASSAGE
            pieces.append((start, cut))
            start = cut
        if end > start:
            pieces.append((start, end))
            start = end
    return [(a, b) for a, b in pieces if text[a:b].strip()]


def build_pipeline(C: float = 16.0) -> Any:
    """Word 1-2-grams + character 2-5-grams (within words), TF-IDF, multinomial logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, make_pipeline

    features = FeatureUnion([
        ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                                  lowercase=True, strip_accents="unicode", max_features=40_000)),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2,
                                  lowercase=True, max_features=60_000)),
    ])
    return make_pipeline(features, LogisticRegression(C=C, max_iter=2000, class_weight="balanced"))


def save(model: SemanticModel, path: Path = MODEL_PATH) -> None:
    """Pickle the model, without the n-grams the vectorizers dropped (sklearn keeps them only for inspection)."""
    for step in model.pipeline.steps:
        for _, part in getattr(step[1], "transformer_list", []):
            if hasattr(part, "stop_words_"):
                part.stop_words_ = None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)


@functools.lru_cache(maxsize=1)
def load_model() -> SemanticModel | None:
    """The shipped (or `MOAI_PRIVACY_MODEL`-named) model; None when turned off or not present."""
    setting = os.environ.get("MOAI_PRIVACY_MODEL", "")
    if setting.lower() in {"off", "0", "false", "none"}:
        return None
    path = Path(setting) if setting else MODEL_PATH
    if not path.exists():
        return None
    try:
        with path.open("rb") as f:
            model = pickle.load(f)  # noqa: S301 - our own file, shipped inside the package
    except Exception as e:  # e.g. pickled by an incompatible scikit-learn: the rules still run
        log.error("privacy: learned model %s not loaded (%s); only the rules detect health/confidential", path, e)
        return None
    if not isinstance(model, SemanticModel):
        log.error("privacy: %s holds no SemanticModel; only the rules detect health/confidential", path)
        return None
    return model


def find_semantic(text: str) -> Iterator[Hit]:
    """The learned model's hits in one text (none when the model is off or missing)."""
    model = load_model()
    if model is not None:
        yield from model.find(text)
