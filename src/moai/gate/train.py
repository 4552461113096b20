"""Fit a gate from routing records: features, data-set balancing, the joint quality head, cost model."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

from moai.bench.datasets import RoutingRecord, normalise_scores
from moai.bench.scales import record_scales
from moai.gate.encoder import LEXICAL_NAMES, MiniLMEncoder, embed_cached, lexical_matrix, option_count
from moai.gate.quality import (
    SERIAL,
    DomainHead,
    FactorModel,
    KNNHead,
    LinearHead,
    QualityHead,
    Runner,
    canonical,
    domain_label,
    guess_card,
    stack_features,
)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class Featurizer:
    """Query text -> (dense standardised [embedding, lexical], sparse TF-IDF, raw embedding)."""

    max_tokens: int = 48
    head_tokens: int = 16
    tfidf_features: int = 30000
    quantized: bool = True  # the encoder's int8-MatMul variant (see moai.gate.encoder)
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    tfidf: Any = None
    encoder: MiniLMEncoder | None = field(default=None, repr=False)

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("quantized", False)  # gates saved before the variant existed embed in float
        self.__dict__.update(state)

    def _enc(self) -> MiniLMEncoder:
        if self.encoder is None:
            self.encoder = MiniLMEncoder(max_tokens=self.max_tokens, head_tokens=self.head_tokens,
                                         quantized=self.quantized)
        return self.encoder

    def embed(self, texts: Sequence[str], cached: bool = True, progress: Any = None) -> np.ndarray:
        if cached:
            return embed_cached(self._enc(), texts, progress=progress)
        return self._enc().encode(texts)

    def fit(self, texts: Sequence[str], E: np.ndarray) -> Featurizer:
        from sklearn.feature_extraction.text import TfidfVectorizer

        D = np.hstack([E, lexical_matrix(texts)])
        self.mean, self.std = D.mean(0), D.std(0) + 1e-6
        if self.tfidf_features > 0:
            try:
                self.tfidf = TfidfVectorizer(
                    sublinear_tf=True, min_df=2, ngram_range=(1, 2), max_features=self.tfidf_features,
                    dtype=np.float32,
                ).fit(texts)
            except ValueError:  # too few texts for a vocabulary: dense features only
                self.tfidf = None
        return self

    def transform(
        self, texts: Sequence[str], E: np.ndarray
    ) -> tuple[np.ndarray, sparse.csr_matrix | None]:
        assert self.mean is not None and self.std is not None
        X = (np.hstack([E, lexical_matrix(texts)]) - self.mean) / self.std
        S = self._tfidf_rows(texts) if self.tfidf is not None else None
        return X.astype(np.float64), S

    def _tfidf_rows(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """TF-IDF rows; a few texts (one request) skip scikit-learn's per-call validation, which costs more
        than the arithmetic (same values: sublinear tf, idf, l2 norm, as the fitted vectorizer)."""
        tf = self.tfidf
        if len(texts) > 8 or not (tf.sublinear_tf and tf.use_idf and tf.norm == "l2"):
            return tf.transform(texts).tocsr()
        analyze, vocab, idf = tf.build_analyzer(), tf.vocabulary_, tf.idf_
        indptr, indices, data = [0], [], []
        for t in texts:
            counts: dict[int, int] = {}
            for term in analyze(t):
                j = vocab.get(term)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            cols = np.fromiter(sorted(counts), dtype=np.int32, count=len(counts))
            vals = (1.0 + np.log([counts[j] for j in cols])) * idf[cols] if len(cols) else np.zeros(0)
            vals = vals / max(float(np.sqrt((vals * vals).sum())), 1e-12)
            indices.append(cols)
            data.append(vals.astype(tf.dtype))
            indptr.append(indptr[-1] + len(cols))
        return sparse.csr_matrix(
            (np.concatenate(data) if data else np.zeros(0, tf.dtype),
             np.concatenate(indices) if indices else np.zeros(0, np.int32), np.array(indptr)),
            shape=(len(texts), len(vocab)),
        )

    @property
    def n_dense(self) -> int:
        return 384 + len(LEXICAL_NAMES)


@dataclass
class CostModel:
    """Expected USD and seconds per answer per model: a + b * prompt_tokens, fit on records that have them.

    Measured latency beats a card's guess: for small local models the prompt's prefill, not the answer,
    dominates, which a tokens-per-second figure cannot express.
    """

    coef: dict[str, tuple[float, float]] = field(default_factory=dict)
    out_tokens: dict[str, float] = field(default_factory=dict)
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)  # seconds

    def fit(self, records: Sequence[RoutingRecord], n_tokens: Sequence[int]) -> CostModel:
        per: dict[str, list[tuple[int, float]]] = {}
        lat: dict[str, list[tuple[int, float]]] = {}
        outs: dict[str, list[float]] = {}
        for r, n in zip(records, n_tokens, strict=True):
            for m, c in r.cost_usd.items():
                per.setdefault(canonical(m), []).append((n, c))
            for m, ms in r.latency_ms.items():
                lat.setdefault(canonical(m), []).append((n, ms / 1000.0))
            for m, t in r.tokens.items():
                if isinstance(t, dict) and isinstance(t.get("output"), (int, float)):
                    outs.setdefault(canonical(m), []).append(float(t["output"]))
        self.coef = {m: _line(pts) for m, pts in per.items()}
        self.latency = {m: _line(pts) for m, pts in lat.items()}
        self.out_tokens = {m: float(np.median(v)) for m, v in outs.items()}
        return self

    def predict(self, model: str, n_tokens: int) -> float | None:
        c = self.coef.get(canonical(model))
        return None if c is None else max(c[0] + c[1] * n_tokens, 0.0)

    def predict_latency(self, model: str, n_tokens: int) -> float | None:
        c = getattr(self, "latency", {}).get(canonical(model))  # gates saved before latency was learned
        return None if c is None else max(c[0] + c[1] * n_tokens, 0.0)


def _line(pts: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """a + b * x through the points, b ≥ 0 (more prompt never costs less), the mean kept exact."""
    x = np.array([p[0] for p in pts], float)
    y = np.array([p[1] for p in pts], float)
    if len(pts) >= 3 and x.std() > 0:
        b = max(float(np.polyfit(x, y, 1)[0]), 0.0)
        return float(np.mean(y - b * x)), b
    return float(y.mean()), 0.0


def row_weights(records: Sequence[RoutingRecord], power: float = 0.5) -> np.ndarray:
    """Down-weight big benchmarks (n^-power per row) so small ones still shape the shared layer."""
    bench = [r.benchmark or r.source for r in records]
    counts: dict[str, int] = {}
    for b in bench:
        counts[b] = counts.get(b, 0) + 1
    w = np.array([counts[b] ** -power for b in bench])
    return w * len(w) / w.sum()


def target_matrix(records: Sequence[RoutingRecord]) -> tuple[list[str], np.ndarray]:
    """Canonical model list and the (N, M) score matrix (0-1, NaN = unobserved), 1-10 judges rescaled."""
    models: list[str] = []
    col: dict[str, int] = {}
    for r in records:
        for m in r.scores:
            c = canonical(m)
            if c not in col:
                col[c] = len(models)
                models.append(c)
    Y = np.full((len(records), len(models)), np.nan)
    for i, r in enumerate(records):
        for m, s in r.scores.items():
            Y[i, col[canonical(m)]] = s
    # each record's own scale, within its benchmark: a benchmark may mix 0/1 and 1-10 records
    return models, np.clip(normalise_scores(Y, record_scales(records)), 0.0, 1.0)


@dataclass(frozen=True)
class GradingFailure:
    """A model's scores on one multiple-choice domain that sit far below guessing."""

    domain: str
    model: str
    n: int
    mean: float
    chance: float


