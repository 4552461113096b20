"""Redaction at the boundary of trust: what a cloud-tier model sees has the sensitive values replaced.

The privacy check runs once per request and yields placeholder → original pairs. Any prompt the plan
builds later (an aggregator's, a critic's) may quote those values again, so the executor redacts each
call to an untrusted model right before sending it, and restores the placeholders in what comes back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from moai.gate.privacy import Restorer, restore
from moai.providers.base import ChatParams


@dataclass
class Redactor:
    mapping: Mapping[str, str]  # placeholder -> original

    def __post_init__(self) -> None:
        # longest originals first, so a value containing another is replaced whole
        self._pairs = sorted(((orig, ph) for ph, orig in self.mapping.items()), key=lambda p: -len(p[0]))

    def _text(self, text: str) -> str:
        for original, placeholder in self._pairs:
            text = text.replace(original, placeholder)
        return text

    def _content(self, content: Any) -> Any:
        if isinstance(content, str):
            return self._text(content)
        if isinstance(content, list):
            return [{**p, "text": self._text(p["text"])} if isinstance(p, dict) and isinstance(p.get("text"), str)
                    else p for p in content]
        return content

    def apply(self, params: ChatParams) -> ChatParams:
        """The same call with every sensitive value replaced by its placeholder."""
        messages = [{**m, "content": self._content(m.get("content"))} for m in params.messages]
        return replace(params, messages=messages)

    def restore(self, text: str) -> str:
        return restore(text, self.mapping)

    def restorer(self) -> Restorer:
        return Restorer(self.mapping)
