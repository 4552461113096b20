"""Two deployments of one model share the load, respect their limits, and cover for each other."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from stub_openai import Script, StubServer, free_port

from moai.config import parse_config
from moai.providers import ChatParams, ProviderRateLimited, make_provider
from moai.providers.balanced import BalancedProvider
from moai.providers.tool_calls import merge_tool_call_deltas

PARAMS = ChatParams(messages=[{"role": "user", "content": "hi"}], max_tokens=4)


def card(urls: list[str], balance: str = "least_busy", concurrency: int = 100,  # type: ignore[no-untyped-def]
         retries: int = 0):
    deps = ", ".join(f'{{endpoint: "{u}", concurrency: {concurrency}}}' for u in urls)
    cfg = parse_config(f"""
models:
  m: {{provider: openai_compat, privacy: private, max_retries: {retries}, balance: {balance}, deployments: [{deps}]}}
mixes:
  default: {{strategy: route}}
""")
    return cfg.models["m"]


async def test_load_spreads_across_two_deployments() -> None:
    with StubServer(Script(delay_s=0.05)) as a, StubServer(Script(delay_s=0.05)) as b:
        p = make_provider(card([a.url, b.url]))
        assert isinstance(p, BalancedProvider)
        await asyncio.gather(*(p.complete(PARAMS) for _ in range(200)))
        await p.aclose()
    assert a.script.calls + b.script.calls == 200
    assert min(a.script.calls, b.script.calls) >= 80  # roughly even under 200 concurrent requests


async def test_latency_mode_prefers_the_faster_deployment() -> None:
    with StubServer(Script(delay_s=0.3)) as slow, StubServer(Script(delay_s=0.01)) as fast:
        p = make_provider(card([slow.url, fast.url], balance="latency"))
        for _ in range(3):  # learn both latencies
            await asyncio.gather(p.complete(PARAMS), p.complete(PARAMS))
        before = slow.script.calls
        await asyncio.gather(*(p.complete(PARAMS) for _ in range(20)))
        await p.aclose()
    assert slow.script.calls - before <= 6


async def test_per_deployment_concurrency_limit_holds() -> None:
    with StubServer(Script(delay_s=0.2)) as a:
        p = make_provider(card([a.url], concurrency=2))
        t0 = asyncio.get_running_loop().time()
        await asyncio.gather(*(p.complete(PARAMS) for _ in range(6)))
        elapsed = asyncio.get_running_loop().time() - t0
        await p.aclose()
    assert elapsed >= 0.55  # 6 calls, 2 at a time, 0.2 s each


async def test_a_dead_deployment_is_covered_by_the_other() -> None:
    with StubServer() as alive:
        p = make_provider(card([f"http://127.0.0.1:{free_port()}/v1", alive.url]))
        outs = await asyncio.gather(*(p.complete(PARAMS) for _ in range(10)))
        await p.aclose()
    assert all(o.text == "stub answer" for o in outs) and alive.script.calls == 10


async def test_a_rate_limited_deployment_hands_over_at_once_and_is_left_alone_until_retry_after() -> None:
    """A deployment answering 429 with Retry-After: 30 is not waited for: the other deployment answers, and
    later calls go to the other one first instead of paying for a 429 each time."""
    limited = Script(fail_times=10**6, fail_status=429, retry_after="30")
    with StubServer(limited) as a, StubServer() as b:
        p = make_provider(card([a.url, b.url], retries=2))
        assert isinstance(p, BalancedProvider)
        t0 = time.perf_counter()
        first = await p.complete(PARAMS)
        first_s = time.perf_counter() - t0
        outs = [await p.complete(PARAMS) for _ in range(5)]
        await p.aclose()
    assert first.text == "stub answer" and first_s < 1.0
    assert all(o.text == "stub answer" for o in outs)
    assert a.script.calls == 1 and b.script.calls == 6


async def test_every_deployment_rate_limited_makes_the_model_rate_limited_until_the_first_frees_up() -> None:
    with StubServer(Script(fail_times=10**6, fail_status=429, retry_after="30")) as a, \
            StubServer(Script(fail_times=10**6, fail_status=429, retry_after="7")) as b:
        p = make_provider(card([a.url, b.url], retries=2))
        t0 = time.perf_counter()
        with pytest.raises(ProviderRateLimited) as e:
            await p.complete(PARAMS)
        elapsed = time.perf_counter() - t0
        await p.aclose()
    assert elapsed < 1.0 and (a.script.calls, b.script.calls) == (1, 1)
    assert e.value.model == "m" and e.value.retry_after == 7


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_call_a_refusal_and_the_model_id_come_through_as_from_one_endpoint(stream: bool) -> None:
    """A balanced model answers as a single-endpoint one: a tool call whole (not its streamed pieces), a refusal
    as a refusal, and its deployments are asked for the card's model, not their own names."""
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    params = ChatParams(messages=PARAMS.messages, max_tokens=4, tools=[weather])  # a call needs its function offered

    async def ask(script: Script) -> tuple[Any, Script]:
        with StubServer(script) as a:
            p = make_provider(card([a.url]))
            if stream:
                deltas = [d async for d in p.stream(params)]
                calls: list[dict[str, Any]] = []
                for d in deltas:
                    merge_tool_call_deltas(calls, d.tool_calls or [])
                out = ("".join(d.text for d in deltas), calls, "".join(d.refusal for d in deltas))
            else:
                c = await p.complete(params)
                assert c.model == "m"
                out = (c.text, c.tool_calls or [], c.refusal or "")
            await p.aclose()
        return out, a.script

    (text, calls, _), script = await ask(Script(tool_call=("get_weather", '{"city": "Paris"}')))
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris"})]
    assert script.seen[0]["model"] == "m" and script.seen[0].get("stream", False) is stream  # plain is not streamed
    (text, calls, refusal), _ = await ask(Script(reply="I can't help with that.", refuse=True))
    assert refusal == "I can't help with that." and not text and not calls


async def test_a_deployment_that_failed_is_tried_after_the_others_for_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment down (nothing listening) would make every request wait on it first; after it failed once,
    requests go to the healthy one first, and it is tried again later."""
    from moai.providers import balanced

    down = f"http://127.0.0.1:{free_port()}/v1"
    with StubServer(Script(reply="ok")) as up:
        p = make_provider(card([down, up.url]))
        assert isinstance(p, BalancedProvider)
        for _ in range(5):
            assert (await p.complete(PARAMS)).text == "ok"
        failures = p.deployments[0].failures
        monkeypatch.setattr(balanced, "FAILED_BACK_S", 0.0, raising=False)  # its time behind the others is over
        await p.complete(PARAMS)
        await p.aclose()
    assert failures == 1 and up.script.calls == 6
    assert p.deployments[0].failures == 2  # tried first again once its time was over
