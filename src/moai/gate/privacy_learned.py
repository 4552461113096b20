"""A learned second opinion for the two privacy kinds that have no shape: `health` and `confidential`.

The rules in `privacy_context` catch disclosures phrased the way their lexicons expect and miss new
phrasings ("my chemo starts monday", gossip about a colleague's dismissal with no marker word). This model
reads the text as a whole (a long one sentence by sentence): word and character n-grams (characters carry
stems across FR/DE/ES inflections and typos) into a multinomial logistic regression over {none, health,
confidential}, trained by `data/privacy/train_semantic.py` on prompts written for it, the tuned splits of
the evaluation set and ordinary text. Each kind fires only above a threshold chosen out of fold to keep
false positives on benign look-alikes rare, so the rules stay the precise part and the model adds recall.
The fitted pipeline ships with the package (a few MB; the server loads it at start, other callers on first
use); `MOAI_PRIVACY_MODEL=off` turns the second opinion off, a path points at a retrained one. Only `off` turns
it off: a path to no file, or to a file holding no model, raises `PrivacyModelError` (`moai serve` stops with
one line), since quietly reading with the rules alone would send what only the model catches to cloud models.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from moai.config import ConfigError
from moai.gate import privacy_scan as scan
from moai.gate.privacy_rules import FICTION, FIRST_PERSON, Hit, is_template, sentences, translated_quotes

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
        quotes = translated_quotes(text)
        if quotes:  # words to translate are nobody's; the request around them is read (blanked in one pass)
            parts, last = [], 0
            for qa, qb in quotes:
                parts += [text[last:qa], " " * (qb - qa)]
                last = qb
            text = "".join([*parts, text[last:]])
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
    `MAX_WINDOWS`, to bound the cost of very long texts: what a long text guarantees is that every rule reads
    all of it, and the learned model reads these windows, spread evenly over it)."""
    if len(text) <= WINDOW:
        # Read whole, and each sentence alone too: one unrelated sentence (or a prompt's own "Previous
        # answer:" line) next to a disclosure must not dilute it below the threshold.
        alone = [(a, b) for a, b in sentences(text) if len(text[a:b].split()) >= 4 and b - a < len(text)]
        return [(0, len(text)), *alone]
    if len(text) >= scan.LONG:
        return _long_windows(text)
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


