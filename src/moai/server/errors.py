"""OpenAI's error envelope, for every refusal and failure, and upstream errors made fit for a client to read:
without the upstreams' addresses, the API keys moai sends them, or other credentials."""

from __future__ import annotations

import json
import re

from fastapi.responses import JSONResponse, Response

from moai.config import Config
from moai.server.auth import Denied
from moai.server.openai_schema import error_body


def err(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
        code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


def denied(e: Denied) -> JSONResponse:
    headers = {"retry-after": str(int(e.retry_after + 0.999))} if e.retry_after is not None else {}
    if e.window is not None:  # a key with an RPM limit: OpenAI's x-ratelimit-*-requests
        headers.update(e.window.headers())
    type_ = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error",
             503: "server_error"}.get(e.status, "invalid_request_error")
    return err(e.status, e.message, type_, code=e.code, headers=headers)


_ADDRESS = re.compile(
    r"\b[a-z][a-z0-9+.-]*://[^\s'\"\])]+"  # a URL
    r"|\(['\"][^'\"]*['\"], \d+\)"  # a socket address as Python prints it: ('10.0.0.5', 8000)
    r"|(?:\[[0-9a-f:]+\]|\b\d{1,3}(?:\.\d{1,3}){3}|\b[a-z0-9-]*[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)*)"
    r":\d{1,5}\b",  # host:port, [v6]:port (a host has a letter or is an IPv4 address: 12:30:45 is a time)
    re.IGNORECASE)


def error_code(response: Response) -> str:
    """The ``error.code`` (else ``error.type``) of one of this app's JSON error responses."""
    try:
        error = json.loads(bytes(response.body))["error"]
        return str(error.get("code") or error.get("type") or "unknown")
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unknown"


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


def public(text: str, config: Config) -> str:
    """An upstream's error as a client may read it: without the upstreams' addresses, without the API keys moai
    sends them (an upstream that echoes its request's headers would hand them out), without credentials."""
    import os

    names = {c.api_key_env for c in config.models.values() if c.api_key_env}
    if any(c.provider == "anthropic" for c in config.models.values()):
        from moai.providers.anthropic import DEFAULT_KEY_ENV

        names.add(DEFAULT_KEY_ENV)
    for secret in sorted({v for n in names if len(v := os.environ.get(n, "")) >= 8}, key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    text = _CREDENTIAL.sub(lambda m: (m.group(1) + " <redacted>") if m.group(1) else "<redacted>", text)
    text = _SECRET_FIELD.sub(lambda m: m.group(1) + "<redacted>", text)
    return without_addresses(_without_secrets(text))


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
