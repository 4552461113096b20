"""Baseline routers behind one interface with the gate: ``fit(records)``, ``predict_quality(records)``.

``predict_quality`` returns an (n, len(models)) matrix over ``self.models`` (canonical names);
``score(records, strong, weak)`` is the pair score RouteLLM thresholds (higher = send to strong).
Implementations are our own, after the ideas in RouteLLM (arXiv 2406.18665): matrix factorisation
over pairwise battles, similarity-weighted Elo, and a classifier on the query embedding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from moai.bench.datasets import RoutingRecord
from moai.gate.encoder import MiniLMEncoder, embed_cached
from moai.gate.quality import KNNHead, canonical
from moai.gate.train import target_matrix

_ENCODER: MiniLMEncoder | None = None


def embed(records: Sequence[RoutingRecord]) -> np.ndarray:
    """Cached MiniLM vectors of the prompts, shared by every embedding baseline."""
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = MiniLMEncoder()
    return embed_cached(_ENCODER, [r.prompt for r in records])


class Router:
    """Base: subclasses set ``self.models`` in fit and implement ``predict_quality``."""

    name = "router"
    models: list[str]

    def fit(self, records: Sequence[RoutingRecord]) -> Router:
        self.models, self.Y = target_matrix(records)
        self.mean = np.nan_to_num(np.nanmean(self.Y, 0), nan=0.5)
        self._fit(records)
        return self

    def _fit(self, records: Sequence[RoutingRecord]) -> None:
        pass

    def predict_quality(self, records: Sequence[RoutingRecord]) -> np.ndarray:
        raise NotImplementedError

    def cols(self, names: Sequence[str]) -> list[int]:
        col = {m: j for j, m in enumerate(self.models)}
        out = []
        for n in names:
            c = canonical(n)
            if c not in col:
                raise KeyError(f"{self.name}: model {n!r} was not in the training records")
            out.append(col[c])
        return out

    def score(self, records: Sequence[RoutingRecord], strong: str, weak: str) -> np.ndarray:
        s, w = self.cols([strong, weak])
        q = self.predict_quality(records)
        return q[:, s] - q[:, w]


class RandomRouter(Router):
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def cols(self, names: Sequence[str]) -> list[int]:
        """Any model: one it never trained on gets a column of its own (random needs no training)."""
        self.models = [*self.models, *dict.fromkeys(c for c in map(canonical, names) if c not in self.models)]
        return super().cols(names)

    def predict_quality(self, records: Sequence[RoutingRecord]) -> np.ndarray:
        return np.random.default_rng(self.seed).random((len(records), len(self.models)))


class ConstantRouter(Router):
    """Always the same ranking: the training mean per model (always-best / -strong / -weak)."""

    def __init__(self, which: str = "best") -> None:
        self.which = which
        self.name = f"always-{which}"

    def predict_quality(self, records: Sequence[RoutingRecord]) -> np.ndarray:
        return np.tile(self.mean, (len(records), 1))

    def score(self, records: Sequence[RoutingRecord], strong: str, weak: str) -> np.ndarray:
        v = {"strong": 1.0, "weak": -1.0}.get(self.which)
        if v is None:
            return super().score(records, strong, weak)
        return np.full(len(records), v)

    @property
    def needs_training(self) -> bool:
        """Only always-best ranks models, by their training means; always-strong and always-weak need none."""
        return self.which == "best"

    def pick(self, names: Sequence[str], strong: str, weak: str) -> str:
        """The model this router sends every call to: the pair's strong or weak one, or (always-best) the one of
        ``names`` with the best training mean, the first named on a tie. A KeyError names a model always-best
        was not trained on."""
        if self.which in ("strong", "weak"):
            return strong if self.which == "strong" else weak
        means = self.mean[self.cols(names)]
        return names[int(np.argmax(means))]


class KNNRouter(Router):
    name = "knn"

    def __init__(self, k: int = 32) -> None:
        self.k = k

    def _fit(self, records: Sequence[RoutingRecord]) -> None:
        self.head = KNNHead(k=self.k, sharpness=0.0).fit(embed(records), self.Y)

    def predict_quality(self, records: Sequence[RoutingRecord]) -> np.ndarray:
        return self.head.predict(embed(records))


class EmbeddingClassifier(Router):
    """RouteLLM's BERT-router idea on the local encoder: per-model logistic regression P(good | query)."""

    name = "emb-classifier"

    def _fit(self, records: Sequence[RoutingRecord]) -> None:
        from sklearn.linear_model import LogisticRegression

        E = embed(records)
        self.clf: list[LogisticRegression | float] = []
        for j in range(len(self.models)):
            ok = np.isfinite(self.Y[:, j])
            yb = (self.Y[ok, j] >= 0.5).astype(int)
            if len(set(yb.tolist())) < 2:
                self.clf.append(float(yb.mean()) if len(yb) else 0.5)
                continue
            self.clf.append(LogisticRegression(C=1.0, max_iter=2000).fit(E[ok], yb))

    def predict_quality(self, records: Sequence[RoutingRecord]) -> np.ndarray:
        E = embed(records)
        return np.stack(
            [c.predict_proba(E)[:, 1] if not isinstance(c, float) else np.full(len(E), c) for c in self.clf], 1
        )


