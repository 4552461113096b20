"""Turning a local model's text into OpenAI ``tool_calls``.

Small local models that were trained for tools (Qwen2.5) answer a tool request with JSON — wrapped in
``<tool_call>`` tags (Hermes style), in a code fence, or bare. Hosted APIs parse that server-side; for
in-process models we do it here, accepting only calls to the tools the request offered.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _candidates(text: str) -> list[str]:
    tagged = _TAGGED.findall(text)
    if tagged:
        return tagged
    body = text.strip()
    fenced = _FENCE.match(body)
    return [fenced.group(1) if fenced else body]


def parse_tool_calls(text: str, tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """OpenAI-format tool calls if ``text`` is (only) calls to offered tools, else None (a plain answer)."""
    if not tools or not text.strip():
        return None
    offered = {t.get("function", {}).get("name") for t in tools if t.get("type", "function") == "function"}
    calls = []
    for raw in _candidates(text):
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            return None
        for item in obj if isinstance(obj, list) else [obj]:
            if not isinstance(item, dict) or item.get("name") not in offered:
                return None
            args = item.get("arguments", item.get("parameters", {}))
            calls.append({
                "index": len(calls),
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": item["name"], "arguments": args if isinstance(args, str) else json.dumps(args)},
            })
    return calls or None


def merge_tool_call_deltas(calls: list[dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    """Accumulate streamed tool-call pieces (llama.cpp's, an OpenAI stream's: the first names the call, each
    carries a piece of the arguments) into whole OpenAI tool calls, one per index."""
    for d in deltas:
        index = d.get("index", 0)
        while len(calls) <= index:
            calls.append({"index": len(calls), "id": None, "type": "function",
                          "function": {"name": "", "arguments": ""}})
        call, fn = calls[index], d.get("function") or {}
        call["id"] = call["id"] or d.get("id") or f"call_{uuid.uuid4().hex[:24]}"
        call["function"]["name"] = call["function"]["name"] or fn.get("name") or ""
        call["function"]["arguments"] += fn.get("arguments") or ""
