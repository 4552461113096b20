"""Answers recorded in routing records, replayed as if the model had just produced them.

Offline experiments (gate studies, strategy comparisons) need the real models' answers without the
models: a replay card points at routing-record files, and this provider returns the recorded answer,
token counts and (optionally scaled) latency for the matching prompt.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from moai.catalog import ModelCard
from moai.providers.base import ChatParams, Delta, Provider, ProviderRequestError, ProviderUnavailable, Usage


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


class ReplayProvider(Provider):
    """Looks up ``prompt`` in the card's record files; answers with ``responses[model]``."""

    latency_scale: float = 0.0  # 0: answer at once; 1: sleep the recorded latency

    def __init__(self, card: ModelCard) -> None:
        super().__init__(card)
        self._index: dict[str, dict[str, Any]] | None = None

    def _records(self) -> dict[str, dict[str, Any]]:
        if self._index is None:
            index: dict[str, dict[str, Any]] = {}
            for file in self.card.records:
                path = Path(file).expanduser()
                if not path.exists():
                    raise ProviderUnavailable(self.name, f"records file not found: {path}")
                with path.open() as f:
                    for line in f:
                        if line.strip():
                            rec = json.loads(line)
                            index.setdefault(rec["prompt"].strip(), rec)
            self._index = index
        return self._index

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        prompt = _last_user_text(params.messages).strip()
        rec = self._records().get(prompt)
        model = self.card.upstream_model
        answer = (rec or {}).get("responses", {}).get(model)
        if answer is None:
            raise ProviderRequestError(self.name, "no recorded answer for this prompt")
        tokens = (rec or {}).get("tokens", {}).get(model, {})
        latency_ms = (rec or {}).get("latency_ms", {}).get(model, 0)
        if self.latency_scale and latency_ms:
            await asyncio.sleep(latency_ms / 1000 * self.latency_scale)
        yield Delta(text=answer)
        usage = Usage(int(tokens.get("input", 0)), int(tokens.get("output", 0)))
        yield Delta(finish_reason="stop", usage=usage)