class TfidfClassifier(Router):
    """TF-IDF + per-model logistic regression: the simple lexical baseline."""

    name = "tfidf-lr"

    def _fit(self, records: Sequence[RoutingRecord]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.vec = TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2), max_features=50000)
        T = self.vec.fit_transform([r.prompt for r in records])
        self.clf: list[LogisticRegression | float] = []
        for j in range(len(self.models)):
            ok = np.isfinite(self.Y[:, j])
            yb = (self.Y[ok, j] >= 0.5).astype(int)
            if len(set(yb.tolist())) < 2:
                self.clf.append(float(yb.mean()) if len(yb) else 0.5)
                continue
            self.clf.append(LogisticRegression(C=1.0, solver="liblinear").fit(T[np.flatnonzero(ok)], yb))

    def predict_quality(self, records: Sequence[RoutingRecord]) -> np.ndarray:
        T = self.vec.transform([r.prompt for r in records])
        n = T.shape[0]
        return np.stack(
            [c.predict_proba(T)[:, 1] if not isinstance(c, float) else np.full(n, c) for c in self.clf], 1
        )


def _battles(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(record, model_a, model_b, outcome) for every observed pair in a record; ties count 0.5."""
    rec, a, b, out = [], [], [], []
    for i in range(len(Y)):
        obs = np.flatnonzero(np.isfinite(Y[i]))
        for x in range(len(obs)):
            for z in range(x + 1, len(obs)):
                ja, jb = obs[x], obs[z]
                rec.append(i)
                a.append(ja)
                b.append(jb)
                out.append(0.5 if abs(Y[i, ja] - Y[i, jb]) < 1e-9 else float(Y[i, ja] > Y[i, jb]))
    return np.array(rec, int), np.array(a, int), np.array(b, int), np.array(out)


class MatrixFactorization(Router):
    """RouteLLM-style MF: s_m(x) = w . (unit(P_m) * U e_x); P(a beats b) = sigmoid(s_a - s_b)."""

    name = "mf"

    def __init__(self, dim: int = 64, epochs: int = 8, lr: float = 3e-3, seed: int = 0,
                 max_battles: int = 300_000) -> None:
        self.dim, self.epochs, self.lr, self.seed, self.max_battles = dim, epochs, lr, seed, max_battles

    def _fit(self, records: Sequence[RoutingRecord]) -> None:
        rng = np.random.default_rng(self.seed)
        E = embed(records)
        rec, a, b, out = _battles(self.Y)
        keep = out != 0.5  # RouteLLM's MF trains on decisive battles
        rec, a, b, out = rec[keep], a[keep], b[keep], out[keep]
        if len(rec) > self.max_battles:
            sel = rng.choice(len(rec), self.max_battles, replace=False)
            rec, a, b, out = rec[sel], a[sel], b[sel], out[sel]
        m, d = len(self.models), E.shape[1]
        p = {"P": rng.normal(0, 1, (m, self.dim)), "U": rng.normal(0, 1 / math.sqrt(d), (d, self.dim)),
             "w": rng.normal(0, 0.1, self.dim)}
        mo = {k: np.zeros_like(v) for k, v in p.items()}
        ve = {k: np.zeros_like(v) for k, v in p.items()}
        t = 0
        for _ in range(self.epochs):
            order = rng.permutation(len(rec))
            for s in range(0, len(order), 512):
                ix = order[s : s + 512]
                x = E[rec[ix]] @ p["U"]
                nrm = np.linalg.norm(p["P"], axis=1, keepdims=True) + 1e-9
                Pn = p["P"] / nrm
                diff = Pn[a[ix]] - Pn[b[ix]]
                z = (diff * x) @ p["w"]
                g = (1 / (1 + np.exp(-z)) - out[ix]) / len(ix)
                gw = (diff * x).T @ g
                gx = np.outer(g, p["w"])
                gU = E[rec[ix]].T @ (gx * diff)
                gPn = np.zeros_like(Pn)
                np.add.at(gPn, a[ix], gx * x)
                np.add.at(gPn, b[ix], -gx * x)
                gP = (gPn - Pn * (gPn * Pn).sum(1, keepdims=True)) / nrm
                t += 1
                for k, gr in (("P", gP), ("U", gU), ("w", gw)):
                    mo[k] = 0.9 * mo[k] + 0.1 * gr
                    ve[k] = 0.999 * ve[k] + 0.001 * gr * gr
                    p[k] -= self.lr * (mo[k] / (1 - 0.9**t)) / (np.sqrt(ve[k] / (1 - 0.999**t)) + 1e-8)
        self.p = p

    def predict_quality(self, records: Sequence[RoutingRecord]) -> np.ndarray:
        x = embed(records) @ self.p["U"]
        Pn = self.p["P"] / (np.linalg.norm(self.p["P"], axis=1, keepdims=True) + 1e-9)
        s = (x[:, None, :] * Pn[None]) @ self.p["w"]
        return 1 / (1 + np.exp(-(s - s.mean(1, keepdims=True))))


class SWRanking(Router):
    """RouteLLM's similarity-weighted ranking: per query, a Bradley-Terry (Elo) fit over training
    battles weighted by 10 * 10**(sim / max_sim); restricted to the ``top`` most similar records."""

    name = "sw-ranking"

    def __init__(self, top: int = 128, iters: int = 30) -> None:
        self.top, self.iters = top, iters

    def _fit(self, records: Sequence[RoutingRecord]) -> None:
        self.E = embed(records)

    def predict_quality(self, records: Sequence[RoutingRecord]) -> np.ndarray:
        Eq = embed(records)
        m = len(self.models)
        out = np.zeros((len(Eq), m))
        obs = np.isfinite(self.Y)
        Y0 = np.where(obs, self.Y, 0.0)
        for i, e in enumerate(Eq):
            sim = self.E @ e
            k = min(self.top, len(sim))
            ix = np.argpartition(-sim, k - 1)[:k]
            w = 10 * 10 ** (sim[ix] / max(float(sim[ix].max()), 1e-6))
            seen = np.flatnonzero(obs[ix].any(0))  # only models these records scored
            y, o = Y0[ix][:, seen].astype(np.float32), obs[ix][:, seen]
            both = (o[:, :, None] & o[:, None, :]).astype(float)
            win = ((y[:, :, None] > y[:, None, :] + 1e-9) + 0.5 * (np.abs(y[:, :, None] - y[:, None, :]) < 1e-9))
            W = np.tensordot(w, win * both, axes=1) + 0.1  # weighted wins of row over column (+ prior)
            ms = len(seen)
            N = W + W.T
            np.fill_diagonal(W, 0.0)
            np.fill_diagonal(N, 0.0)
            strength = np.ones(ms)
            for _ in range(self.iters):  # Zermelo / MM iterations for the Bradley-Terry MLE
                denom = (N / (strength[:, None] + strength[None, :])).sum(1)
                strength = np.maximum(W.sum(1) / np.maximum(denom, 1e-12), 1e-9)
                strength /= np.exp(np.mean(np.log(strength)))
            row = np.full(m, 1e-3)  # models never seen near this query rank last
            row[seen] = strength / (1 + strength)
            out[i] = row
        return out


def all_baselines(seed: int = 0) -> list[Router]:
    """Every baseline, fresh."""
    return [
        RandomRouter(seed), ConstantRouter("strong"), ConstantRouter("weak"), ConstantRouter("best"),
        KNNRouter(), MatrixFactorization(seed=seed), SWRanking(), EmbeddingClassifier(), TfidfClassifier(),
    ]
