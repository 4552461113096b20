"""Per-model expected quality from query features, trained jointly over every model and data set.

Four heads, blended:

* a factorised model (MF in spirit): a shared projection h(x) = tanh(W x + b) of the query features
  (MiniLM embedding + lexical + TF-IDF), and per model a bias and a vector, logit_m = a_m + v_m . h(x)
  + t_m . tfidf(x). All models share W, so a model seen in one data set shapes the projection every
  other model's head reads. Trained with binary cross-entropy on the 0-1 scores (a proper scoring rule:
  outputs are calibrated probabilities of a good answer) plus a Bradley-Terry pairwise term on pairs of
  models scored on the same query, which is what routing between models actually needs.
* a kNN head: the similarity-weighted mean score of each model over the nearest training queries.
* a per-model logistic regression on the same features (the strong in-domain learner).
* a domain head: which domain (an MMLU subject, a task) the query belongs to, and how each model scored
  on that domain; a subject's record is a far steadier estimate than a query's own features.

A model that was never trained gets a prior: the parameters of known models averaged with weights from
how close their cards are (family, log size), and ``update`` refines any model from feedback.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import sparse

_ALIASES = {
    "mixtral-8x7b-chat": "mixtral-8x7b-instruct-v0.1",
    "gpt4-1106-preview": "gpt-4-1106-preview",
    "gpt35-turbo-instruct": "gpt-3.5-turbo-instruct",
}


@functools.lru_cache(maxsize=4096)
def canonical(name: str) -> str:
    """One name per model across data sets: 'mistralai/mixtral-8x7b-chat' == 'Mixtral-8x7B-Instruct-v0.1'.

    Memoised: a decision asks it several times per candidate (quality, cost, latency, output tokens)."""
    n = name.strip().lower().split("/")[-1].replace("_", "-")
    n = re.sub(r"^gpt4-", "gpt-4-", n)
    return _ALIASES.get(n, n)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


@dataclass
class FactorModel:
    """logit[i, m] = a_m + v_m . tanh(W x_i + b) + t_m . s_i  (x dense, s sparse TF-IDF)."""

    hidden: int = 48
    epochs: int = 40
    lr: float = 3e-3
    l2: float = 1e-4
    l2_sparse: float = 3e-3
    pair_weight: float = 1.0
    batch: int = 256
    seed: int = 0
    W: np.ndarray | None = None
    b: np.ndarray | None = None
    A: np.ndarray | None = None  # (M,)
    V: np.ndarray | None = None  # (M, H)
    T: np.ndarray | None = None  # (S, M) sparse-feature weights

    def logits(self, X: np.ndarray, S: sparse.csr_matrix | None) -> np.ndarray:
        assert self.W is not None and self.b is not None and self.V is not None and self.A is not None
        z = np.tanh(X @ self.W + self.b) @ self.V.T + self.A
        if S is not None and self.T is not None and S.shape[1] == self.T.shape[0]:
            z = z + np.asarray(S @ self.T)
        return z

    def fit(
        self,
        X: np.ndarray,
        S: sparse.csr_matrix | None,
        Y: np.ndarray,
        row_w: np.ndarray,
        progress: Any = None,
    ) -> FactorModel:
        """Minibatch Adam on masked BCE + pairwise Bradley-Terry; Y has NaN where unobserved."""
        rng = np.random.default_rng(self.seed)
        n, d = X.shape
        m = Y.shape[1]
        mask = np.isfinite(Y)
        Y0 = np.where(mask, Y, 0.0)
        prior = np.clip(np.nanmean(np.where(mask, Y, np.nan), 0), 0.02, 0.98)
        prior = np.nan_to_num(prior, nan=0.5)
        params = {
            "W": rng.normal(0, 1 / math.sqrt(d), (d, self.hidden)),
            "b": np.zeros(self.hidden),
            "A": np.log(prior / (1 - prior)),
            "V": rng.normal(0, 0.1, (m, self.hidden)),
        }
        if S is not None:
            params["T"] = np.zeros((S.shape[1], m))
        mom = {k: np.zeros_like(v) for k, v in params.items()}
        vel = {k: np.zeros_like(v) for k, v in params.items()}
        step = 0
        for ep in range(self.epochs):
            order = rng.permutation(n)
            for s0 in range(0, n, self.batch):
                idx = order[s0 : s0 + self.batch]
                xb, yb, mb, wb = X[idx], Y0[idx], mask[idx], row_w[idx]
                h = np.tanh(xb @ params["W"] + params["b"])
                z = h @ params["V"].T + params["A"]
                sb = S[idx] if S is not None else None
                if sb is not None:
                    z = z + np.asarray(sb @ params["T"])
                p = _sigmoid(z)
                wsum = max(float((wb[:, None] * mb).sum()), 1e-9)
                g = (p - yb) * mb * wb[:, None] / wsum
                if self.pair_weight > 0:
                    g = g + self.pair_weight * _pair_grad(z, yb, mb, wb)
                grads = {
                    "A": g.sum(0),
                    "V": g.T @ h + self.l2 * params["V"],
                }
                gh = (g @ params["V"]) * (1 - h * h)
                grads["W"] = xb.T @ gh + self.l2 * params["W"]
                grads["b"] = gh.sum(0)
                if sb is not None:
                    grads["T"] = np.asarray(sb.T @ g) + self.l2_sparse * params["T"]
                step += 1
                lr = self.lr * (0.5 * (1 + math.cos(math.pi * ep / self.epochs)))
                for k in params:
                    mom[k] = 0.9 * mom[k] + 0.1 * grads[k]
                    vel[k] = 0.999 * vel[k] + 0.001 * grads[k] ** 2
                    mh = mom[k] / (1 - 0.9**step)
                    vh = vel[k] / (1 - 0.999**step)
                    params[k] -= lr * mh / (np.sqrt(vh) + 1e-8)
            if progress is not None:
                progress(ep + 1)
        self.W, self.b, self.A, self.V = params["W"], params["b"], params["A"], params["V"]
        self.T = params.get("T")
        return self


def _pair_grad(z: np.ndarray, y: np.ndarray, mask: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Gradient of sum over (j better than k on the same query) of -log sigmoid(z_j - z_k)."""
    better = (y[:, :, None] > y[:, None, :] + 1e-9) & mask[:, :, None] & mask[:, None, :]
    if not better.any():
        return np.zeros_like(z)
    diff = z[:, :, None] - z[:, None, :]
    coef = (_sigmoid(diff) - 1.0) * better * w[:, None, None]
    norm = max(float((better.sum((1, 2)) > 0).astype(float) @ w), 1e-9)
    return (coef.sum(2) - coef.sum(1)) / norm


