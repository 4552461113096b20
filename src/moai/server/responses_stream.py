"""A streamed chat completion as the Responses API streams it: typed Server-Sent Events.

The chat path's stream (``streaming.sse``: a role chunk, deltas, a finish chunk with the ``moai`` object, a usage
chunk, ``[DONE]``; a failure after the start as an error event) is read chunk by chunk and told as OpenAI's
events: ``response.created`` and ``response.in_progress``, then for each output item its ``added`` event, its
deltas and its ``done`` events, then ``response.completed`` (or ``response.incomplete``) carrying the whole
response object, or ``response.failed`` with the error.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from moai.server.responses import call_item, finish, noted, skeleton, usage
from moai.server.stream_relay import StreamTranslation, relay
from moai.server.translation import RESPONSE_PREFIX

FAILURE_CODES = frozenset({"rate_limit_exceeded"})  # told as they are; every other failure is a server_error


class _Events(StreamTranslation):
    """The state of one response being streamed: its items, as they are so far."""

    def __init__(self, payload: dict[str, Any], rid: str) -> None:
        super().__init__(payload)
        self.rid = rid
        self.suffix = rid.removeprefix(RESPONSE_PREFIX)
        self.seq = 0
        self.started = False
        self.created: float = int(time.time())
        self.model: Any = payload.get("model")
        self.items: list[dict[str, Any]] = []
        self.closed: set[int] = set()
        self.open: int | None = None  # the output index of the item deltas now go to
        self.calls: dict[Any, int] = {}  # a chat tool call's index: its output index

    def emit(self, kind: str, **fields: Any) -> str:
        data = json.dumps({"type": kind, "sequence_number": self.seq, **fields}, ensure_ascii=False)
        self.seq += 1
        return f"event: {kind}\ndata: {data}\n\n"

    def response(self, status: str) -> dict[str, Any]:
        obj = skeleton(self.rid, self.created, self.model, self.payload, status)
        if self.moai is not None:
            obj["moai"] = self.moai
        return obj

    def start(self, chunk: dict[str, Any]) -> list[str]:
        if self.started:
            return []
        self.started = True
        self.created = chunk.get("created", self.created)
        self.model = chunk.get("model", self.model)
        response = self.response("in_progress")
        return [self.emit("response.created", response=response),
                self.emit("response.in_progress", response=response)]

    # ---------------------------------------------------------------- items

    def close(self, index: int, status: str = "completed") -> list[str]:
        """The ``done`` events of an item: its parts' (a message's) or its arguments' (a call's), then its own."""
        if index in self.closed:
            return []
        self.closed.add(index)
        if self.open == index:
            self.open = None
        item = self.items[index]
        item["status"] = status
        out = []
        if item["type"] == "message":
            for j, part in enumerate(item["content"]):
                where = {"item_id": item["id"], "output_index": index, "content_index": j}
                if part["type"] == "output_text":
                    out.append(self.emit("response.output_text.done", **where, text=part["text"], logprobs=[]))
                else:
                    out.append(self.emit("response.refusal.done", **where, refusal=part["refusal"]))
                out.append(self.emit("response.content_part.done", **where, part=part))
        else:
            out.append(self.emit("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                 name=item["name"], arguments=item["arguments"]))
        out.append(self.emit("response.output_item.done", output_index=index, item=item))
        return out

    def add(self, item: dict[str, Any]) -> list[str]:
        """A new output item; the one deltas went to so far is done (OpenAI streams items one after another)."""
        out = self.close(self.open) if self.open is not None else []
        self.items.append(item)
        self.open = len(self.items) - 1
        out.append(self.emit("response.output_item.added", output_index=self.open, item=item))
        return out

    def message_part(self, kind: str) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
        """The open message's part of ``kind`` (output_text or refusal), added (with its message) if new."""
        out: list[str] = []
        if self.open is None or self.items[self.open]["type"] != "message":
            out += self.add({"type": "message", "id": f"msg_{self.suffix}" + (f"_{len(self.items)}" if self.items
                                                                               else ""),
                             "status": "in_progress", "role": "assistant", "content": []})
        assert self.open is not None
        message = self.items[self.open]
        where = {"item_id": message["id"], "output_index": self.open}
        for j, part in enumerate(message["content"]):
            if part["type"] == kind:
                return out, part, {**where, "content_index": j}
        part = ({"type": "output_text", "text": "", "annotations": [], "logprobs": []} if kind == "output_text"
                else {"type": "refusal", "refusal": ""})
        message["content"].append(part)
        where["content_index"] = len(message["content"]) - 1
        out.append(self.emit("response.content_part.added", **where, part=part))
        return out, part, where

    def text(self, delta: str) -> list[str]:
        out, part, where = self.message_part("output_text")
        part["text"] += delta
        out.append(self.emit("response.output_text.delta", **where, delta=delta, logprobs=[]))
        return out

    def refusal(self, delta: str) -> list[str]:
        out, part, where = self.message_part("refusal")
        part["refusal"] += delta
        out.append(self.emit("response.refusal.delta", **where, delta=delta))
        return out

    def call(self, tc: dict[str, Any]) -> list[str]:
        """A piece of a tool call: a new call is a new ``function_call`` item; its arguments stream as deltas."""
        key = tc.get("index")
        if key is None:  # an upstream that numbers none: a new id starts a new call, anything else continues
            last = self.items[self.calls[len(self.calls) - 1]] if self.calls else None
            key = len(self.calls) if last is None or (tc.get("id") and tc["id"] != last["call_id"]) else \
                len(self.calls) - 1
        fn = tc.get("function") or {}
        out: list[str] = []
        if key not in self.calls:
            n = len(self.calls)
            item = call_item(f"fc_{self.suffix}_{n}", tc.get("id") or f"call_{self.suffix}_{n}",
                             fn.get("name") or "", "", "in_progress")
            out += self.add(item)
            self.calls[key] = len(self.items) - 1
        index = self.calls[key]
        item = self.items[index]
        if fn.get("name") and not item["name"]:
            item["name"] = fn["name"]
        if fn.get("arguments"):
            item["arguments"] += fn["arguments"]
            out.append(self.emit("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                                 delta=fn["arguments"]))
        return out

    # ---------------------------------------------------------------- the end

    def noted(self, summary: Any) -> Any:
        return noted(summary, self.payload)

    def failed(self, error: dict[str, Any]) -> list[str]:
        """A failure after the stream started (the chat stream's in-band error event): ``response.failed``, with
        what ``done`` would carry of it: the ``moai`` object and the usage, where the chat stream gave them (before
        its error event, or in it): a failed request may still be billed for what was generated."""
        out = self.start({})
        self.over = True
        obj = self.response("failed")
        code = error.get("code") if error.get("code") in FAILURE_CODES else "server_error"
        obj["error"] = {"code": code, "message": error.get("message") or "the stream failed"}
        obj["output"] = self.items
        obj["usage"] = usage(self.usage)
        out.append(self.emit("response.failed", response=obj))
        return out

    def done(self) -> list[str]:
        """The end of the stream: every item done, then the whole response with its usage."""
        if self.over:
            return []
        self.over = True
        out = self.start({})
        if not self.items:  # an empty answer is an empty message, as unstreamed
            out += self.message_part("output_text")[0]
        obj = finish(self.response("completed"), self.finish_reason)
        status = "incomplete" if obj["status"] == "incomplete" else "completed"
        for index in range(len(self.items)):
            out += self.close(index, status if self.items[index]["type"] == "message" else "completed")
        obj["output"] = self.items
        obj["usage"] = usage(self.usage)
        out.append(self.emit(f"response.{obj['status']}", response=obj))
        return out


def events(chunks: AsyncIterator[Any], payload: dict[str, Any], rid: str) -> AsyncIterator[str]:
    """The Responses API's events for the chat stream ``chunks``."""
    return relay(chunks, _Events(payload, rid))
