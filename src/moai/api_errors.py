"""The OpenAI client's exceptions for what goes wrong in process, as moai's HTTP server would have answered it.

Each engine error becomes the exception the OpenAI client raises for the status, error body and headers the server
returns for it, so code written against that client handles the Python API unchanged."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NoReturn

import openai
from pydantic import ValidationError

from moai import deadline

if TYPE_CHECKING:
    from moai.config import Config
    from moai.mixture import Mixture, Prepared

try:  # the openai SDK's own HTTP library: its exceptions want a response object of that type
    import httpx2 as http  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - older openai releases use httpx
    import httpx as http  # type: ignore[no-redef]

URL = "http://moai.local/v1/chat/completions"


def request() -> http.Request:
    return http.Request("POST", URL)


def timeout_error() -> openai.APITimeoutError:
    return openai.APITimeoutError(http.Request("POST", URL))


def shut_down() -> openai.APIConnectionError:
    """What a call to a Mixture after ``shutdown`` raises: the OpenAI client's error once it is closed."""
    return openai.APIConnectionError(message="this Mixture was shut down (moai.api.shutdown)",
                                     request=http.Request("POST", URL))


def forked() -> openai.APIConnectionError:
    """What a stream opened before ``os.fork()`` raises in the child: its model call runs in the parent."""
    return openai.APIConnectionError(message="this stream was opened before the process forked; its call runs in "
                                     "the parent process only", request=http.Request("POST", URL))


def status_error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    """The exception the openai client raises for this status, error body and response headers (its text is
    the one it makes from the server's response: the status and the error's message)."""
    from moai.server.openai_schema import error_body

    body = error_body(message, type_, param, code)
    response = http.Response(status, request=http.Request("POST", URL), json=body, headers=headers)
    cls: type[openai.APIStatusError] = {
        400: openai.BadRequestError, 401: openai.AuthenticationError, 403: openai.PermissionDeniedError,
        404: openai.NotFoundError, 409: openai.ConflictError, 422: openai.UnprocessableEntityError,
        429: openai.RateLimitError,
    }.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return cls(f"Error code: {status} - {message}", response=response, body=body["error"])


class RequestTimeout(openai.APITimeoutError):
    """The request ran past ``settings.request_timeout_s``: the OpenAI client's timeout error, carrying the
    error body the server's 504 has (``code == "request_timeout"``)."""

    def __init__(self, timeout_s: float | None) -> None:
        from moai.server.openai_schema import error_body

        body = error_body(deadline.message(timeout_s), "server_error", None, deadline.CODE)["error"]
        openai.APIError.__init__(self, body["message"], http.Request("POST", URL), body=body)


async def timed_out(mixture: Mixture, prep: Prepared, timeout_s: float | None) -> RequestTimeout:
    """Record the request as the server does (failed, 504) and return the error to raise."""

    await deadline.record(mixture, prep, timeout_s)
    return RequestTimeout(timeout_s)


def raise_translated(e: Exception, request_id: str | None = None, config: Config | None = None) -> NoReturn:
    """Raise ``e`` as the openai client's exception (``translate``) without the engine's exception as its cause (a
    logged traceback would show it, unredacted); one ``translate`` leaves as it is (a fault of moai's own) is
    re-raised with its own cause chain."""
    out = translate(e, request_id, config)
    if out is e:
        raise e
    raise out from None


def translate(e: Exception, request_id: str | None = None, config: Config | None = None) -> Exception:
    """Engine exceptions -> openai exceptions, with the statuses, headers and messages the HTTP server uses: an
    upstream's error is told as ``upstream_errors.public`` tells it (redacted, without the upstreams' addresses),
    since an application logs or shows ``str(e)`` as readily as a client reads a response (``raise_translated``
    raises it without the engine's exception as its cause)."""
    from moai.mixture import BadRequest, UnknownModel
    from moai.providers.base import ProviderError, is_refusal
    from moai.strategies.context import NoEligibleModel
    from moai.strategies.outcome import PlanFailed
    from moai.upstream_errors import public

    def told(upstream: Exception) -> str:
        return public(str(upstream), config) if config is not None else str(upstream)

    ids = {"x-request-id": request_id, "x-moai-request-id": request_id} if request_id else {}
    if isinstance(e, ValidationError):
        from moai.server.openai_schema import validation_message

        message, param = validation_message(e)
        return status_error(400, message, param=param)
    if isinstance(e, UnknownModel):
        return status_error(404, str(e), param="model", code="model_not_found")
    if isinstance(e, BadRequest):
        return status_error(400, str(e), param=e.param, code=e.code, headers=ids)
    if isinstance(e, NoEligibleModel):
        detail = "; ".join(f"{m}: {why}" for m, why in e.excluded.items())
        return status_error(422, f"{e} ({detail})", param="model", code=getattr(e, "code", "no_eligible_model"),
                            headers=ids)
    if isinstance(e, PlanFailed) and is_refusal(e.status):
        return status_error(e.status, f"no model accepts this request: {told(e)}", param=e.param, code=e.code,
                            headers=ids)
    if isinstance(e, PlanFailed) and e.status == 429:  # Retry-After: the OpenAI client backs off and retries
        wait = {"retry-after": str(math.ceil(e.retry_after))} if e.retry_after is not None else {}
        return status_error(429, f"every model of this mix is rate limited: {told(e)}", "rate_limit_error",
                            code=e.code, headers={**ids, **wait})
    if isinstance(e, PlanFailed):
        return status_error(502, f"no model could answer: {told(e)}", "server_error", code="upstream_failed",
                            headers=ids)
    if isinstance(e, ProviderError):
        return status_error(e.status if e.status >= 500 else 502, f"stream failed: {told(e)}", "server_error",
                            headers=ids)
    return e
