"""A streamed chat completion as Anthropic's Messages API streams it: named Server-Sent Events.

The chat path's stream (``streaming.sse``: a role chunk, deltas, a finish chunk with the ``moai`` object, a usage
chunk, ``[DONE]``; a failure after the start as an error event) is read chunk by chunk and told as Anthropic's
events: ``message_start`` (the message without content; its input usage is moai's estimate, the upstream's count
following in ``message_delta``) and a ``ping``, then for each content block its ``content_block_start``, its
``content_block_delta`` events (``text_delta``, or ``input_json_delta`` for a tool call's arguments) and its
``content_block_stop``, then ``message_delta`` (the stop reason, the usage and the ``moai`` object) and
``message_stop``; a failure after the start is an ``error`` event with Anthropic's error body.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from moai import deadline
from moai.server.messages import TOOL_ID_PREFIX, noted, skeleton, stop_reason, usage
from moai.server.stream_relay import StreamTranslation, relay
from moai.server.translation import MESSAGE_PREFIX

# in-stream failures (the chat stream's error codes) and Anthropic's type for each; any other is an api_error
FAILURE_TYPES = {"rate_limit_exceeded": "rate_limit_error", deadline.CODE: "timeout_error"}


def event(kind: str, **fields: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields}, ensure_ascii=False)}\n\n"


class _Events(StreamTranslation):
    """The state of one message being streamed: its content blocks, as they are so far."""

    def __init__(self, payload: dict[str, Any], mid: str, input_tokens: int) -> None:
        super().__init__(payload)
        self.mid, self.input_tokens = mid, input_tokens
        self.suffix = mid.removeprefix(MESSAGE_PREFIX)
        self.started = False
        self.model: Any = payload.get("model")
        self.blocks: list[dict[str, Any]] = []
        self.open: int | None = None  # the index of the block deltas now go to
        self.calls: dict[Any, int] = {}  # a chat tool call's index: its block's index
        self.refused = False

    def start(self, chunk: dict[str, Any]) -> list[str]:
        if self.started:
            return []
        self.started = True
        self.model = chunk.get("model", self.model)
        message = skeleton(self.mid, self.model)
        message["usage"]["input_tokens"] = self.input_tokens
        return [event("message_start", message=message), event("ping")]

    # ---------------------------------------------------------------- blocks

    def close(self) -> list[str]:
        """The open block's ``content_block_stop`` (Anthropic streams blocks one after another)."""
        if self.open is None:
            return []
        index, self.open = self.open, None
        return [event("content_block_stop", index=index)]

    def add(self, block: dict[str, Any]) -> list[str]:
        out = self.close()
        self.blocks.append(block)
        self.open = len(self.blocks) - 1
        return [*out, event("content_block_start", index=self.open, content_block=block)]

    def text(self, delta: str) -> list[str]:
        out: list[str] = []
        if self.open is None or self.blocks[self.open]["type"] != "text":
            out += self.add({"type": "text", "text": ""})
        assert self.open is not None
        out.append(event("content_block_delta", index=self.open, delta={"type": "text_delta", "text": delta}))
        return out

    def call(self, tc: dict[str, Any]) -> list[str]:
        """A piece of a tool call: a new call is a new ``tool_use`` block; its arguments stream as
        ``input_json_delta`` events."""
        key = tc.get("index")
        if key is None:  # an upstream that numbers none: a new id starts a new call, anything else continues
            last = self.blocks[self.calls[len(self.calls) - 1]] if self.calls else None
            key = len(self.calls) if last is None or (tc.get("id") and tc["id"] != last["id"]) else \
                len(self.calls) - 1
        fn = tc.get("function") or {}
        out: list[str] = []
        if key not in self.calls:
            n = len(self.calls)
            out += self.add({"type": "tool_use", "id": tc.get("id") or f"{TOOL_ID_PREFIX}{self.suffix}_{n}",
                             "name": fn.get("name") or "", "input": {}})
            self.calls[key] = len(self.blocks) - 1
        if fn.get("arguments"):
            out.append(event("content_block_delta", index=self.calls[key],
                             delta={"type": "input_json_delta", "partial_json": fn["arguments"]}))
        return out

    def refusal(self, delta: str) -> list[str]:
        """Told as text: the stop reason says it was a refusal."""
        self.refused = True
        return self.text(delta)

    # ---------------------------------------------------------------- the end

    def noted(self, summary: Any) -> Any:
        return noted(summary, self.payload)

    def failed(self, error: dict[str, Any]) -> list[str]:
        """A failure after the stream started (the chat stream's in-band error event): Anthropic's ``error``
        event, which its SDKs raise as an API error."""
        self.over = True
        kind = FAILURE_TYPES.get(error.get("code") or "", "api_error")
        return [event("error", error={"type": kind, "message": error.get("message") or "the stream failed"})]

    def done(self) -> list[str]:
        """The end of the stream: the open block stopped, then the stop reason, the usage and ``moai``."""
        if self.over:
            return []
        self.over = True
        out = self.start({})
        if not self.blocks:  # an empty answer is an empty text block, as unstreamed
            out += self.add({"type": "text", "text": ""})
        out += self.close()
        counted = {k: v for k, v in usage(self.usage).items() if k != "service_tier"}
        extra = {"moai": self.moai} if self.moai is not None else {}
        out.append(event("message_delta", delta={"stop_reason": stop_reason(self.finish_reason, self.refused),
                                                 "stop_sequence": None}, usage=counted, **extra))
        out.append(event("message_stop"))
        return out


def events(chunks: AsyncIterator[Any], payload: dict[str, Any], mid: str,
           input_tokens: int = 0) -> AsyncIterator[str]:
    """Anthropic's events for the chat stream ``chunks``; ``input_tokens``: the estimate ``message_start`` tells."""
    return relay(chunks, _Events(payload, mid, input_tokens))