def grading_failures(records: Sequence[RoutingRecord], models: Sequence[str], Y: np.ndarray,
                     z: float = 3.0, min_n: int = 30) -> list[tuple[GradingFailure, np.ndarray]]:
    """Each (domain, model) whose mean score on multiple-choice questions is ``z`` standard errors under the
    chance rate, with the rows of ``Y`` it covers.

    No model answers dozens of questions worse than a coin toss by ability: the grading failed to read its
    answers (in RouteLLM's MMLU records gpt-4-1106-preview scores 0.03 on 191 high-school mathematics
    questions, Mixtral 0.33). Learnt as they are, such labels tell the gate that the model is weak at whatever
    resembles the domain, well beyond the data set they came from.
    """
    k = np.array([option_count(r.prompt) for r in records])
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        if k[i]:
            groups.setdefault(domain_label(r.benchmark or r.source, r.category), []).append(i)
    found = []
    for dom, rows in groups.items():
        idx = np.array(rows)
        for j, m in enumerate(models):
            sub = idx[np.isfinite(Y[idx, j])]
            if len(sub) < min_n:
                continue
            p = 1.0 / k[sub]
            mean, chance = float(Y[sub, j].mean()), float(p.mean())
            if mean < chance - z * float(np.sqrt(np.sum(p * (1 - p)))) / len(sub):
                found.append((GradingFailure(dom, m, len(sub), round(mean, 4), round(chance, 4)), sub))
    return found


