"""The chat path's stream (``streaming.sse``) read chunk by chunk and told as another API's events.

The Responses and the Messages endpoints answer a stream by translating the chat stream's chunks: what a chunk
holds (text, a refusal, tool-call pieces, the finish reason, the ``moai`` object, the usage, an in-band error) is
read here once; each API's ``StreamTranslation`` says how it is told (its own events).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any


class StreamTranslation(ABC):
    """One stream being translated: what the chat stream said so far (``moai``, ``usage``, ``finish_reason``) and
    whether it is over; subclasses turn each piece into their API's events (SSE text)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.moai: Any = None
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.over = False

    @abstractmethod
    def start(self, chunk: dict[str, Any]) -> list[str]:
        """The opening events (once), from the stream's first chunk."""

    @abstractmethod
    def text(self, delta: str) -> list[str]:
        """A piece of the answer's text."""

    @abstractmethod
    def refusal(self, delta: str) -> list[str]:
        """A piece of the model's refusal."""

    @abstractmethod
    def call(self, tool_call: dict[str, Any]) -> list[str]:
        """A piece of a tool call (a chat delta's ``tool_calls`` entry)."""

    @abstractmethod
    def failed(self, error: dict[str, Any]) -> list[str]:
        """The chat stream's in-band error event, after it started."""

    @abstractmethod
    def done(self) -> list[str]:
        """The closing events (once): the stream ended."""

    def noted(self, summary: Any) -> Any:
        """The ``moai`` object as told (an API may add what it took and did not apply)."""
        return summary

    def chunk(self, obj: dict[str, Any]) -> list[str]:
        """The events for one chat chunk."""
        if self.over:
            return []
        failure = "error" in obj and "choices" not in obj
        out = [] if failure else self.start(obj)
        if obj.get("moai") is not None:  # the finish chunk's (or an error event's, where it carries one)
            self.moai = self.noted(obj["moai"])
        if obj.get("usage"):
            self.usage = obj["usage"]
        if failure:
            return self.failed(obj["error"])
        for choice in obj.get("choices") or []:
            delta = choice.get("delta") or {}
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            if delta.get("content"):
                out += self.text(delta["content"])
            if delta.get("refusal"):
                out += self.refusal(delta["refusal"])
            for tc in delta.get("tool_calls") or []:
                out += self.call(tc)
        return out


async def relay(chunks: AsyncIterator[Any], state: StreamTranslation) -> AsyncIterator[str]:
    """``state``'s events for the chat stream ``chunks``, read to its end (so that whatever it does when it ends,
    recording and releasing a budget hold, is done) and closed after."""
    try:
        async for raw in chunks:
            text = raw.decode() if isinstance(raw, bytes) else raw
            for line in text.split("\n"):
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                for event in state.done() if data == "[DONE]" else state.chunk(json.loads(data)):
                    yield event
        for event in state.done():  # a stream that ended without [DONE]
            yield event
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