@dataclass
class KNNHead:
    """Similarity-weighted mean score of each model over the k nearest training queries."""

    k: int = 64
    sharpness: float = 10.0
    E: np.ndarray | None = None  # (N, D) unit vectors
    Y: np.ndarray | None = None  # (N, M) with NaN
    fallback: np.ndarray | None = None  # (M,)

    dims: int = 0  # > 0: search in the top principal components (a smaller index: faster per query)
    center: np.ndarray | None = None  # (D,)
    proj: np.ndarray | None = None  # (D, dims)

    def fit(self, E: np.ndarray, Y: np.ndarray) -> KNNHead:
        if 0 < self.dims < E.shape[1]:
            self.center = E.mean(0)
            _, _, vt = np.linalg.svd(E - self.center, full_matrices=False)
            self.proj = vt[: self.dims].T.astype(np.float32)
        self.E = self._index(E)
        self.Y = Y.astype(np.float32)
        self.fallback = np.nan_to_num(np.nanmean(np.where(np.isfinite(Y), Y, np.nan), 0), nan=0.5)
        return self

    def _index(self, E: np.ndarray) -> np.ndarray:
        """Unit vectors to search with, float32 (a float64 query would upcast the whole index per call)."""
        E = np.asarray(E, dtype=np.float32)
        if self.proj is None:  # no projection (or a gate saved before there was one: the class default)
            return E
        assert self.center is not None and self.proj is not None
        P = (E - self.center.astype(np.float32)) @ self.proj
        return P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-9)

    def predict(self, E: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        assert self.E is not None and self.Y is not None and self.fallback is not None
        out = np.empty((len(E), self.Y.shape[1]), dtype=np.float64)
        k = min(self.k + int(exclude_self), len(self.E))
        E = self._index(E)
        for s in range(0, len(E), 1024):
            sim = E[s : s + 1024] @ self.E.T
            if exclude_self:
                rows = np.arange(sim.shape[0])
                sim[rows, np.argmax(sim, 1)] = -np.inf
            ix = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            ss = np.take_along_axis(sim, ix, 1)
            w = np.exp(self.sharpness * (ss - ss.max(1, keepdims=True)))
            yy = self.Y[ix]  # (b, k, M)
            ok = np.isfinite(yy)
            ww = w[:, :, None] * ok
            num = (ww * np.where(ok, yy, 0)).sum(1)
            den = ww.sum(1)
            prior = 2.0  # pseudo-count toward the model's global mean, for sparse neighbourhoods
            out[s : s + 1024] = (num + prior * self.fallback * w.mean(1, keepdims=True)) / (
                den + prior * w.mean(1, keepdims=True)
            )
        return out


@dataclass
class LinearHead:
    """Per-model logistic regression on [dense, TF-IDF] with soft labels: the strong in-domain learner."""

    C: float = 1.0
    W: Any = None  # (F, M) sparse-friendly dense matrix
    b: np.ndarray | None = None

    def fit(self, X: np.ndarray, S: sparse.csr_matrix | None, Y: np.ndarray, row_w: np.ndarray,
            runner: Runner | None = None, Z: sparse.csr_matrix | None = None) -> LinearHead:
        """One regression per model column; ``runner`` may fit the columns elsewhere (a Ray cluster);
        ``Z`` = ``stack_features(X, S)`` when the caller has it already."""
        run = runner or SERIAL
        Z = stack_features(X, S) if Z is None else Z
        handles = [run.submit(fit_column, Z, Y[:, j], row_w, self.C) for j in range(Y.shape[1])]
        return self.assemble(Z.shape[1], [run.result(h) for h in handles])

    def assemble(self, n_features: int, columns: Sequence[tuple[np.ndarray | None, float]]) -> LinearHead:
        self.W = np.zeros((n_features, len(columns)))
        self.b = np.zeros(len(columns))
        for j, (coef, intercept) in enumerate(columns):
            if coef is not None:
                self.W[:, j] = coef
            self.b[j] = intercept
        return self

    def predict(self, X: np.ndarray, S: sparse.csr_matrix | None, Z: sparse.csr_matrix | None = None) -> np.ndarray:
        """``Z`` = ``stack_features(X, S)`` when the caller has it already."""
        return _sigmoid(np.asarray((stack_features(X, S) if Z is None else Z) @ self.W) + self.b)


def fit_column(Z: sparse.csr_matrix, y_all: np.ndarray, row_w: np.ndarray, C: float) -> tuple[np.ndarray | None, float]:
    """One model's logistic regression with soft labels; (None, prior logit) when its column can't be fit."""
    from sklearn.linear_model import LogisticRegression

    ok = np.flatnonzero(np.isfinite(y_all))
    y = y_all[ok]
    mean = float(np.clip(y.mean(), 1e-3, 1 - 1e-3)) if len(y) else 0.5
    if len(ok) < 10 or y.std() < 1e-6:
        return None, math.log(mean / (1 - mean))
    # soft labels: each row twice, as a positive with weight y and a negative with weight 1-y
    Zj = sparse.vstack([Z[ok], Z[ok]]).tocsr()
    lab = np.r_[np.ones(len(ok)), np.zeros(len(ok))]
    sw = np.r_[y, 1 - y] * np.r_[row_w[ok], row_w[ok]] + 1e-6
    clf = LogisticRegression(C=C, max_iter=300).fit(Zj, lab, sample_weight=sw)
    return clf.coef_[0], float(clf.intercept_[0])


class Runner(Protocol):
    """Where independent fitting tasks run: here, one after another, or spread over a cluster."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def result(self, handle: Any) -> Any: ...


class SerialRunner:
    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def result(self, handle: Any) -> Any:
        return handle


SERIAL = SerialRunner()


def stack_features(X: np.ndarray, S: sparse.csr_matrix | None) -> sparse.csr_matrix:
    """[dense | TF-IDF] as one sparse matrix; the dense block standardised and scaled like TF-IDF rows."""
    D = X / math.sqrt(X.shape[1])
    if S is None:
        return sparse.csr_matrix(D)
    if X.shape[0] == 1:  # one request: put the row together directly (scipy's hstack costs ~0.3 ms here)
        S = sparse.csr_matrix(S)
        n = X.shape[1]
        data = np.concatenate([D[0], S.data.astype(D.dtype)])
        indices = np.concatenate([np.arange(n, dtype=np.int32), S.indices.astype(np.int32) + n])
        return sparse.csr_matrix((data, indices, np.array([0, len(data)])), shape=(1, n + S.shape[1]))
    return sparse.hstack([sparse.csr_matrix(D), S]).tocsr()


@dataclass
class DomainHead:
    """P(domain | query) from a multinomial regression, times each model's smoothed mean score per domain.

    Routing records name their domain (``benchmark`` plus ``category``); a query never does, so the head
    predicts it. Where a model has no score in a domain, ``predict`` uses the caller's estimate instead.
    """

    C: float = 1.0
    smooth: float = 10.0  # pseudo-records pulling a small domain's mean toward its benchmark's (or overall)
    domains: list[str] = field(default_factory=list)
    W: np.ndarray | None = None  # (F, K)
    b: np.ndarray | None = None  # (K,)
    means: np.ndarray | None = None  # (K, M)
    seen: np.ndarray | None = None  # (K, M) bool: the model has scores in the domain

    def fit(self, Z: sparse.csr_matrix, labels: Sequence[str], Y: np.ndarray) -> DomainHead:
        from sklearn.linear_model import LogisticRegression

        self.domains = sorted(set(labels))
        col = {d: k for k, d in enumerate(self.domains)}
        lab = np.array([col[d] for d in labels])
        mask = np.isfinite(Y)
        Y0 = np.where(mask, Y, 0.0)
        overall = Y0.sum(0) / np.maximum(mask.sum(0), 1)
        # two levels of shrinkage: a benchmark's mean toward the overall one, a subject's toward its benchmark's
        parents = sorted({d.split("/")[0] for d in self.domains})
        parent_of = np.array([parents.index(d.split("/")[0]) for d in self.domains])
        n_d, s_d = self._counts(lab, len(self.domains), mask, Y0)
        n_p, s_p = self._counts(parent_of[lab], len(parents), mask, Y0)
        parent_means = _shrunk(s_p, n_p, overall, self.smooth)
        self.means = _shrunk(s_d, n_d, parent_means[parent_of], self.smooth)
        self.seen = n_d > 0
        if len(self.domains) == 1:
            self.W, self.b = np.zeros((Z.shape[1], 1)), np.zeros(1)
            return self
        clf = LogisticRegression(C=self.C, max_iter=300).fit(Z, lab)
        self.W, self.b = clf.coef_.T.astype(np.float32), clf.intercept_  # float32: half the file, same argmax
        if len(self.domains) == 2:  # binary regression: one column for the second class
            self.W, self.b = np.hstack([-self.W / 2, self.W / 2]), np.r_[-self.b / 2, self.b / 2]
        return self

    @staticmethod
    def _counts(lab: np.ndarray, k: int, mask: np.ndarray, Y0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(k, M) number of scores and their sum per group."""
        onehot = sparse.csr_matrix((np.ones(len(lab)), (lab, np.arange(len(lab)))), shape=(k, len(lab)))
        return np.asarray(onehot @ mask.astype(float)), np.asarray(onehot @ Y0)

    def proba(self, Z: sparse.csr_matrix) -> np.ndarray:
        assert self.W is not None and self.b is not None
        z = np.asarray(Z.astype(self.W.dtype) @ self.W) + self.b  # a float64 Z would copy W up per call
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    def predict(self, Z: sparse.csr_matrix, fallback: np.ndarray, P: np.ndarray | None = None) -> np.ndarray:
        """(n, M) expected quality; ``fallback`` (n, M) stands in where a domain never scored a model.
        ``P``: ``proba(Z)`` when the caller has it already."""
        assert self.means is not None and self.seen is not None
        P = self.proba(Z) if P is None else P
        covered = P @ self.seen  # share of the query's domain mass where the model has scores
        return P @ (self.means * self.seen) + (1.0 - covered) * fallback

    def add_column(self, weights: np.ndarray) -> None:
        """A new model: no domain has scored it, so the head defers to the other heads for it."""
        assert self.means is not None and self.seen is not None
        self.means = np.hstack([self.means, self.means @ weights[:, None]])
        self.seen = np.hstack([self.seen, np.zeros((len(self.seen), 1), dtype=bool)])


def _shrunk(sums: np.ndarray, n: np.ndarray, prior: np.ndarray, k: float) -> np.ndarray:
    """(sums + k * prior) / (n + k); the prior itself where there is nothing to average."""
    prior = np.broadcast_to(prior, sums.shape)
    den = n + k
    return np.divide(sums + k * prior, den, out=np.array(prior, dtype=float), where=den > 0)


def domain_label(benchmark: str, category: str | None) -> str:
    """The domain a routing record names: its benchmark, and its subject or task where it has one."""
    return f"{benchmark}/{category}" if category else benchmark


@dataclass
class QualityHead:
    """Weighted blend of the factor, kNN, linear and domain heads, keyed by canonical model names."""

    models: list[str] = field(default_factory=list)  # canonical names, column order
    factor: FactorModel = field(default_factory=FactorModel)
    knn: KNNHead = field(default_factory=KNNHead)
    linear: LinearHead | None = None
    weights: dict[str, float] = field(default_factory=lambda: {"factor": 1.0, "knn": 1.0, "linear": 1.0})
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)  # family/params_b seen per model
    domain: DomainHead | None = None
    # (domain, model) scores far below guessing on multiple-choice questions, and whether training ignored them
    suspect: list[dict[str, Any]] = field(default_factory=list)
    # a grading failure left out of the heads, kept as its data set's own: (domain index, model index, offset)
    # added in proportion to P(domain | query), so it follows that data set's questions and nothing else
    grader_offsets: list[tuple[int, int, float]] = field(default_factory=list)

    def predict(self, X: np.ndarray, S: sparse.csr_matrix | None, E: np.ndarray) -> np.ndarray:
        """(n, M) expected quality in [0, 1] for every trained model."""
        parts, P = self._parts(X, S, E)
        q = self._blend(parts)
        offsets = getattr(self, "grader_offsets", [])  # gates saved before offsets existed have none
        if offsets and P is not None:
            for k, j, off in offsets:
                q[:, j] += P[:, k] * off
            q = np.clip(q, 0.0, 1.0)
        return q

    def _blend(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """The weighted mean of the heads' estimates."""
        total = sum(self.weights.get(k, 0.0) for k in parts)
        return sum(self.weights.get(k, 0.0) * v for k, v in parts.items()) / max(total, 1e-9)

    def parts(self, X: np.ndarray, S: sparse.csr_matrix | None, E: np.ndarray) -> dict[str, np.ndarray]:
        """Each head's (n, M) estimate; the blend is their weighted mean. The domain head defers to the
        blend of the others where a domain never scored a model."""
        return self._parts(X, S, E)[0]

    def _parts(self, X: np.ndarray, S: sparse.csr_matrix | None,
               E: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """``parts`` and the domain head's P(domain | query) (None without that head)."""
        out: dict[str, np.ndarray] = {}
        P = None
        if self.weights.get("factor", 0) > 0 and self.factor.W is not None:
            out["factor"] = _sigmoid(self.factor.logits(X, S))
        if self.weights.get("knn", 0) > 0 and self.knn.E is not None:
            out["knn"] = self.knn.predict(E)
        use_linear = self.weights.get("linear", 0) > 0 and self.linear is not None
        use_domain = self.weights.get("domain", 0) > 0 and self.domain is not None
        Z = stack_features(X, S) if use_linear or use_domain else None
        if use_linear and self.linear is not None:
            out["linear"] = self.linear.predict(X, S, Z)
        if use_domain and self.domain is not None and Z is not None and out:
            P = self.domain.proba(Z)
            out["domain"] = self.domain.predict(Z, self._blend(out), P)
        return out, P

    def index(self, names: Sequence[str]) -> list[int | None]:
        col = {m: j for j, m in enumerate(self.models)}
        return [col.get(canonical(n)) for n in names]

    def add_model(self, name: str, family: str | None = None, params_b: float | None = None) -> int:
        """Add an unseen model with a prior from its card: a similarity-weighted mix of known models."""
        c = canonical(name)
        if c in self.models:
            return self.models.index(c)
        f = self.factor
        sims = np.array([_card_similarity(family, params_b, self.cards.get(m, {})) for m in self.models])
        w = np.exp(3.0 * sims)
        w /= w.sum()
        if f.A is not None and f.V is not None:  # a gate trained without the factor head has none
            f.A = np.append(f.A, w @ f.A)
            f.V = np.vstack([f.V, w @ f.V])
            if f.T is not None:
                f.T = np.hstack([f.T, (f.T @ w)[:, None]])
        if self.linear is not None and self.linear.b is not None:
            self.linear.W = np.hstack([self.linear.W, (self.linear.W @ w)[:, None]])
            self.linear.b = np.append(self.linear.b, w @ self.linear.b)
        if self.knn.Y is not None and self.knn.fallback is not None:
            # neighbours never scored this model: the kNN head falls back to the prior mean
            self.knn.Y = np.hstack([self.knn.Y, np.full((len(self.knn.Y), 1), np.nan, dtype=np.float32)])
            self.knn.fallback = np.append(self.knn.fallback, float(w @ self.knn.fallback))
        if self.domain is not None and self.domain.means is not None:
            self.domain.add_column(w)
        self.models.append(c)
        self.cards[c] = {"family": family, "params_b": params_b}
        return len(self.models) - 1

    def update(self, j: int, X: np.ndarray, S: sparse.csr_matrix | None, y: float, lr: float = 0.05) -> None:
        """One step of model j's own parameters toward a feedback score in [0, 1] (shared layers frozen):
        the factor and linear heads' logits by SGD, the domain head's means over the query's domains."""
        f = self.factor
        if f.W is not None and f.b is not None and f.A is not None and f.V is not None:
            h = np.tanh(X @ f.W + f.b)[0]
            z = float(f.A[j] + f.V[j] @ h)
            if S is not None and f.T is not None:
                z += float((S @ f.T[:, j])[0])
            g = float(_sigmoid(np.array(z))) - y
            f.A[j] -= lr * g
            f.V[j] -= lr * g * h
        lin, dom = self.linear, self.domain
        if (lin is None or lin.W is None) and dom is None:
            return
        Z = stack_features(X, S)
        if lin is not None and lin.W is not None and lin.b is not None:
            g = float(_sigmoid(np.asarray(Z @ lin.W[:, j]) + lin.b[j])[0]) - y
            lin.W[:, j] -= lr * g * Z.toarray()[0]
            lin.b[j] -= lr * g
        if dom is not None and dom.means is not None and dom.seen is not None:
            step = lr * dom.proba(Z)[0] * dom.seen[:, j]  # domains that never scored the model stay deferred
            dom.means[:, j] += step * (y - dom.means[:, j])


def _card_similarity(family: str | None, params_b: float | None, other: dict[str, Any]) -> float:
    s = 0.0
    if family and other.get("family") and family.lower() == str(other["family"]).lower():
        s += 1.0
    if params_b and other.get("params_b"):
        s += max(0.0, 1.0 - abs(math.log(params_b) - math.log(float(other["params_b"]))) / 2.0)
    return s


def guess_card(name: str) -> dict[str, Any]:
    """Family and size read off a model name ('llama-3.1-8b-instruct' -> llama, 8.0): a weak prior."""
    n = canonical(name)
    fam = re.match(r"[a-z]+", n)
    size = re.search(r"(\d+(?:\.\d+)?)x?(\d+)?b\b", n)
    params = None
    if size:
        params = float(size.group(1)) * (float(size.group(2)) if size.group(2) else 1.0)
    return {"family": fam.group(0) if fam else None, "params_b": params}
