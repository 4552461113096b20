"""Offline work on a Ray cluster: collecting routing records and training gates past one machine.

Why Ray and not a home-made pool: it already schedules tasks across machines, retries lost workers and
moves numpy arrays efficiently; we only decide what a task is. With no address, ``ray.init()`` starts a
local instance on this machine, so the same code runs on a laptop and on a cluster.

* ``collect_with_ray``: every (question, model) pair is one Ray task that runs collect.py's own call +
  grade path; at most ``concurrency_per_provider`` tasks per provider endpoint are in flight; each graded
  pair is appended to the same journal, in the same format, the moment it comes back, so a run stays
  resumable exactly like ``moai bench collect``.
* ``train_with_ray``: query embeddings are computed in parallel chunks on the cluster (the dominant cost
  of training on a large set), cached on the driver; then the joint factor model and each model's
  regression are fitted as separate cluster tasks side by side (``RayRunner``), the features and targets
  shipped to the object store once.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from moai.bench import collect as col
from moai.catalog import ModelCard


class RayUnavailable(RuntimeError):
    """Ray is not installed (``pip install 'ray>=2.9'``)."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is a dependency
        raise RayUnavailable("Ray is not installed: pip install 'ray>=2.9'") from e
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Join the cluster at ``address`` (``host:port`` or ``auto``), else (None, ``local``) start a local instance."""
    ray = _ray()
    if not ray.is_initialized():
        kw: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False, "include_dashboard": False}
        if address and address != "local":
            _reachable(address)
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=num_cpus, **kw)
    return ray


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a cluster address nothing listens on: ``ray.init`` would retry it for minutes, printing
    warnings. ``auto`` and ``ray://`` addresses are left to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayUnreachable(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


class RayUnreachable(ConnectionError):
    """No Ray head answers at the given address (an OSError: the CLIs report it in one line)."""


# ------------------------------------------------------------------------------------------- collect


def run_one_pair(q: col.Question, card: ModelCard, seed: int | None, code_timeout_s: float,
                 carbon_zone: str = "WOR", grid_g_per_kwh: float | None = None) -> dict[str, Any]:
    """One graded pair through collect.py's own path (provider call, grader, carbon); runs on a worker.

    Returns the journal entry as a dict, or ``{"error": ...}`` (the pair is retried on the next run).
    """
    from moai.telemetry.carbon import CarbonModel

    with tempfile.TemporaryDirectory() as d:
        journal = Path(d) / "pair.journal.jsonl"
        summary = asyncio.run(col.run_pairs([q], [card], journal, concurrency=1, seed=seed,
                                            code_timeout_s=code_timeout_s,
                                            carbon=CarbonModel(carbon_zone, grid_g_per_kwh)))
        entries = col.read_journal(journal)
    if entries:
        return asdict(entries[0])
    return {"error": "; ".join(summary.errors) or f"{q.id} {card.name}: no answer"}


def provider_key(card: ModelCard) -> str:
    """What a concurrency bound protects: one upstream (provider kind + endpoint)."""
    return f"{card.provider}:{card.endpoint or card.model or card.name}"


def collect_with_ray(
    questions: Sequence[col.Question],
    models: Sequence[ModelCard],
    out: str | Path,
    *,
    address: str | None = None,
    concurrency_per_provider: int = 4,
    seed: int | None = None,
    code_timeout_s: float = 10.0,
    carbon_zone: str = "WOR",
    grid_g_per_kwh: float | None = None,
    num_cpus_per_task: float = 1.0,
    on_done: col.ProgressHook | None = None,
) -> col.Summary:
    """Run every not-yet-journaled pair as a Ray task; same journal and records file as ``collect.collect``."""
    ray = connect(address)
    journal = col.journal_path(out)
    done = {(e.id, e.model) for e in col.read_journal(journal)}
    todo = [(q, c) for q in questions for c in models if (q.id, c.name) not in done]
    total = len(questions) * len(models)
    summary = col.Summary(total=total, skipped=total - len(todo))
    remote = ray.remote(num_cpus=num_cpus_per_task, max_retries=2)(run_one_pair)
    queues: dict[str, list[tuple[col.Question, ModelCard]]] = {}
    for q, c in todo:
        queues.setdefault(provider_key(c), []).append((q, c))
    inflight: dict[Any, str] = {}
    journal.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    entry_fields = {f.name for f in fields(col.Entry)}
    try:
        with journal.open("a", encoding="utf-8") as jf:
            while queues or inflight:
                for key in list(queues):
                    busy = sum(1 for k in inflight.values() if k == key)
                    while queues[key] and busy < max(1, concurrency_per_provider):
                        q, c = queues[key].pop(0)
                        ref = remote.remote(q, c, seed, code_timeout_s, carbon_zone, grid_g_per_kwh)
                        inflight[ref] = key
                        busy += 1
                    if not queues[key]:
                        del queues[key]
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    inflight.pop(ref)
                    try:
                        res = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - a lost task is one failed pair, not a failed run
                        res = {"error": f"task failed: {e}"}
                    if "error" in res:
                        summary.failed += 1
                        summary.errors.append(res["error"])
                        if on_done:
                            on_done(None, res["error"])
                        continue
                    jf.write(json.dumps(res, ensure_ascii=False) + "\n")
                    jf.flush()
                    summary.graded += 1
                    if on_done:
                        on_done(col.Entry(**{k: v for k, v in res.items() if k in entry_fields}), None)
    except KeyboardInterrupt:
        summary.interrupted = True
        for ref in inflight:
            ray.cancel(ref)
        raise
    finally:
        summary.seconds = time.perf_counter() - start
        col.write_records(out, col.read_journal(journal))
    return summary


def collect_files_with_ray(
    question_files: Sequence[str | Path], cfg: Any, out: str | Path, *, models: Sequence[str] | None = None,
    limit: int | Sequence[int | None] | None = None, offset: int = 0, seed: int | None = None,
    concurrency: int = 4, on_done: col.ProgressHook | None = None,
    on_start: Callable[[col.Summary], None] | None = None, address: str | None = None, overwrite: bool = False,
) -> col.Summary:
    """``collect.collect``'s signature run on Ray (``concurrency`` = calls in flight per provider endpoint),
    so ``moai bench collect --ray`` only swaps the function it calls.
    """
    col.check_resumable(out, overwrite)
    cards = col.resolve_models(cfg, models)
    limits = col.per_file_limits(limit, len(question_files))
    groups = [col.load_questions(f, seed=seed, offset=offset, limit=n)
              for f, n in zip(question_files, limits, strict=True)]
    questions = col.interleave(groups)
    if len({q.id for q in questions}) != len(questions):
        raise col.QuestionFormatError("two question files share a name; ids (<file stem>/<line>) would collide")
    if on_start:
        done = {(e.id, e.model) for e in col.read_journal(col.journal_path(out))}
        total = len(questions) * len(cards)
        on_start(col.Summary(total=total, skipped=sum((q.id, c.name) in done for q in questions for c in cards)))
    return collect_with_ray(questions, cards, out, address=address, concurrency_per_provider=concurrency,
                            seed=seed, carbon_zone=cfg.settings.carbon_zone,
                            grid_g_per_kwh=cfg.settings.grid_g_per_kwh, on_done=on_done)


# --------------------------------------------------------------------------------------------- train


def embed_chunk(texts: list[str], max_tokens: int, head_tokens: int, quantized: bool = True) -> np.ndarray:
    """Embeddings of one chunk on a worker (the encoder loads once per task, ~0.3 s)."""
    from moai.gate.encoder import MiniLMEncoder

    return MiniLMEncoder(max_tokens=max_tokens, head_tokens=head_tokens, quantized=quantized).encode(texts)


@dataclass
class _Precomputed:
    """Stands in for ``Featurizer.embed`` inside ``fit_head`` with vectors computed on the cluster."""

    E: np.ndarray

    def __call__(self, texts: Sequence[str], cached: bool = True, progress: Any = None) -> np.ndarray:
        if progress is not None:
            progress(len(texts))
        return self.E


class RayRunner:
    """Runs ``fit_head``'s independent fits as Ray tasks; big arrays go to the object store once, not per task."""

    def __init__(self, ray: Any, num_cpus: float = 1) -> None:
        self.ray, self.num_cpus = ray, num_cpus
        self._remote: dict[Callable[..., Any], Any] = {}
        self._stored: dict[int, tuple[Any, Any]] = {}  # id(array) -> (array kept alive, object ref)
        self.tasks = 0

    def _arg(self, a: Any) -> Any:
        from scipy import sparse

        big = (isinstance(a, np.ndarray) and a.nbytes > 1 << 16) or sparse.issparse(a)
        if not big:
            return a
        if id(a) not in self._stored:
            self._stored[id(a)] = (a, self.ray.put(a))
        return self._stored[id(a)][1]

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(num_cpus=self.num_cpus)(fn)
        self.tasks += 1
        return self._remote[fn].remote(*[self._arg(a) for a in args])

    def result(self, handle: Any) -> Any:
        return self.ray.get(handle)


