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

# in-stream failures (the chat stream's error codes) and Anthropic's type for each; any other is an api_error
FAILURE_TYPES = {"rate_limit_exceeded": "rate_limit_error", deadline.CODE: "timeout_error"}


def event(kind: str, **fields: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields}, ensure_ascii=False)}\n\n"


class _Events:
    """The state of one message being streamed: its content blocks, as they are so far."""

    def __init__(self, payload: dict[str, Any], mid: str, input_tokens: int) -> None:
        self.payload, self.mid, self.input_tokens = payload, mid, input_tokens
        self.suffix = mid.removeprefix("msg_")
        self.started = False
        self.model: Any = payload.get("model")
        self.blocks: list[dict[str, Any]] = []
        self.open: int | None = None  # the index of the block deltas now go to
        self.calls: dict[Any, int] = {}  # a chat tool call's index: its block's index
        self.finish_reason: str | None = None
        self.refused = False
        self.usage: dict[str, Any] | None = None
        self.moai: Any = None
        self.over = False

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

    # ---------------------------------------------------------------- chunks

    def chunk(self, obj: dict[str, Any]) -> list[str]:
        if self.over:
            return []
        failure = "error" in obj and "choices" not in obj
        out = [] if failure else self.start(obj)
        if obj.get("moai") is not None:  # the finish chunk's
            self.moai = noted(obj["moai"], self.payload)
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
            if delta.get("refusal"):  # told as text: the stop reason says it was a refusal
                self.refused = True
                out += self.text(delta["refusal"])
            for tc in delta.get("tool_calls") or []:
                out += self.call(tc)
        return out

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


async def events(chunks: AsyncIterator[Any], payload: dict[str, Any], mid: str,
                 input_tokens: int = 0) -> AsyncIterator[str]:
    """Anthropic's events for the chat stream ``chunks`` (read to its end, so that whatever it does when it ends,
    recording and releasing a budget hold, is done); ``input_tokens``: the estimate ``message_start`` tells."""
    state = _Events(payload, mid, input_tokens)
    try:
        async for raw in chunks:
            text = raw.decode() if isinstance(raw, bytes) else raw
            for line in text.split("\n"):
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                for out in state.done() if data == "[DONE]" else state.chunk(json.loads(data)):
                    yield out
        for out in state.done():  # a stream that ended without [DONE]
            yield out
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