# the lowest value each numeric setting takes, and whether that value itself is refused (default: 0, allowed)
_LOWEST: dict[str, tuple[float, bool]] = {
    "hidden": (1, False), "epochs": (1, False), "knn_k": (1, False),
    "linear_c": (0, True), "domain_c": (0, True),  # inverse regularisation strengths: 0 is no model at all
    "max_tokens": (18, False),  # the encoder keeps 16 head tokens plus [CLS] and [SEP]
}
_HIGHEST: dict[str, float] = {"max_tokens": 512}  # MiniLM has 512 positions


@dataclass
class TrainConfig:
    hidden: int = 48
    epochs: int = 30
    pair_weight: float = 0.0
    factor_sparse: bool = False
    w_factor: float = 0.5  # blend weights: the joint factor head was the weakest alone in CV
    w_knn: float = 1.0
    w_linear: float = 1.5
    linear_c: float = 1.0
    w_domain: float = 3.0  # CV (3 folds, 2 seeds): MMLU APGR +0.012 / +0.016, the other sets unchanged
    domain_c: float = 1.0
    knn_k: int = 64
    # kNN in the top 64 principal components: a 5 MB index instead of 30 MB (all of ../shared/data/routing),
    # ~2.5 ms less per decision than 384 dims and ~0.5 ms less than 128, same CV quality as either
    knn_dims: int = 64
    tfidf_features: int = 30000
    max_tokens: int = 48
    # int8 encoder: ~1.4-1.7x faster per query; CV vs float (3 folds x 3 seeds): MMLU APGR -0.002, GSM8K -0.011,
    # the RouterBench sets and LLMRouter within 0.002 AUC
    quantized_encoder: bool = True
    # leave a model's scores on a multiple-choice domain far below guessing (a grading failure, not ability) out
    # of the heads: learnt, RouteLLM's MMLU one teaches the gate that gpt-4 is weak at maths, whatever the query.
    # Trained on all of ../shared/data/routing, MT-Bench APGR (out of domain, GPT-4 judgements) 0.721 -> 0.770
    mask_below_chance: bool = True
    # ...and keep each one for its own data set's questions only: an offset on the failing model in proportion
    # to the domain head's P(domain | query) (needs w_domain > 0). That data set's held-out records share the
    # failure: 3-fold CV, MMLU APGR 0.673 learnt, 0.642 left out, 0.678 left out and kept in domain
    failure_in_domain: bool = True
    seed: int = 0

    def problems(self) -> list[str]:
        """What makes this configuration unusable, one phrase per setting (empty: usable).

        Such a gate used to train without complaint and then score NaN (an infinite weight: inf / inf in the
        blend) or crash every command that loads it (all head weights 0: no estimate at all)."""
        from dataclasses import fields

        found = []
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                found.append(f"{f.name}={v} must be a finite number")
                continue
            low, strict = _LOWEST.get(f.name, (0, False))
            if v < low or (strict and v == low):
                found.append(f"{f.name}={v} must be {'above' if strict else 'at least'} {low}")
            elif f.name in _HIGHEST and v > _HIGHEST[f.name]:
                found.append(f"{f.name}={v} must be at most {_HIGHEST[f.name]}")
        if not found and max(self.w_factor, self.w_knn, self.w_linear) == 0:
            found.append("w_factor, w_knn and w_linear are all 0: the gate would have no estimate to give (the "
                         "domain head only adjusts theirs)")
        return found

    def check(self) -> TrainConfig:
        """This configuration, or a ValueError naming every setting that makes it unusable."""
        found = self.problems()
        if found:
            raise ValueError(f"training settings: {'; '.join(found)}")
        return self

    def override(self, pairs: Sequence[str]) -> TrainConfig:
        """A copy with ``key=value`` settings applied (``moai gate train --set w_domain=0``); a ValueError
        names an unknown key, a value of the wrong type, or one out of range (``problems``)."""
        from dataclasses import fields, replace

        types = {f.name: type(getattr(self, f.name)) for f in fields(self)}
        changes: dict[str, Any] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep or key not in types:
                raise ValueError(f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(types)}")
            kind = types[key]
            if kind is bool:
                if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                    raise ValueError(f"--set {pair!r}: {key} takes true or false")
                changes[key] = raw.lower() in {"1", "true", "yes"}
            else:
                try:
                    changes[key] = kind(raw)
                except ValueError:
                    raise ValueError(f"--set {pair!r}: {key} takes a {kind.__name__}") from None
                if "_" in raw:  # Python reads 1_0 as 10: a typo more likely than a digit separator
                    raise ValueError(f"--set {pair!r}: {key} takes a plain number")
                bad = [p for p in replace(self, **{key: changes[key]}).problems() if p.startswith(f"{key}=")]
                if bad:
                    raise ValueError(f"--set {pair!r}: {bad[0]}")
        return replace(self, **changes).check()


