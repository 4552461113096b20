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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from moai.gate.privacy import (
    REDACTABLE,
    Placeholders,
    Restorer,
    detect_text,
    reserved_tokens,
    restore,
    seam_hits,
    tool_json,
)
from moai.providers.base import ChatParams, ProviderRequestError
from moai.strategies.known_values import KnownValues, splice

# Values the API and the caller match on, not prose: a tool's and a function's `type`, the function's name,
# a JSON schema's `type` keyword (with its usual values) and the response format's name. Only there: a
# `name` or `type` key deeper in a schema (an example object's) is data like any other.
_SCHEMA_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null", "function",
                           "json_schema", "json_object", "text"})


def _walk(value: Any, fix: Callable[[str], str], keep: Callable[[tuple[str, ...], str], bool] = lambda p, v: False,
          path: tuple[str, ...] = ()) -> Any:
    """A copy of a JSON value with `fix` applied to every string in it, keys included (a schema's property
    names are read by the model too); `keep(path, value)` says which identifier strings stay as they are."""
    if isinstance(value, str):
        return value if keep(path, value) else fix(value)
    if isinstance(value, list):
        return [_walk(v, fix, keep, (*path, "*")) for v in value]
    if isinstance(value, dict):
        return {fix(k): _walk(v, fix, keep, (*path, k)) for k, v in value.items()}
    return value


def _identifier(path: tuple[str, ...], value: str) -> bool:
    """Whether the string at `path` in a tool definition or response format is an identifier (see above)."""
    if path in (("function", "name"), ("json_schema", "name"), ("type",), ("function", "type")):
        return True
    return path[-1:] == ("type",) and value in _SCHEMA_TYPES


class _JsonEscaped(Mapping[str, str]):
    """A mapping's values escaped for a JSON string, each when it is asked for (a tool call's arguments hold
    a few placeholders; the mapping may hold thousands)."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._mapping = mapping

    def __getitem__(self, token: str) -> str:
        return json.dumps(self._mapping[token], ensure_ascii=False)[1:-1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping)

    def __len__(self) -> int:
        return len(self._mapping)


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

    def __init__(self, mapping: Mapping[str, str] | None = None, reserved: Iterable[str] = ()) -> None:
        """`mapping`: placeholder -> original, from the privacy check (empty when it found nothing);
        `reserved`: placeholder-shaped tokens the request itself holds, never handed out."""
        self._placeholders = Placeholders(mapping, reserved)
        self.mapping = self._placeholders.mapping  # the live one: new placeholders are added to it
        self._unhideable: set[str] = set()  # kinds found in the call being rewritten that no placeholder hides
        self._extra: dict[tuple[int, int | None], list[tuple[int, int, str]]] = {}  # spans of split values
        self._known = KnownValues()  # the mapping's values, for one walk through a text (read as it grows)

    def _text(self, text: str, extra: Sequence[tuple[int, int, str]] = ()) -> str:
        """`text` with every value the detector finds in it, every value already known, and `extra` spans
        (pieces of a value split across texts) replaced."""
        hits = detect_text(text)
        self._unhideable.update(h.kind for h in hits if h.kind not in REDACTABLE)
        self._placeholders.reserved |= {t for t in reserved_tokens([text]) if t not in self.mapping}
        spans = list(extra) + [(h.start, h.end, self._placeholders.token(h.label, text[h.start:h.end]))
                               for h in hits if h.kind in REDACTABLE]
        return splice(text, spans + self._known.spans(self.mapping, text, spans))

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

    def _content(self, content: Any, i: int) -> Any:
        if isinstance(content, str):
            return self._text(content, self._extra.get((i, None), ()))
        if isinstance(content, list):
            return [{**p, "text": self._text(p["text"], self._extra.get((i, j), ()))}
                    if isinstance(p, dict) and isinstance(p.get("text"), str) else p for j, p in enumerate(content)]
        return content

    def _message(self, m: dict[str, Any], i: int = -1) -> dict[str, Any]:
        out = {**m, "content": self._content(m.get("content"), i)} if "content" in m else dict(m)
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
        # known by the time each string is rewritten; identifiers stay, the caller matches on them, unless
        # one carries a value itself (then the call must not go out with it).
        self._text(tool_json(tool))
        return _walk(tool, self._text, lambda p, v: _identifier(p, v) and self._text(v) == v)

    def apply(self, params: ChatParams, model: str = "") -> ChatParams:
        """The same call with every sensitive value replaced by its placeholder; raises `SensitiveHeldBack`
        when it carries health or confidential detail. The privacy check keeps a request that holds such
        detail itself off untrusted models, so what is found here was written by a model along the way."""
        self._unhideable = set()
        # A value split across two texts (content parts, turns): the placeholder takes the first piece's
        # place and the second piece goes.
        self._extra = {}
        for _, text, h, (one, a, b), (two, c, d) in seam_hits(params.messages):
            token = self._placeholders.token(h.label, text[h.start:h.end])
            self._extra.setdefault(one, []).append((a, b, token))
            self._extra.setdefault(two, []).append((c, d, ""))
        messages = [self._message(m, i) for i, m in enumerate(params.messages)]
        self._extra = {}
        tools = [self._tool(t) if isinstance(t, dict) else t for t in params.tools] if params.tools else params.tools
        fmt = params.response_format
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            fmt = self._tool(fmt)
        # Stop sequences and the tool choice are sent too; the chosen function's name stays (see `_identifier`).
        stop = [self._text(x) if isinstance(x, str) else x for x in params.stop] if params.stop else params.stop
        choice = params.tool_choice
        if isinstance(choice, dict):
            choice = _walk(choice, self._text, lambda p, v: _identifier(p, v) and self._text(v) == v)
        if self._unhideable:
            raise SensitiveHeldBack(model, sorted(self._unhideable))
        return replace(params, messages=messages, tools=tools, response_format=fmt, stop=stop, tool_choice=choice)

    def restore(self, text: str) -> str:
        return restore(text, self.mapping)

    def restore_arguments(self, arguments: str) -> str:
        """Tool-call arguments an untrusted model wrote with placeholders, with the originals back in,
        escaped for JSON (a password may hold a quote)."""
        return restore(arguments, _JsonEscaped(self.mapping))

    def restorer(self) -> Restorer:
        return Restorer(self.mapping)
