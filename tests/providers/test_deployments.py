"""Two deployments of one model share the load, respect their limits, and cover for each other."""

from __future__ import annotations

import asyncio

from stub_openai import Script, StubServer, free_port

from moai.config import parse_config
from moai.providers import ChatParams, make_provider
from moai.providers.balanced import BalancedProvider

PARAMS = ChatParams(messages=[{"role": "user", "content": "hi"}], max_tokens=4)


def card(urls: list[str], balance: str = "least_busy", concurrency: int = 100):  # type: ignore[no-untyped-def]
    deps = ", ".join(f'{{endpoint: "{u}", concurrency: {concurrency}}}' for u in urls)
    cfg = parse_config(f"""
models:
  m: {{provider: openai_compat, privacy: private, max_retries: 0, balance: {balance}, deployments: [{deps}]}}
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