def failure_offset(head: QualityHead, observed: float, j: int, p_domain: np.ndarray, X: np.ndarray,
                   S: sparse.csr_matrix | None, E: np.ndarray) -> float:
    """How far a masked failure's scores sit under the heads' estimate of model ``j`` on the failing domain's
    own questions, per unit of the domain head's P(domain | question) there (at least 0.5: a domain the head
    hardly recognises keeps at most twice the gap)."""
    gap = observed - float(head.predict(X, S, E)[:, j].mean())
    return float(np.clip(gap / max(float(p_domain.mean()), 0.5), -1.0, 1.0))


def fit_factor(fm: FactorModel, X: np.ndarray, S: sparse.csr_matrix | None, Y: np.ndarray, rw: np.ndarray,
               on_epoch: Callable[[int], None] | None = None) -> FactorModel:
    """Fit the joint factor model and hand it back (a task of its own: it may run on another machine)."""
    fm.fit(X, S, Y, rw, progress=on_epoch)
    return fm


def fit_domain(head: DomainHead, Z: sparse.csr_matrix, labels: Sequence[str], Y: np.ndarray) -> DomainHead:
    """Fit the domain head and hand it back (a task of its own, like the factor model)."""
    return head.fit(Z, labels, Y)


def fit_head(
    records: Sequence[RoutingRecord],
    cfg: TrainConfig,
    progress: Progress | None = None,
    featurizer: Featurizer | None = None,
    runner: Runner | None = None,
) -> tuple[Featurizer, QualityHead, CostModel, np.ndarray]:
    """Train features + quality head + cost model; returns the training embeddings too (for reuse).

    The factor model, the domain head and every model's regression are independent fits: ``runner`` may run
    them side by side (``moai.scale`` spreads them over a Ray cluster); by default they run here, one after
    another.
    """
    run = runner or SERIAL
    texts = [r.prompt for r in records]
    feat = featurizer or Featurizer(max_tokens=cfg.max_tokens, tfidf_features=cfg.tfidf_features,
                                    quantized=cfg.quantized_encoder)
    done = [0]

    def emb_prog(k: int) -> None:
        done[0] += k
        if progress:
            progress("embed", done[0], len(texts))

    E = feat.embed(texts, progress=emb_prog)
    if progress and done[0] != len(texts):  # a repeated prompt is embedded once: the count stops short of the total
        progress("embed", len(texts), len(texts))
    feat.fit(texts, E)
    X, S = feat.transform(texts, E)
    models, Y = target_matrix(records)
    failures = grading_failures(records, models, Y)
    if cfg.mask_below_chance:
        for failure, rows in failures:
            Y[rows, models.index(failure.model)] = np.nan
    rw = row_weights(records)
    fm = FactorModel(hidden=cfg.hidden, epochs=cfg.epochs, pair_weight=cfg.pair_weight, seed=cfg.seed)
    fm_job = None
    if cfg.w_factor > 0:
        on_epoch = (lambda ep: progress("train", ep, cfg.epochs)) if progress and run is SERIAL else None
        fm_job = run.submit(fit_factor, fm, X, S if cfg.factor_sparse else None, Y, rw, on_epoch)
    Z = stack_features(X, S) if cfg.w_domain > 0 or cfg.w_linear > 0 else None
    dom_job = None
    if cfg.w_domain > 0:
        labels = [domain_label(r.benchmark or r.source, r.category) for r in records]
        dom_job = run.submit(fit_domain, DomainHead(C=cfg.domain_c), Z, labels, Y)
    # each model's own regression sees its rows unweighted: balancing only matters for shared layers
    linear = (LinearHead(C=cfg.linear_c).fit(X, S, Y, np.ones(len(Y)), runner=run, Z=Z)
              if cfg.w_linear > 0 else None)
    if fm_job is not None:
        fm = run.result(fm_job)
    knn = KNNHead(k=cfg.knn_k, dims=cfg.knn_dims).fit(E, Y)
    domain = run.result(dom_job) if dom_job is not None else None
    weights = {"factor": cfg.w_factor, "knn": cfg.w_knn, "linear": cfg.w_linear, "domain": cfg.w_domain}
    head = QualityHead(models=models, factor=fm, knn=knn, linear=linear, weights=weights, domain=domain)
    head.cards = {m: guess_card(m) for m in models}
    offsets: dict[int, float] = {}
    if cfg.mask_below_chance and cfg.failure_in_domain and domain is not None and Z is not None:
        for n, (failure, rows) in enumerate(failures):
            k, j = domain.domains.index(failure.domain), models.index(failure.model)
            off = failure_offset(head, failure.mean, j, domain.proba(Z[rows])[:, k],
                                 X[rows], S[rows] if S is not None else None, E[rows])
            head.grader_offsets.append((k, j, off))
            offsets[n] = round(off, 4)
    head.suspect = [{**asdict(f), "masked": cfg.mask_below_chance, "in_domain_offset": offsets.get(n)}
                    for n, (f, _) in enumerate(failures)]
    n_tok = [len(t) // 4 + 1 for t in texts]  # ~4 characters per LLM token
    cost = CostModel().fit(records, n_tok)
    return feat, head, cost, E
