"""The openai_compat provider over real HTTP: usage from the response, retries, and typed errors."""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import replace

import pytest
from compat_support import close_providers, provider  # noqa: F401 - close_providers: an autouse fixture
from rate_limit_support import failed_at_once, raised_at_once
from stub_openai import Script, StubServer, free_port

from moai.providers import (
    ChatParams,
    ProviderRequestError,
    ProviderServerError,
    ProviderUnavailable,
)
from moai.providers.base import parse_retry_after
from moai.providers.openai_compat import status_error

PARAMS = ChatParams(messages=[{"role": "user", "content": "hi"}], max_tokens=8)




async def test_complete_takes_usage_from_the_response() -> None:
    with StubServer(Script(reply="one two three")) as s:
        out = await provider(s.url).complete(PARAMS)
    assert out.text == "one two three"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (7, 3)
    assert s.script.seen[0]["max_tokens"] == 8
    assert "frequency_penalty" not in s.script.seen[0]  # unset options are not sent


async def test_sampling_penalties_reach_the_upstream() -> None:
    with StubServer(Script(reply="ok")) as s:
        await provider(s.url).complete(replace(PARAMS, frequency_penalty=0.4, presence_penalty=-0.2))
    assert (s.script.seen[0]["frequency_penalty"], s.script.seen[0]["presence_penalty"]) == (0.4, -0.2)


async def test_stream_yields_text_then_usage() -> None:
    with StubServer(Script(reply="a b c")) as s:
        deltas = [d async for d in provider(s.url).stream(PARAMS)]
    assert "".join(d.text for d in deltas) == "a b c"
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage.completion_tokens == 3


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_retries_transient_failures(status: int) -> None:
    with StubServer(Script(fail_times=2, fail_status=status)) as s:
        out = await provider(s.url, retries=2).complete(PARAMS)
    assert out.text == "stub answer" and s.script.calls == 3


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_long_retry_after_is_raised_at_once_not_waited_for(stream: bool) -> None:
    """Waiting 30 s on a rate-limited model would hold the request while another model could answer it: the
    429 is raised at once, with the wait the upstream asked for, and the call is not repeated."""
    with StubServer(Script(fail_times=10, fail_status=429, retry_after="30")) as s:
        elapsed, e = await raised_at_once(provider(s.url, retries=2), PARAMS, stream)
    assert elapsed < 1.0 and s.script.calls == 1
    assert e.retry_after == 30 and e.status == 429


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_503_asking_for_a_long_wait_is_raised_at_once(stream: bool) -> None:
    """An upstream down for maintenance says for how long; the request moves to another model meanwhile."""
    with StubServer(Script(fail_times=10, fail_status=503, error_retry_after="30")) as s:
        elapsed = await failed_at_once(provider(s.url, retries=2), PARAMS, stream)
    assert elapsed < 1.0 and s.script.calls == 1
    with StubServer(Script(fail_times=2, fail_status=503, error_retry_after="0")) as s:
        assert (await provider(s.url, retries=2).complete(PARAMS)).text == "stub answer" and s.script.calls == 3


@pytest.mark.parametrize("retry_after", ["0", "1", None], ids=["zero", "one_second", "absent"])
async def test_a_short_or_absent_retry_after_is_retried_in_place(retry_after: str | None) -> None:
    with StubServer(Script(fail_times=2, fail_status=429, retry_after=retry_after)) as s:
        out = await provider(s.url, retries=2).complete(PARAMS)
    assert out.text == "stub answer" and s.script.calls == 3


def test_retry_after_is_read_in_seconds_milliseconds_or_as_a_date() -> None:
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (parse_retry_after({"retry-after": soon}) or 0) <= 30
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after": "86400"}) == 60  # re-tried within the minute, not tomorrow
    assert parse_retry_after({"retry-after": "-3"}) == 0
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "nan"}) is None


async def test_gives_up_with_a_typed_error() -> None:
    with StubServer(Script(fail_times=10, fail_status=500)) as s, pytest.raises(ProviderServerError):
        await provider(s.url, retries=1).complete(PARAMS)
    assert s.script.calls == 2


async def test_client_error_is_not_retried() -> None:
    with StubServer(Script(fail_times=10, fail_status=400)) as s, pytest.raises(ProviderRequestError):
        await provider(s.url).complete(PARAMS)
    assert s.script.calls == 1


async def test_connection_refused_is_unavailable() -> None:
    with pytest.raises(ProviderUnavailable):
        await provider(f"http://127.0.0.1:{free_port()}/v1", retries=0).complete(PARAMS)


def test_an_upstream_refusal_keeps_its_code_and_a_missing_model_is_the_models_fault() -> None:
    too_long = json.dumps({"error": {"message": "This model's maximum context length is 2048 tokens.",
                                     "type": "invalid_request_error", "param": "messages",
                                     "code": "context_length_exceeded"}}).encode()
    e = status_error("m", 400, {}, too_long)
    assert isinstance(e, ProviderRequestError) and e.status == 400
    assert (e.code, e.param) == ("context_length_exceeded", "messages") and "maximum context length" in str(e)
    plain = status_error("m", 422, {}, b"not json")
    assert isinstance(plain, ProviderRequestError) and (plain.code, plain.param) == (None, None)
    unknown = json.dumps({"error": {"message": "The model `x` does not exist", "code": "model_not_found"}}).encode()
    for status, body in ((400, unknown), (404, b'{"error": {"message": "no such model"}}')):
        assert type(status_error("m", status, {}, body)) is ProviderUnavailable  # counts against the model