def _long_windows(text: str) -> list[tuple[int, int]]:
    """`windows` of a long text: the same list, in numpy, building only the windows kept after thinning."""
    a, b = _long_pieces(text)
    paired = np.zeros(len(a), dtype=np.bool_)
    paired[:-1] = b[1:] - a[:-1] <= PASSAGE  # each piece, then the piece with the next one when they fit
    first = np.cumsum(1 + paired) - (1 + paired)  # where each piece's window(s) sit in the full list
    total = int(first[-1] + 1 + paired[-1]) if len(a) else 0
    keep = np.arange(total)
    if total > MAX_WINDOWS:
        keep = keep[::-(-total // MAX_WINDOWS)]
    i = np.searchsorted(first, keep, side="right") - 1
    ends = np.where(keep > first[i], b[np.minimum(i + 1, len(b) - 1)], b[i])
    return list(zip(a[i].tolist(), ends.tolist(), strict=True))


_ASCII_SPACE = np.array([chr(i).isspace() for i in range(128)], dtype=np.bool_)
_MARKS = np.array([ord(c) for c in ".!?;:"], dtype=np.uint32)


def _long_pieces(text: str) -> tuple[np.ndarray, np.ndarray]:
    """`_pieces` of a long text, as (starts, ends). Its sentence ends are those of `_SENTENCE_END`
    (`[.!?;:]\\s+|\\n+`): a [.!?;:] before a space ends where the spaces after it end, and a run of line
    breaks ends where it ends, unless it is among the spaces after such a mark. Read as runs of spaces and of
    line breaks (arrays as long as there are runs, not as the text)."""
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8) if text.isascii() \
        else np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    n = len(codes)
    space = _ASCII_SPACE[np.minimum(codes, 127)]
    if codes.dtype != np.uint8 and (wide := codes > 127).any():
        uniq, inv = np.unique(codes[wide], return_inverse=True)
        space[wide] = np.array([chr(c).isspace() for c in uniq.tolist()], dtype=np.bool_)[inv]
    punct = np.isin(codes, _MARKS)
    edges = np.diff(space.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    blank_from, blank_to = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # runs of spaces
    edges = np.diff((codes == 10).view(np.int8), prepend=np.int8(0), append=np.int8(0))
    breaks_from, breaks_to = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # runs of line breaks
    after_mark = np.zeros(len(blank_from), dtype=np.bool_)  # the spaces right after a [.!?;:]
    after_mark[blank_from > 0] = punct[blank_from[blank_from > 0] - 1]
    held = after_mark[np.searchsorted(blank_from, breaks_from, side="right") - 1]
    ends = np.sort(np.concatenate([blank_to[after_mark], breaks_to[~held], [n]]))
    starts = np.concatenate([[0], ends[:-1]])
    ends, starts = ends[ends > starts], starts[ends > starts]
    if (ends - starts > PASSAGE).any():  # run-on sentences, cut at a space as `_pieces` cuts them
        a_parts, b_parts, done = [], [], 0
        for i in np.flatnonzero(ends - starts > PASSAGE).tolist():
            a_parts.append(starts[done:i])
            b_parts.append(ends[done:i])
            cuts = _cut(text, int(starts[i]), int(ends[i]))
            a_parts.append(np.array([x for x, _ in cuts], dtype=np.int64))
            b_parts.append(np.array([y for _, y in cuts], dtype=np.int64))
            done = i + 1
        starts = np.concatenate([*a_parts, starts[done:]])
        ends = np.concatenate([*b_parts, ends[done:]])
    run = np.searchsorted(blank_from, starts, side="right") - 1  # the run of spaces a piece starts in, if any
    blank = (run >= 0) & (blank_to[np.maximum(run, 0)] >= ends) if len(blank_from) else np.zeros(len(starts), bool)
    return starts[~blank], ends[~blank]


def _cut(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """A run-on sentence cut at a space past `PASSAGE` characters."""
    out = []
    while end - start > PASSAGE:
        cut = text.rfind(" ", start + PASSAGE // 2, start + PASSAGE)
        cut = cut if cut > start else start + PASSAGE
        out.append((start, cut))
        start = cut
    if end > start:
        out.append((start, end))
    return out


def _pieces(text: str) -> list[tuple[int, int]]:
    """Sentence spans, a run-on sentence cut at a space past `PASSAGE` characters."""
    pieces: list[tuple[int, int]] = []
    start = 0
    for end in [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]:
        pieces += _cut(text, start, end)
        start = max(start, end)
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


class PrivacyModelError(ConfigError):
    """The learned privacy model named by `MOAI_PRIVACY_MODEL` (or the shipped one) cannot be used. An error,
    not a fallback to the rules alone: health and confidential prompts that only the model catches would go to
    cloud models unnoticed. The message is one line, naming the variable and what to do."""


OFF = frozenset({"off", "0", "false", "none"})  # MOAI_PRIVACY_MODEL values that turn the model off


@functools.lru_cache(maxsize=1)
def load_model() -> SemanticModel | None:
    """The shipped (or `MOAI_PRIVACY_MODEL`-named) model; None only when turned off (`off`).

    Raises `PrivacyModelError` when the file does not exist or holds no model (a mistyped path, a model pickled
    by an incompatible scikit-learn): each call tries again, so a fixed setting needs no restart."""
    setting = os.environ.get("MOAI_PRIVACY_MODEL", "").strip()
    if setting.lower() in OFF:
        return None
    path = Path(setting) if setting else MODEL_PATH
    where = f"MOAI_PRIVACY_MODEL={setting}" if setting else f"the shipped privacy model ({path})"
    hint = "set MOAI_PRIVACY_MODEL to a model file, or to off to run on the rules alone"
    if not path.is_file():
        raise PrivacyModelError(f"{where}: {'not a file' if path.exists() else 'no such file'}; {hint}")
    try:
        with path.open("rb") as f:
            model = pickle.load(f)  # noqa: S301 - a model file the operator chose (the shipped one by default)
    except Exception as e:  # noqa: BLE001 - whatever unpickling raises, the model is unusable
        reason = " ".join(f"{type(e).__name__}: {e}".split())  # one line
        raise PrivacyModelError(f"{where}: not loaded ({reason}); {hint}") from e
    if not isinstance(model, SemanticModel):
        raise PrivacyModelError(f"{where}: holds no privacy model (a {type(model).__name__}); {hint}")
    return model


def find_semantic(text: str) -> Iterator[Hit]:
    """The learned model's hits in one text (none when the model is turned off; `PrivacyModelError` when the
    model cannot be loaded)."""
    model = load_model()
    if model is not None:
        yield from model.find(text)
