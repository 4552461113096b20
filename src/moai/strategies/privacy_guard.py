"""The sensitive-data policy of a mix, applied to one request before any model is chosen.

``local_only`` / ``private_ok`` cap the privacy tier of every model the plan may use when the query
carries sensitive data; ``redact`` lets untrusted models see the query with typed placeholders (values
restored in the answer) — unless what was found cannot be hidden by a placeholder (health details,
confidential material), which then stays on private models; ``allow`` does nothing. A request may ask
for a stricter policy than its mix, never a looser one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moai.gate.privacy import PrivacyReport, detect, redact
from moai.strategies.redaction import Redactor

STRICTNESS = {"allow": 0, "redact": 1, "private_ok": 2, "local_only": 3}


@dataclass
class Guard:
    report: PrivacyReport
    policy: str
    max_tier: str | None = None
    redactor: Redactor | None = None
    notes: list[str] = field(default_factory=list)


def privacy_guard(messages: list[dict[str, Any]], mix_policy: str, requested: str | None) -> Guard:
    policy = mix_policy
    notes: list[str] = []
    if requested is not None:
        if STRICTNESS[requested] >= STRICTNESS[mix_policy]:
            policy = requested
        else:
            notes.append(f"privacy: request asked for {requested}, the mix requires {mix_policy}; kept {mix_policy}")
    report = detect(messages)
    guard = Guard(report, policy, notes=notes)
    if not report.sensitive or policy == "allow":
        if report.sensitive:
            notes.append(f"privacy: sensitive data ({', '.join(report.kinds)}) allowed by policy 'allow'")
        return guard
    notes.append(f"privacy: sensitive data found ({', '.join(report.kinds)}); policy {policy}")
    notes.extend(f"privacy: {r}" for r in report.reasons())
    if policy == "local_only":
        guard.max_tier = "local"
    elif policy == "private_ok":
        guard.max_tier = "private"
    elif report.redactable:
        _, mapping = redact(messages, report)
        guard.redactor = Redactor(mapping)
        notes.append(f"privacy: {len(mapping)} value(s) replaced by placeholders for cloud-tier models")
    else:
        guard.max_tier = "private"
        notes.append("privacy: found kinds a placeholder cannot hide; kept on private or local models")
    return guard
