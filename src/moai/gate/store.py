"""A trained gate on disk and in memory: ``Gate.load(dir)``, ``gate.quality``, ``gate.decide``.

Saved as ``gate.json`` (readable metadata) + ``gate.pkl`` (arrays and the TF-IDF vocabulary). Only load
gate directories you trust: the pickle can run code, like any scikit-learn model file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
import secrets
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from moai.gate.policy import CardLike, Constraints, Decision, Weights, choose
from moai.gate.quality import QualityHead, canonical, guess_card
from moai.gate.train import CostModel, Featurizer, TrainConfig

FORMAT_VERSION = 1
Messages = str | Sequence[Mapping[str, Any]]


def query_text(messages: Messages) -> str:
    """The text the gate routes on: the last user turn (string content or text parts)."""
    if isinstance(messages, str):
        return messages
    for m in reversed(list(messages)):
        if m.get("role", "user") == "user":
            content = m.get("content", "")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
            return str(content or "")
    return ""


class GateLoadError(RuntimeError):
    """A gate directory is missing, incomplete or from an incompatible version."""


class Gate:
    """Features -> per-model expected quality -> policy decision."""

    def __init__(
        self, featurizer: Featurizer, head: QualityHead, cost: CostModel, config: TrainConfig,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.featurizer, self.head, self.cost, self.config = featurizer, head, cost, config
        self.meta = meta or {}

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write the gate to ``directory`` so that it never holds half a gate (Ctrl-C, a full disk or a crash
        mid-save left a new gate.pkl beside an old or a truncated gate.json): see ``write_gate_files``."""
        d = Path(directory)
        enc, self.featurizer.encoder = self.featurizer.encoder, None
        try:
            blob = pickle.dumps({"featurizer": self.featurizer, "head": self.head, "cost": self.cost})
        finally:
            self.featurizer.encoder = enc
        meta = {
            "format": FORMAT_VERSION, "saved_at": time.time(), "models": self.head.models,
            "config": asdict(self.config), **{k: v for k, v in self.meta.items() if k != "models"},
        }
        write_gate_files(d, {"gate.pkl": blob, "gate.json": json.dumps(meta, indent=2).encode()})
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Gate:
        """The gate saved in ``directory``; a GateLoadError (one line naming the directory) for anything that is
        not a usable gate: a missing directory or file, a file instead of a directory, damaged files, a format
        from another version, or settings no gate can score with (trained before they were refused)."""
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise GateLoadError(f"{d}: not a usable gate: a file, not a gate directory (what `moai gate train --out` "
                                "writes)")
        try:
            meta = json.loads((d / "gate.json").read_text())
        except FileNotFoundError as e:
            raise GateLoadError(f"{d}: not a gate directory (missing {Path(e.filename).name})") from e
        except OSError as e:
            raise GateLoadError(f"{d}: cannot read gate.json ({e.strerror or e})") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GateLoadError(f"{d}: corrupt gate files (gate.json: {e}): not a usable gate") from e
        if not isinstance(meta, dict):
            raise GateLoadError(f"{d}: corrupt gate files (gate.json holds no object): not a usable gate")
        if meta.get("format") != FORMAT_VERSION:
            raise GateLoadError(f"{d}: gate format {meta.get('format')} != supported {FORMAT_VERSION}")
        try:
            raw = (d / "gate.pkl").read_bytes()
        except FileNotFoundError as e:
            raise GateLoadError(f"{d}: not a gate directory (missing {Path(e.filename).name})") from e
        except OSError as e:
            raise GateLoadError(f"{d}: cannot read gate.pkl ({e.strerror or e})") from e
        try:
            blob = pickle.loads(raw)
        except Exception as e:  # noqa: BLE001 - damaged pickle bytes raise almost any exception type
            raise GateLoadError(f"{d}: corrupt gate files (gate.pkl: {type(e).__name__}: {e}): not a usable "
                                "gate") from e
        parts = {"featurizer": Featurizer, "head": QualityHead, "cost": CostModel}
        if not isinstance(blob, dict) or any(not isinstance(blob.get(k), t) for k, t in parts.items()):
            raise GateLoadError(f"{d}: corrupt gate files (gate.pkl does not hold a gate): not a usable gate")
        try:
            cfg = TrainConfig(**meta.get("config", {}))
        except TypeError as e:
            raise GateLoadError(f"{d}: corrupt gate files (gate.json config: {e}): not a usable gate") from e
        # trained before such settings were refused: it would score NaN (inf / inf) or crash (no estimate at all)
        weights = dict(getattr(blob["head"], "weights", {}))
        bad = [f"{k}={v}" for k, v in weights.items()
               if not isinstance(v, int | float) or isinstance(v, bool) or not np.isfinite(v) or v < 0]
        if bad:
            raise GateLoadError(f"{d}: not a usable gate: head weight {', '.join(bad)} is not a finite non-negative "
                                "number; retrain it")
        if max(weights.get(k, 0.0) for k in ("factor", "knn", "linear")) == 0:
            raise GateLoadError(f"{d}: not a usable gate: its head weights factor, knn and linear are all 0, so it "
                                "has no estimate to give; retrain it")
        return cls(blob["featurizer"], blob["head"], blob["cost"], cfg, meta)

    # ------------------------------------------------------------------ quality
    @property
    def models(self) -> list[str]:
        return list(self.head.models)

    def _ensure(self, names: Sequence[str], cards: Mapping[str, CardLike] | None = None) -> list[int]:
        cols = []
        for n, j in zip(names, self.head.index(names), strict=True):
            if j is None:
                card = (cards or {}).get(n)
                g = guess_card(n)
                fam = getattr(card, "family", None) or g["family"]
                size = getattr(card, "params_b", None) or g["params_b"]
                j = self.head.add_model(n, fam, size)
            cols.append(j)
        return cols

    def quality_matrix(self, texts: Sequence[str], names: Sequence[str], cached: bool = False) -> np.ndarray:
        """(n, len(names)) expected quality; unknown names get a card-based prior."""
        cols = self._ensure(names)
        E = self.featurizer.embed(texts, cached=cached)
        X, S = self.featurizer.transform(texts, E)
        with single_blas_thread() if len(texts) <= 8 else contextlib.nullcontext():
            return self.head.predict(X, S, E)[:, cols]

    def quality(self, prompt: Messages, model_names: Sequence[str]) -> dict[str, float]:
        """Expected quality (0-1) of each named model on this query."""
        q = self.quality_matrix([query_text(prompt)], model_names)[0]
        return {n: float(v) for n, v in zip(model_names, q, strict=True)}

    def score(self, prompt: Messages, strong: str, weak: str) -> float:
        """Expected quality gained by paying for the strong model (higher = strong is worth it)."""
        q = self.quality(prompt, [strong, weak])
        return q[strong] - q[weak]

    def feedback(self, prompt: Messages, model: str, score: float) -> None:
        """Refine one model's head from an observed 0-1 score (e.g. a user rating)."""
        j = self._ensure([model])[0]
        text = query_text(prompt)
        E = self.featurizer.embed([text], cached=False)
        X, S = self.featurizer.transform([text], E)
        self.head.update(j, X, S, float(np.clip(score, 0.0, 1.0)))

    # ------------------------------------------------------------------ decisions
    def decide(
        self,
        messages: Messages,
        cards: Mapping[str, CardLike] | Sequence[CardLike],
        weights: Weights | Mapping[str, float] | str | None = None,
        constraints: Constraints | None = None,
        live_stats: Mapping[str, Mapping[str, float]] | None = None,
        observed_costs: Mapping[str, float] | None = None,
        quality: Mapping[str, float] | None = None,
        observed_latency: Mapping[str, float] | None = None,
    ) -> Decision:
        """Pick a model for this request; ``quality`` may be passed in when already computed.

        ``observed_latency`` (seconds per model, e.g. a routing record's own ``latency_ms``) wins over the
        latency the gate learnt; a model in neither falls back to its card's speed."""
        card_map = dict(cards) if isinstance(cards, Mapping) else {c.name: c for c in cards}
        w = weights if isinstance(weights, Weights) else Weights.parse(weights)
        text = query_text(messages)
        names = list(card_map)
        if quality is None:
            self._ensure(names, card_map)
            quality = self.quality(text, names) if names else {}
        n_tok = len(text) // 4 + 1
        out_tok = {n: self.cost.out_tokens.get(canonical(n), 256.0) for n in names}
        if observed_costs is None:
            pred = {n: self.cost.predict(n, n_tok) for n in names}
            observed_costs = {n: v for n, v in pred.items() if v is not None and not card_has_price(card_map[n])}
        lat = {n: self.cost.predict_latency(n, n_tok) for n in names}
        latency = {n: v for n, v in lat.items() if v is not None} | dict(observed_latency or {})
        return choose(quality, card_map, w, constraints, n_tok, out_tok, observed_costs, live_stats,
                      observed_latency=latency)


