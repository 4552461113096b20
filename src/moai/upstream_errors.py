"""Upstream errors made fit to pass on: without the API keys moai sends its upstreams or anything shaped like a
credential (``redacted``: what the telemetry database keeps), and for clients also without the upstreams'
addresses (``public``: error bodies, and the errors in a response's ``moai.trace`` and ``moai.reason``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moai.config import Config

PUBLIC_CHARS = 2000  # of an upstream's error, passed on to a client (the patterns below stay fast on that much)
_ADDRESS = re.compile(
    r"\b[a-z][a-z0-9+.-]*://[^\s'\"\])]+"  # a URL
    r"|\(['\"][^'\"]*['\"], \d+\)"  # a socket address as Python prints it: ('10.0.0.5', 8000)
    # a host is possessive: overlapping stars around its letter backtracked in cubic time on "a-a-a-…". It may hold
    # "_" (container networks' names) and start with "$" (an endpoint's unexpanded $VAR, as the resolver saw it)
    r"|(?:\[[0-9a-f:]+\]|\b\d{1,3}(?:\.\d{1,3}){3}|(?:\$|\b)(?=[0-9_-]*+[a-z])[a-z0-9_-]++(?:\.[a-z0-9_-]++)*+)"
    r":\d{1,5}\b",  # host:port, [v6]:port (a host has a letter or is an IPv4 address: 12:30:45 is a time)
    re.IGNORECASE)
# IP addresses on their own (checked with ipaddress before they are replaced)
_IP_LIKE = re.compile(r"(?<![\w:.])(?:[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}|\d{1,3}(?:\.\d{1,3}){3})(?![\w:]|\.\d)",
                      re.IGNORECASE)
# a credential an upstream may echo back: an Authorization value, or a key in the usual "sk-..." shapes
_CREDENTIAL = re.compile(r"\b(bearer|basic)\s+[\w.~+/=-]{8,}|\b(?:sk|pk|rk)-[\w-]{8,}", re.IGNORECASE)
# a secret-named field's value, as error messages print them: password=..., "token": "...", api_key: ...
_SECRET_FIELD = re.compile(r"""(\b(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|credentials?)["']?"""
                           r"""\s*[=:]\s*["']?)[^\s"',;&]{6,}""", re.IGNORECASE)


def without_addresses(text: str) -> str:
    """``text`` with URLs, host:port pairs and IP addresses (as connection errors write them) replaced by
    "<upstream>"."""
    text = _ADDRESS.sub("<upstream>", text)
    return _IP_LIKE.sub(lambda m: "<upstream>" if _is_ip(m.group()) else m.group(), text)


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def redacted(text: str, config: Config) -> str:
    """``text`` without the API keys moai sends its upstreams (an upstream that echoes its request's headers would
    hand them out; every ``api_key_env`` of every card and deployment) and without anything shaped like a
    credential. What is stored in the telemetry database: the operator keeps the addresses to debug with."""
    import os

    names = {c.api_key_env for c in config.models.values() if c.api_key_env}
    names |= {d.api_key_env for c in config.models.values() for d in c.deployments if d.api_key_env}
    if any(c.provider == "anthropic" for c in config.models.values()):
        from moai.providers.anthropic import DEFAULT_KEY_ENV

        names.add(DEFAULT_KEY_ENV)
    for secret in sorted({v for n in names if len(v := os.environ.get(n, "")) >= 8}, key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    text = _CREDENTIAL.sub(lambda m: (m.group(1) + " <redacted>") if m.group(1) else "<redacted>", text)
    text = _SECRET_FIELD.sub(lambda m: m.group(1) + "<redacted>", text)
    return _without_secrets(text)


def public(text: str, config: Config) -> str:
    """An upstream's error as a client may read it: ``redacted``, and without the upstreams' addresses. The names
    of the config's models and mixes (and the upstream names of its models) are kept as they are: an Ollama-style
    ``qwen2.5:0.5b`` reads like host:port, and clients know those names from /v1/models anyway."""
    if len(text) > PUBLIC_CHARS:  # an error message, not a document: what is past this tells a client nothing
        text = f"{text[:PUBLIC_CHARS]}… ({len(text) - PUBLIC_CHARS} more characters)"
    text = redacted(text, config)
    names = {*config.models, *config.mixes, *(c.upstream_model for c in config.models.values())}
    kept = sorted((n for n in names if ":" in n and n in text), key=len, reverse=True)
    for i, name in enumerate(kept):  # set aside (as whole words only) under markers no pattern reads, put back after
        text = re.sub(rf"(?<![\w.:/@-]){re.escape(name)}(?![\w:/@-]|\.\w)", f"\x00{i}\x00", text)
    text = without_addresses(text)
    for i, name in enumerate(kept):
        text = text.replace(f"\x00{i}\x00", name)
    return text


def _without_secrets(text: str) -> str:
    """``text`` with what the sensitive-data scan calls a secret (vendor key formats, JWTs, PEM keys, passwords in
    context, credentials in URLs) replaced by "<redacted>"."""
    from moai.gate.privacy_rules import find_secrets

    spans = sorted((h.start, h.end) for h in find_secrets(text))
    out, at = [], 0
    for start, end in spans:
        if end <= at:
            continue
        out.append(text[at:max(at, start)] + "<redacted>")
        at = end
    return "".join(out) + text[at:]


def public_trace(entry: dict[str, Any], config: Config) -> dict[str, Any]:
    """A step's ``moai.trace`` entry with its errors ``public``: a successful answer's trace tells what failed on the
    way, and must not hand out more than an error body would. Returns a copy (the step keeps what it recorded)."""
    if "error" not in entry and "attempts" not in entry:
        return entry
    out = dict(entry)
    if out.get("error"):
        out["error"] = public(out["error"], config)
    if "attempts" in out:
        out["attempts"] = [_public_attempt(a, config) for a in out["attempts"]]
    return out


def _public_attempt(attempt: dict[str, Any], config: Config) -> dict[str, Any]:
    a = dict(attempt)
    if a.get("error"):
        a["error"] = public(a["error"], config)
    if a.get("retried"):
        a["retried"] = [{**r, "error": public(r["error"], config)} if r.get("error") else r for r in a["retried"]]
    return a
