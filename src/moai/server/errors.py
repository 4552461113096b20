"""OpenAI's error envelope, for every refusal and failure (upstream errors in it are ``upstream_errors.public``)."""

from __future__ import annotations

import json

from fastapi.responses import JSONResponse, Response

from moai.server.auth import Denied
from moai.server.openai_schema import error_body
from moai.upstream_errors import public, without_addresses

__all__ = ["denied", "err", "error_code", "public", "without_addresses"]


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


def error_code(response: Response) -> str:
    """The ``error.code`` (else ``error.type``) of one of this app's JSON error responses."""
    try:
        error = json.loads(bytes(response.body))["error"]
        return str(error.get("code") or error.get("type") or "unknown")
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unknown"
