"""How a request that fails before any model runs is answered: a ``model`` that names nothing, an invalid option,
no eligible model, or a fault of moai's own, each with its HTTP status, error code and message."""

from __future__ import annotations

from moai.strategies.context import NoEligibleModel


class UnknownModel(LookupError):
    """The ``model`` field names neither a mix nor a model."""


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param, self.code = param, code


def refusal(e: Exception) -> tuple[int, str, str]:
    """(HTTP status, error code, message) for a request that failed before any model ran: a 4xx the client can
    act on (a privacy refusal, no eligible model, a bad option) or a 500 when the fault is moai's own."""
    if isinstance(e, NoEligibleModel):
        detail = "; ".join(f"{m}: {why}" for m, why in e.excluded.items())
        return 422, e.code, f"{e} ({detail})"
    if isinstance(e, BadRequest):
        return 400, e.code or "invalid_request", str(e)
    return 500, "internal_error", f"internal error: {type(e).__name__}: {e}"[:2000]
