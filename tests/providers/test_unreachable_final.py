"""``ProviderUnavailable.final``: which failures to reach a model will fail the same way again within a request.

A model that is final is left out of the request's later steps; one that may pass is tried again. The verdict is
read from the error's chain of causes, as the HTTP libraries build them.
"""

from __future__ import annotations

import errno
import socket
import ssl

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from stub_openai import StubServer

from moai.catalog import ModelCard
from moai.providers.base import ChatParams, ProviderUnavailable
from moai.providers.openai_compat import OpenAICompatProvider


def raised_from(cause: BaseException) -> ProviderUnavailable:
    """A provider's error raised from ``cause``, as providers raise them."""
    try:
        try:
            raise cause
        except BaseException as c:  # noqa: BLE001 - any cause is wrapped
            raise ProviderUnavailable("m", f"connection failed: {c}") from c
    except ProviderUnavailable as e:
        return e


def all_attempts_failed(*members: Exception) -> OSError:
    """anyio's error when every address of a host failed (httpx, and the anthropic SDK, wrap it further)."""
    try:
        raise ExceptionGroup("multiple connection attempts failed", list(members))
    except ExceptionGroup as group:
        try:
            raise OSError("All connection attempts failed") from group
        except OSError as e:
            return e


def refused() -> ConnectionRefusedError:
    return ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


def test_every_address_refused_is_final() -> None:
    """A host on ::1 and 127.0.0.1 (or behind two A records) with nothing listening: each address refused."""
    assert raised_from(all_attempts_failed(refused(), refused())).final


def test_one_address_reset_among_refused_ones_may_pass() -> None:
    reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    assert not raised_from(all_attempts_failed(refused(), reset)).final


@pytest.mark.parametrize(("code", "final"), [(socket.EAI_NONAME, True), (socket.EAI_AGAIN, False)],
                         ids=["no-such-name", "resolver-failed-for-now"])
def test_a_name_that_does_not_resolve_is_final_unless_the_failure_is_temporary(code: int, final: bool) -> None:
    assert raised_from(socket.gaierror(code, "resolution failed")).final is final


def test_a_certificate_that_fails_verification_is_final() -> None:
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    assert raised_from(cert).final


def not_found_app(status: int) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> JSONResponse:
        return JSONResponse({"error": {"message": "The model `gpt-x` does not exist", "type": "invalid_request_error",
                                       "code": "model_not_found"}}, status_code=status)

    return app


@pytest.mark.parametrize("status", [404, 400])
async def test_model_not_found_is_final_whatever_its_status(status: int) -> None:
    """Both are read as "not found upstream"; only the 404 was final, the 400 was tried again."""
    with StubServer(app=not_found_app(status)) as stub:
        p = OpenAICompatProvider(ModelCard(name="m", provider="openai_compat", endpoint=stub.url, privacy="cloud",
                                           max_retries=0))
        try:
            with pytest.raises(ProviderUnavailable, match="not found upstream") as e:
                await p.complete(ChatParams(messages=[{"role": "user", "content": "hi"}]))
        finally:
            await p.aclose()
    assert e.value.final