SAVING = ".saving-"  # a file being saved: ".<name>.saving-<pid>-<random>", in the gate's folder
_saving: set[str] = set()  # this process's saves in progress (their tokens)
_saving_lock = threading.Lock()


def write_gate_files(directory: Path, files: Mapping[str, bytes]) -> None:
    """Write a gate's files so that ``directory`` holds either the complete old gate (or none) or the complete new
    one: each file is written and synced under a name no loader reads, then all are renamed into place together,
    with Ctrl-C held off for those few renames (only a crash in that instant could part them). Files a killed save
    left are removed by the next save."""
    directory.mkdir(parents=True, exist_ok=True)
    token = f"{SAVING}{os.getpid()}-{secrets.token_hex(4)}"
    with _saving_lock:
        _saving.add(token)
    _clear_leftovers(directory)
    written: list[tuple[Path, Path]] = []
    try:
        for name, data in files.items():
            part = directory / f".{name}{token}"
            written.append((part, directory / name))
            with part.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        with _interrupts_held():
            for part, final in written:
                os.replace(part, final)
        _sync_dir(directory)
    finally:
        for part, _ in written:
            part.unlink(missing_ok=True)
        with _saving_lock:
            _saving.discard(token)


def _sync_dir(path: Path) -> None:
    """A folder's entries on disk (a rename is durable only then); not every system can open a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _clear_leftovers(directory: Path) -> None:
    """Remove the files of saves that are not running (killed mid-save): never loaded, they only take room. A file
    named with this process's pid is another thread's save only while its token is in ``_saving`` (a killed
    process's pid comes round again: a container's server is always pid 1)."""
    for p in directory.iterdir():
        if not p.name.startswith(".") or SAVING not in p.name:
            continue
        token = SAVING + p.name.partition(SAVING)[2]
        pid = token.removeprefix(SAVING).partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and _running(pid):
            continue  # another process's save, still running
        with _saving_lock:  # a save adds its token before it writes a file
            if token not in _saving:
                p.unlink(missing_ok=True)


def _running(pid_text: str) -> bool:
    """Whether another process that named a save's file may still be writing it."""
    if os.name != "posix":
        return True  # no cheap check: left alone
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's
    return True


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Ctrl-C during a few renames takes effect once they are done, so that it cannot leave a gate half in
    place (only the main thread can set a signal handler; elsewhere nothing is held)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)


@functools.cache
def _blas() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_blas_thread() -> Any:
    """One query's products are too small to share: BLAS threads would only spin against the encoder's
    (measured: decision p50 23 ms with both pools on 2 cores, 11 ms with BLAS on one thread)."""
    return _blas().limit(limits=1, user_api="blas")


def card_has_price(card: CardLike) -> bool:
    return bool(card.price.input_per_mtok or card.price.output_per_mtok)


def train_gate(records: Sequence[Any], config: TrainConfig | None = None, progress: Any = None) -> Gate:
    """Fit a gate on routing records (see moai.gate.train)."""
    from moai.gate.train import fit_head

    cfg = config or TrainConfig()
    t0 = time.time()
    feat, head, cost, _ = fit_head(records, cfg, progress=progress)
    return Gate(feat, head, cost, cfg, training_meta(records, head, t0))


def training_meta(records: Sequence[Any], head: QualityHead, t0: float) -> dict[str, Any]:
    """What gate.json says of a training run, whichever trainer (here or on Ray) ran it."""
    return {"n_records": len(records), "train_seconds": round(time.time() - t0, 1),
            "benchmarks": sorted({r.benchmark for r in records}), "suspect_scores": head.suspect}
