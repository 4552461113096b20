"""Turning a local model's text into OpenAI ``tool_calls``.

Small local models that were trained for tools (Qwen2.5) answer a tool request with JSON — wrapped in
``<tool_call>`` tags (Hermes style), in a code fence, or bare. Hosted APIs parse that server-side; for
in-process models we do it here, accepting only calls to the tools the request offered.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from moai.providers.base import ProviderServerError

_OPEN, _CLOSE, _FENCE = "<tool_call>", "</tool_call>", "```"


def _tagged(text: str) -> list[str]:
    """The body of each ``<tool_call>…</tool_call>``, trimmed; an opening tag left unclosed ends the list."""
    found, i = [], 0
    while (i := text.find(_OPEN, i)) != -1:
        j = text.find(_CLOSE, i + len(_OPEN))
        if j == -1:
            break
        found.append(text[i + len(_OPEN):j].strip())
        i = j + len(_CLOSE)
    return found


def _unfenced(body: str) -> str | None:
    """What a code fence (optionally tagged ``json``) around all of ``body`` holds, trimmed; None if unfenced."""
    if len(body) < 2 * len(_FENCE) or not (body.startswith(_FENCE) and body.endswith(_FENCE)):
        return None
    inner = body[len(_FENCE):-len(_FENCE)]
    return inner.removeprefix("json").strip()


def _candidates(text: str) -> list[str]:
    tagged = _tagged(text)
    if tagged:
        return tagged
    body = text.strip()
    fenced = _unfenced(body)
    return [body if fenced is None else fenced]


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


def merge_tool_call_deltas(calls: list[dict[str, Any]], deltas: list[dict[str, Any]],
                           model: str = "upstream") -> None:
    """Accumulate streamed tool-call pieces (llama.cpp's, an OpenAI stream's: the first names the call, each
    carries a piece of the arguments) into whole OpenAI tool calls, one per index.

    A piece that names no existing or next call, or whose arguments are not text, breaks the protocol: it
    raises ProviderServerError ("malformed response"), so the request moves on as for any malformed reply.
    """
    pieces: dict[int, list[str]] = {}  # joined once per batch: appending piece by piece is quadratic
    try:
        for d in deltas:
            fn = (d.get("function") or {}) if isinstance(d, dict) else None
            if not isinstance(fn, dict) or not isinstance(args := fn.get("arguments") or "", str):
                raise _malformed_call(model, "a tool call piece is not a function with text arguments")
            index = d.get("index", 0)
            # only an existing call or the next one: a far index would grow the list without bound
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= len(calls):
                raise _malformed_call(model, f"tool call index {index!r} with {len(calls)} calls so far")
            if index == len(calls):
                calls.append({"index": index, "id": None, "type": "function",
                              "function": {"name": "", "arguments": ""}})
            call = calls[index]
            call["id"] = call["id"] or d.get("id") or f"call_{uuid.uuid4().hex[:24]}"
            call["function"]["name"] = call["function"]["name"] or fn.get("name") or ""
            if args:
                pieces.setdefault(index, []).append(args)
    finally:  # the pieces merged before a bad one are kept, as before
        for index, parts in pieces.items():
            fn = calls[index]["function"]
            # held only here while it grows, so the string is extended in place rather than copied
            joined = fn.pop("arguments")
            joined += "".join(parts)
            fn["arguments"] = joined


def _malformed_call(model: str, what: str) -> ProviderServerError:
    return ProviderServerError(model, f"malformed response: {what}")


def offered_functions(tools: list[dict[str, Any]] | None) -> set[str]:
    """The names of the functions a request offered (the only kind of tool in the chat-completions API)."""
    return {fn["name"] for t in tools or () if isinstance(t, dict) and t.get("type", "function") == "function"
            and isinstance(fn := t.get("function"), dict) and isinstance(fn.get("name"), str)}


def _chosen_function(tool_choice: Any) -> str | None:
    """The function a ``tool_choice`` names (``{"type": "function", "function": {"name": ...}}``), else None."""
    fn = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    return name if isinstance(name, str) and name else None


def check_offered(model: str, calls: list[dict[str, Any]] | None, tools: list[dict[str, Any]] | None,
                  pieces: bool = False, tool_choice: Any = None) -> None:
    """Refuse a reply that calls a function the request did not offer: a call when no tools were offered, or to a
    name not among them, or against its ``tool_choice`` (``"none"``: no call; a named function: that one only).
    The client could not run it (a client that sent no tools expects text, and gets no answer at all), so it
    breaks the protocol as a malformed reply does: ProviderServerError, and the request moves on to the next model.
    ``pieces``: streamed pieces, checked one by one as they come; only the piece that opens a call names it, the
    rest (no name) extend its arguments. A whole call must name its function."""
    if not calls:
        return
    offered = offered_functions(tools)
    chosen = _chosen_function(tool_choice)
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        shown = f" {name[:64]!r}" if isinstance(name, str) and name else ""
        if not offered:
            raise _malformed_call(model, f"called function{shown}, but the request offered no tools")
        if tool_choice == "none":
            raise _malformed_call(model, f"called function{shown}, but the request's tool_choice is 'none'")
        if (name is None or name == "") and pieces:
            continue
        if chosen is not None and name != chosen:
            raise _malformed_call(model, f"called function{shown or ' (no name)'}, but the request's tool_choice "
                                         f"names {chosen[:64]!r}")
        if not isinstance(name, str) or name not in offered:
            raise _malformed_call(model, f"called function{shown or ' (no name)'}, which the request did not offer")