def train_with_ray(
    records: Sequence[Any], config: Any = None, *, address: str | None = None, chunk_size: int = 256,
    progress: Callable[[str, int, int], None] | None = None,
) -> Any:
    """Train a gate with embeddings computed in parallel on the cluster; returns a ``moai.gate.store.Gate``."""
    from moai.gate.encoder import HEAD_TOKENS, EmbeddingCache, MiniLMEncoder, text_key
    from moai.gate.store import Gate, training_meta
    from moai.gate.train import Featurizer, TrainConfig, fit_head

    ray = connect(address)
    cfg = config or TrainConfig()
    t0 = time.time()
    texts = [r.prompt for r in records]
    tag = MiniLMEncoder(max_tokens=cfg.max_tokens, head_tokens=HEAD_TOKENS, quantized=cfg.quantized_encoder).cache_tag
    keys = [text_key(tag + "\n" + t) for t in texts]
    cache = EmbeddingCache()
    got = cache.get_many(keys)
    uniq: dict[str, int] = {}
    for i, g in enumerate(got):
        if g is None:
            uniq.setdefault(keys[i], i)
    todo = list(uniq.values())
    remote = ray.remote(num_cpus=1)(embed_chunk)
    refs = {remote.remote([texts[i] for i in todo[s: s + chunk_size]], cfg.max_tokens, HEAD_TOKENS,
                          cfg.quantized_encoder): s
            for s in range(0, len(todo), chunk_size)}
    E = np.zeros((len(texts), 384), dtype=np.float32)
    vec_of: dict[str, np.ndarray] = {k: g for k, g in zip(keys, got, strict=True) if g is not None}
    n_done = len(texts) - len(todo)
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            s = refs[ref]
            part = todo[s: s + chunk_size]
            vecs = ray.get(ref)
            cache.put_many([keys[i] for i in part], vecs)
            vec_of.update({keys[i]: v for i, v in zip(part, vecs, strict=True)})
            n_done += len(part)
            if progress:
                progress("embed", n_done, len(texts))
    for i, k in enumerate(keys):
        E[i] = vec_of[k]
    feat = Featurizer(max_tokens=cfg.max_tokens, tfidf_features=cfg.tfidf_features, quantized=cfg.quantized_encoder)
    feat.embed = _Precomputed(E)  # type: ignore[method-assign]
    runner = RayRunner(ray)
    if progress:
        progress("train", 0, 1)
    feat, head, cost, _ = fit_head(records, cfg, featurizer=feat, runner=runner)
    if progress:
        progress("train", 1, 1)
    del feat.embed  # back to the class method: the saved gate embeds new queries itself
    feat.encoder = None
    meta = {**training_meta(records, head, t0), "trained_on": "ray", "ray_fit_tasks": runner.tasks}
    return Gate(feat, head, cost, cfg, meta)
