"""The sensitive-data policy of a mix, applied to one request before any model is chosen.

``local_only`` / ``private_ok`` cap the privacy tier of every model the plan may use when the query
carries sensitive data; ``redact`` lets untrusted models see the query with typed placeholders (values
restored in the answer) — unless what was found cannot be hidden by a placeholder (health details,
confidential material), which then stays on private models; ``allow`` does nothing. A request may ask
for a stricter policy than its mix, never a looser one.

The request's tool definitions and JSON-schema response format (and its stop sequences and tool choice,
when the caller passes them) are scanned with its messages: they reach the model as well. And whenever
sensitive data must not reach an untrusted model in the clear (every policy but ``allow``), calls to
cloud-tier models carry a `Redactor` even if nothing was found here: it scans each such call as sent, which
covers what this check cannot see (a trusted model's answer quoted to an aggregator, tool definitions,
stop sequences or a tool choice if a caller does not pass them here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moai.gate.privacy import PrivacyReport, detect, redact, request_tokens
from moai.strategies.redaction import Redactor

STRICTNESS = {"allow": 0, "redact": 1, "private_ok": 2, "local_only": 3}


@dataclass
class Guard:
    report: PrivacyReport
    policy: str
    max_tier: str | None = None
    redactor: Redactor | None = None
    notes: list[str] = field(default_factory=list)


def stricter(a: str, b: str) -> str:
    """The stricter of two sensitive-data policies."""
    return a if STRICTNESS[a] >= STRICTNESS[b] else b


def unscannable_parts(messages: list[dict[str, Any]]) -> int:
    """Content parts no scan can read (images, files, audio): what they hold cannot be told."""
    return sum(1 for m in messages if isinstance(m.get("content"), list)
               for p in m["content"] if isinstance(p, Mapping) and p.get("type") != "text")


def privacy_guard(messages: list[dict[str, Any]], mix_policy: str, requested: str | None,
                  tools: Sequence[Mapping[str, Any]] | None = None,
                  response_format: Mapping[str, Any] | None = None,
                  stop: Sequence[str] | str | None = None, tool_choice: Any = None) -> Guard:
    policy = mix_policy
    notes: list[str] = []
    if requested is not None:
        if STRICTNESS[requested] >= STRICTNESS[mix_policy]:
            policy = requested
        else:
            notes.append(f"privacy: request asked for {requested}, the mix requires {mix_policy}; kept {mix_policy}")
    report = detect(messages, tools, response_format, stop, tool_choice)
    reserved = request_tokens(messages, tools, response_format, stop, tool_choice)
    guard = Guard(report, policy, notes=notes)
    if policy == "allow":
        if report.sensitive:
            notes.append(f"privacy: sensitive data ({', '.join(report.kinds)}) allowed by policy 'allow'")
        return guard
    blind = unscannable_parts(messages)
    if blind:  # neither found clean nor hidden by a placeholder: it stays where sensitive data may go
        guard.max_tier = "local" if policy == "local_only" else "private"
        notes.append(f"privacy: {blind} image, file or audio part(s) cannot be scanned; policy {policy} keeps the "
                     f"request on {guard.max_tier} models")
    if not report.sensitive:
        guard.redactor = Redactor(reserved=reserved)
        return guard
    notes.append(f"privacy: sensitive data found ({', '.join(report.kinds)}); policy {policy}")
    notes.extend(f"privacy: {r}" for r in report.reasons())
    if policy == "local_only":
        guard.max_tier = "local"
    elif policy == "private_ok":
        guard.max_tier = "private"
    elif report.redactable:  # (a part no scan can read keeps its private cap: the placeholders are for the rest)
        _, mapping = redact(messages, report, tools, response_format, stop, tool_choice)
        guard.redactor = Redactor(mapping, reserved)
        notes.append(f"privacy: {len(mapping)} value(s) replaced by placeholders for cloud-tier models")
    else:
        guard.max_tier = "private"
        notes.append("privacy: found kinds a placeholder cannot hide; kept on private or local models")
    return guard
