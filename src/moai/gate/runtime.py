"""The learned gate as the server's chooser: loads a trained gate and adapts it to the engine's interface.

The embedded default ships a gate trained on the local zoo's measured behaviour (``gate/default/``); a
mix-instructions file may point ``settings.gate`` at another trained directory. When none can be loaded,
the engine falls back to the rule-based chooser and says so in each decision's reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from moai.catalog import ModelCard
from moai.config import Config, Weights
from moai.gate.decision import RouteDecision

log = logging.getLogger("moai.gate")
DEFAULT_GATE_DIR = Path(__file__).parent / "default"


class GateChooser:
    """Wraps ``moai.gate.store.Gate``: quality per model (softmax), utility under the mix's weights."""

    name = "gate"

    def __init__(self, gate: Any, source: str) -> None:
        self.gate = gate
        self.source = source
        self._priors: dict[tuple[str, ...], dict[str, float]] = {}

    def prior_quality(self, names: Sequence[str], min_records: int = 20) -> dict[str, float]:
        """Each model's mean quality over the training records that scored all of ``names``: how strong it is
        whatever the query (sessions escalate only to a stronger model). Compared on the same records so that
        a model scored only on easy data sets does not look strong; empty when fewer than ``min_records``
        records scored them all (a model known only from its card has none)."""
        key = tuple(names)
        if key not in self._priors:
            Y = self.gate.head.knn.Y
            cols = self.gate.head.index(names)
            out: dict[str, float] = {}
            if Y is not None and all(j is not None and j < Y.shape[1] for j in cols):
                import numpy as np

                sub = Y[:, cols]
                both = np.isfinite(sub).all(axis=1)
                if int(both.sum()) >= min_records:
                    out = {n: float(v) for n, v in zip(names, sub[both].mean(axis=0), strict=True)}
            self._priors[key] = out
        return self._priors[key]

    def warm(self) -> None:
        """Load the encoder (and build its int8 copy on a first run) before a request has to wait for it."""
        self.gate.featurizer.embed(["warm-up"], cached=False)

    def decide(self, messages: Sequence[dict[str, Any]], cards: Sequence[ModelCard], weights: Weights,
               live: Mapping[str, Mapping[str, float]] | None = None) -> RouteDecision:
        from moai.gate import policy

        w = policy.Weights(quality=weights.quality, cost=weights.cost, latency=weights.latency,
                           carbon=weights.carbon)
        d = self.gate.decide(conversation(messages), list(cards), w, live_stats=live)
        ranking = sorted(d.utilities, key=lambda n: -d.utilities[n])
        if not ranking:  # every model excluded by the gate's own checks: keep the caller's order
            ranking = [c.name for c in cards]
        quality = dict(d.scores)
        return RouteDecision(
            model=d.model or ranking[0], ranking=ranking, probabilities=dict(d.probabilities),
            utilities=dict(d.utilities), quality=quality,
            difficulty=1.0 - max(quality.values()) if quality else None,
            reasons=[f"gate {self.source}", *d.reasons], excluded=dict(d.excluded), chooser=self.name,
        )


def conversation(messages: Sequence[dict[str, Any]], turns: int = 3) -> list[dict[str, Any]]:
    """What the gate reads: the last user turn, preceded by up to ``turns - 1`` earlier user turns.

    A follow-up like "and in Python?" means little alone; the earlier turns carry the task.
    """
    from moai.gate.rules import message_text

    users = [m for m in messages if m.get("role") == "user"]
    if len(users) <= 1:
        return list(messages)
    text = "\n\n".join(message_text([m]) for m in users[-turns:])
    return [{"role": "user", "content": text}]


def load_gate_dir(path: str | Path) -> GateChooser:
    from moai.gate.store import Gate

    return GateChooser(Gate.load(path), Path(path).name)


def _knows_all(path: Path, config: Config) -> bool:
    import json

    try:
        known = set(json.loads((path / "gate.json").read_text()).get("models", []))
    except (OSError, ValueError):
        return False
    return set(config.models) <= known


def load_default_gate(config: Config) -> GateChooser | None:
    """The configured gate, else the shipped default one; None (rule-based fallback) if neither loads."""
    named = Path(config.settings.gate).expanduser() if config.settings.gate else None
    candidates = [p for p in (named, DEFAULT_GATE_DIR) if p is not None]
    for path in candidates:
        if not (path / "gate.json").exists():
            if path == named:
                log.warning("gate %s not found; using the rule-based chooser", path)
            continue
        if path != named and not _knows_all(path, config):
            continue  # the shipped gate was trained on the local zoo; other mixes need their own
        try:
            return load_gate_dir(path)
        except Exception as e:  # noqa: BLE001 - a broken gate must not take the server down
            log.warning("could not load gate %s (%s); using the rule-based chooser", path, e)
    return None
