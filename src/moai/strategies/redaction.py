"""Redaction at the boundary of trust: what a cloud-tier model sees has the sensitive values replaced.

The privacy check runs once per request and yields placeholder → original pairs. Prompts the plan builds
later (an aggregator's, a critic's, the next link of a chain) quote other models' answers, and a trusted
model may have written a value in another form (`4539148803436467` for `4539 1488 0343 6467`, an email in
capitals) that no plain search for the original finds. So every call to an untrusted model is scanned
again right before it is sent, all of it (message contents, names, tool-call arguments, tool definitions,
a JSON-schema response format),
and whatever the detector finds is replaced too: by the placeholder its value already has, or by a new one
added to the mapping, so the answer can still be restored. What a placeholder cannot hide (a health or
confidential disclosure, which a trusted model may write from what it knows or makes up) stops the call
before it leaves: `SensitiveHeldBack`, so the step moves on to a trusted model or an earlier answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from moai.gate.privacy import REDACTABLE, Placeholders, Restorer, detect_text, restore, tool_json
from moai.providers.base import ChatParams, ProviderRequestError

# Keys of a tool definition whose value is an identifier the API and the caller match on, not prose.
_IDENTIFIER_KEYS = frozenset({"name", "type"})


def _walk(value: Any, fix: Callable[[str], str], skip: frozenset[str] = frozenset()) -> Any:
    """A copy of a JSON value with `fix` applied to every string in it (keys and `skip` keys' values kept)."""
    if isinstance(value, str):
        return fix(value)
    if isinstance(value, list):
        return [_walk(v, fix, skip) for v in value]
    if isinstance(value, dict):
        return {k: v if k in skip and isinstance(v, str) else _walk(v, fix, skip) for k, v in value.items()}
    return value


class SensitiveHeldBack(ProviderRequestError):
    """A call to an untrusted model was not sent: it carries what no placeholder hides.

    A refusal like any other (never held against the model's health): the step tries its next model, and a
    request whose every model is untrusted gets the 422 ``no_trusted_model`` a sensitive query gets up front.
    """

    status = 422

    def __init__(self, model: str, kinds: Sequence[str]) -> None:
        super().__init__(model, f"not sent: the call carries {' and '.join(kinds)} details an earlier step wrote, "
                                "which a placeholder cannot hide; they stay on private or local models",
                         code="no_trusted_model", param="messages")
        self.kinds = list(kinds)


class Redactor:
    """Rewrites the calls of one request that go to untrusted models; holds its placeholders."""

    def __init__(self, mapping: Mapping[str, str] | None = None) -> None:
        """`mapping`: placeholder -> original, from the privacy check (empty when it found nothing)."""
        self._placeholders = Placeholders(mapping)
        self.mapping = self._placeholders.mapping  # the live one: new placeholders are added to it
        self._unhideable: set[str] = set()  # kinds found in the call being rewritten that no placeholder hides

    def _text(self, text: str) -> str:
        """`text` with every value the detector finds in it, and every value already known, replaced."""
        hits = detect_text(text)
        self._unhideable.update(h.kind for h in hits if h.kind not in REDACTABLE)
        spans = [(h.start, h.end, self._placeholders.token(h.label, text[h.start:h.end]))
                 for h in hits if h.kind in REDACTABLE]
        # Values found elsewhere in the request (a password recognised by its context there) are
        # replaced here as written, even where nothing around them gives them away. Longest first, so
        # a value containing another is replaced whole.
        for token, original in sorted(self.mapping.items(), key=lambda p: -len(p[1])):
            at = text.find(original) if original else -1
            while at != -1:
                end = at + len(original)
                if all(end <= s or at >= e for s, e, _ in spans):
                    spans.append((at, end, token))
                at = text.find(original, end)
        for start, end, token in sorted(spans, reverse=True):
            text = text[:start] + token + text[end:]
        return text

    def _json(self, raw: str) -> str:
        """JSON text (tool-call arguments) redacted so that it stays valid JSON.

        The raw text is scanned first (a value next to its key, `"password": "…"`, is found in context);
        then the decoded strings, which finds values hidden behind escapes (`\\u00e9`). When replacing in the
        raw text broke the JSON (a span ending inside an escape), the decoded strings of the original are
        redacted instead, the values just found included, and the JSON is written again."""
        fixed = self._text(raw)
        try:
            value, intact = json.loads(fixed), True
        except ValueError:
            try:
                value, intact = json.loads(raw), False
            except ValueError:
                return fixed  # not JSON: plain text
        walked = _walk(value, self._text)
        if intact and walked == value:
            return fixed
        return json.dumps(walked, ensure_ascii=False)

    def _content(self, content: Any) -> Any:
        if isinstance(content, str):
            return self._text(content)
        if isinstance(content, list):
            return [{**p, "text": self._text(p["text"])} if isinstance(p, dict) and isinstance(p.get("text"), str)
                    else p for p in content]
        return content

    def _message(self, m: dict[str, Any]) -> dict[str, Any]:
        out = {**m, "content": self._content(m.get("content"))} if "content" in m else dict(m)
        if isinstance(m.get("name"), str):
            out["name"] = self._text(m["name"])
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    call = {**call, "function": {**fn, "arguments": self._json(fn["arguments"])}}
                calls.append(call)
            out["tool_calls"] = calls
        return out

    def _tool(self, tool: dict[str, Any]) -> dict[str, Any]:
        # Scanned whole first, so a value recognised only in context (a "password" property's default) is
        # known by the time each string is rewritten; names and types stay, the caller matches on them.
        self._text(tool_json(tool))
        return _walk(tool, self._text, _IDENTIFIER_KEYS)

    def apply(self, params: ChatParams, model: str = "") -> ChatParams:
        """The same call with every sensitive value replaced by its placeholder; raises `SensitiveHeldBack`
        when it carries health or confidential detail. The privacy check keeps a request that holds such
        detail itself off untrusted models, so what is found here was written by a model along the way."""
        self._unhideable = set()
        messages = [self._message(m) for m in params.messages]
        tools = [self._tool(t) if isinstance(t, dict) else t for t in params.tools] if params.tools else params.tools
        fmt = params.response_format
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            fmt = self._tool(fmt)
        if self._unhideable:
            raise SensitiveHeldBack(model, sorted(self._unhideable))
        return replace(params, messages=messages, tools=tools, response_format=fmt)

    def restore(self, text: str) -> str:
        return restore(text, self.mapping)

    def restore_arguments(self, arguments: str) -> str:
        """Tool-call arguments an untrusted model wrote with placeholders, with the originals back in,
        escaped for JSON (a password may hold a quote)."""
        return restore(arguments, {k: json.dumps(v, ensure_ascii=False)[1:-1] for k, v in self.mapping.items()})

    def restorer(self) -> Restorer:
        return Restorer(self.mapping)
