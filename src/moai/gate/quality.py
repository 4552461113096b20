"""Per-model expected quality from query features, trained jointly over every model and data set.

Two heads, blended:

* a factorised model (MF in spirit): a shared projection h(x) = tanh(W x + b) of the query features
  (MiniLM embedding + lexical + TF-IDF), and per model a bias and a vector, logit_m = a_m + v_m . h(x)
  + t_m . tfidf(x). All models share W, so a model seen in one data set shapes the projection every
  other model's head reads. Trained with binary cross-entropy on the 0-1 scores (a proper scoring rule:
  outputs are calibrated probabilities of a good answer) plus a Bradley-Terry pairwise term on pairs of
  models scored on the same query, which is what routing between models actually needs.
* a kNN head: the similarity-weighted mean score of each model over the nearest training queries.

A model that was never trained gets a prior: the parameters of known models averaged with weights from
how close their cards are (family, log size), and ``update`` refines any model from feedback.
"""

from __future__ import annotations

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


def canonical(name: str) -> str:
    """One name per model across data sets: 'mistralai/mixtral-8x7b-chat' == 'Mixtral-8x7B-Instruct-v0.1'."""
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

    def fit(self, E: np.ndarray, Y: np.ndarray) -> KNNHead:
        self.E = E.astype(np.float32)
        self.Y = Y.astype(np.float32)
        self.fallback = np.nan_to_num(np.nanmean(np.where(np.isfinite(Y), Y, np.nan), 0), nan=0.5)
        return self

    def predict(self, E: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        assert self.E is not None and self.Y is not None and self.fallback is not None
        out = np.empty((len(E), self.Y.shape[1]), dtype=np.float64)
        k = min(self.k + int(exclude_self), len(self.E))
        E = np.asarray(E, dtype=np.float32)  # a float64 query would upcast (copy) the whole index per call
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
            runner: Runner | None = None) -> LinearHead:
        """One regression per model column; ``runner`` may fit the columns elsewhere (a Ray cluster)."""
        run = runner or SERIAL
        Z = _stack(X, S)
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

    def predict(self, X: np.ndarray, S: sparse.csr_matrix | None) -> np.ndarray:
        return _sigmoid(np.asarray(_stack(X, S) @ self.W) + self.b)


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


def _stack(X: np.ndarray, S: sparse.csr_matrix | None) -> sparse.csr_matrix:
    dense = sparse.csr_matrix(X / math.sqrt(X.shape[1]))  # standardised dense block, scaled like TF-IDF
    return sparse.hstack([dense, S]).tocsr() if S is not None else dense


@dataclass
class QualityHead:
    """Blend of the factor model and the kNN head, keyed by canonical model names."""

    models: list[str] = field(default_factory=list)  # canonical names, column order
    factor: FactorModel = field(default_factory=FactorModel)
    knn: KNNHead = field(default_factory=KNNHead)
    linear: LinearHead | None = None
    weights: dict[str, float] = field(default_factory=lambda: {"factor": 1.0, "knn": 1.0, "linear": 1.0})
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)  # family/params_b seen per model

    def predict(self, X: np.ndarray, S: sparse.csr_matrix | None, E: np.ndarray) -> np.ndarray:
        """(n, M) expected quality in [0, 1] for every trained model."""
        parts = self.parts(X, S, E)
        total = sum(self.weights.get(k, 0.0) for k in parts)
        return sum(self.weights.get(k, 0.0) * v for k, v in parts.items()) / max(total, 1e-9)

    def parts(self, X: np.ndarray, S: sparse.csr_matrix | None, E: np.ndarray) -> dict[str, np.ndarray]:
        """Each head's (n, M) estimate; the blend is their weighted mean."""
        out: dict[str, np.ndarray] = {}
        if self.weights.get("factor", 0) > 0 and self.factor.W is not None:
            out["factor"] = _sigmoid(self.factor.logits(X, S))
        if self.weights.get("knn", 0) > 0 and self.knn.E is not None:
            out["knn"] = self.knn.predict(E)
        if self.weights.get("linear", 0) > 0 and self.linear is not None:
            out["linear"] = self.linear.predict(X, S)
        return out

    def index(self, names: Sequence[str]) -> list[int | None]:
        col = {m: j for j, m in enumerate(self.models)}
        return [col.get(canonical(n)) for n in names]

    def add_model(self, name: str, family: str | None = None, params_b: float | None = None) -> int:
        """Add an unseen model with a prior from its card: a similarity-weighted mix of known models."""
        c = canonical(name)
        if c in self.models:
            return self.models.index(c)
        f = self.factor
        assert f.A is not None and f.V is not None
        sims = np.array([_card_similarity(family, params_b, self.cards.get(m, {})) for m in self.models])
        w = np.exp(3.0 * sims)
        w /= w.sum()
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
        self.models.append(c)
        self.cards[c] = {"family": family, "params_b": params_b}
        return len(self.models) - 1

    def update(self, j: int, X: np.ndarray, S: sparse.csr_matrix | None, y: float, lr: float = 0.05) -> None:
        """One SGD step on model j's own head from a feedback score in [0, 1] (shared layers frozen)."""
        f = self.factor
        assert f.W is not None and f.b is not None and f.A is not None and f.V is not None
        h = np.tanh(X @ f.W + f.b)[0]
        z = float(f.A[j] + f.V[j] @ h)
        if S is not None and f.T is not None:
            z += float((S @ f.T[:, j])[0])
        g = float(_sigmoid(np.array(z))) - y
        f.A[j] -= lr * g
        f.V[j] -= lr * g * h


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
