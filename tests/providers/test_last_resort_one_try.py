"""A call made with ``one_try`` (a model tried only as a last resort: its circuit open, or a rate limit still
running) is sent once, whatever the card's ``max_retries``; other calls keep their retries in place."""

from __future__ import annotations

from dataclasses import replace

import pytest
import stub_anthropic
from compat_support import close_providers, provider  # noqa: F401 - close_providers: an autouse fixture
from stub_openai import Script, StubServer

from moai.catalog import ModelCard
from moai.providers import ChatParams, Provider, ProviderError, make_provider
from moai.providers.base import watch_retries, watched

PARAMS = ChatParams(messages=[{"role": "user", "content": "hi"}], max_tokens=8)
ALWAYS = 10**6  # fail_times: every call fails


async def _call(p: Provider, stream: bool, one_try: bool) -> list[ProviderError]:
    """Call ``p`` (which fails) as the executor does; the tries it retried in place."""
    retried: list[ProviderError] = []
    with pytest.raises(ProviderError):
        if stream:
            async for _ in watched(p.stream(replace(PARAMS)), retried, p.name, one_try=one_try):
                pass
        else:
            with watch_retries(retried, one_try=one_try):
                await p.complete(PARAMS)
    return retried


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("one_try", [True, False], ids=["last-resort", "healthy"])
async def test_openai_compat_retries_in_place_only_when_not_a_last_resort(stream: bool, one_try: bool) -> None:
    with StubServer(Script(fail_times=ALWAYS, fail_status=500)) as s:
        retried = await _call(provider(s.url, retries=1), stream, one_try)
    assert s.script.calls == (1 if one_try else 2)
    assert len(retried) == s.script.calls - 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("one_try", [True, False], ids=["last-resort", "healthy"])
async def test_anthropic_retries_in_place_only_when_not_a_last_resort(stream: bool, one_try: bool,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOAI_TEST_ANTHROPIC_KEY", "sk-ant-test")
    with stub_anthropic.StubAnthropic(stub_anthropic.Script(fail_times=ALWAYS, fail_status=500)) as s:
        p = make_provider(ModelCard(name="claude", provider="anthropic", endpoint=s.url, model="claude-test",
                                    api_key_env="MOAI_TEST_ANTHROPIC_KEY", max_retries=1, timeout_s=5))
        await _call(p, stream, one_try)
        await p.aclose()
    assert s.script.calls == (1 if one_try else 2)
