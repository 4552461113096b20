"""Expected latency by prompt size: a long prompt's prefill is charged to long prompts, not to every short query."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest
from moai.telemetry.adapt import LiveStats
from moai.telemetry.records import CallRecord, RequestRecord
from moai.telemetry.store import TelemetryStore

SHORT, LONG = 20, 1566  # prompt tokens
SPT = 0.02  # seconds per generated token
SHORT_TTFT, LONG_TTFT = 0.15, 8.0

# (prompt tokens, latency s, ttft s or None, output tokens): a warm-up, short streamed calls, one long prompt
# answered in two tokens (its first token came with nearly the whole call), then short calls again
CALLS: list[tuple[int, float, float | None, int]] = [
    (SHORT, 3.0, 2.0, 16),
    *[(SHORT, SHORT_TTFT + 16 * SPT, SHORT_TTFT, 16)] * 10,
    (LONG, LONG_TTFT + 2 * SPT, LONG_TTFT, 2),
    *[(SHORT, SHORT_TTFT + 16 * SPT, SHORT_TTFT, 16)] * 2,
]


def observed(calls: list[tuple[int, float, float | None, int]], t0: float) -> LiveStats:
    s = LiveStats()
    for i, (prompt, latency, ttft, out) in enumerate(calls):
        s.observe("m", True, latency, ttft, out, now=t0 + i, prompt_tokens=prompt)
    return s


def test_one_long_prompt_does_not_slow_the_estimate_for_a_short_query() -> None:
    s = observed(CALLS, time.time() - 60)
    short = s.snapshot(16, prompt_tokens=SHORT)["m"]
    long = s.snapshot(16, prompt_tokens=LONG)["m"]
    assert short["latency_s"] == pytest.approx(SHORT_TTFT + 16 * SPT, abs=0.02)
    assert short["ttft_s"] == pytest.approx(SHORT_TTFT, abs=0.02)
    assert long["latency_s"] == pytest.approx(LONG_TTFT + 16 * SPT, rel=0.05)
    assert long["ttft_s"] == pytest.approx(LONG_TTFT, rel=0.05)
    assert s.snapshot(16)["m"]["s_per_token"] == pytest.approx(SPT)


def test_unstreamed_calls_split_off_generation_at_the_known_speed() -> None:
    """An unstreamed call reports its whole latency as its first token: its prefill is that latency less its
    generation at the speed streamed calls showed, not the whole call."""
    s = LiveStats()
    t0 = time.time() - 60
    for i in range(6):  # warm-up, then streamed short calls: 0.02 s a token
        s.observe("m", True, 0.1 + 100 * SPT, 0.1, 100, now=t0 + i, prompt_tokens=SHORT)
    for i in range(3):  # unstreamed long prompts with long answers: 4 s prefill + 200 tokens
        latency = 4.0 + 200 * SPT
        s.observe("m", True, latency, latency, 200, now=t0 + 10 + i, prompt_tokens=1000)
        s.observe("m", True, 0.1 + 100 * SPT, None, 100, now=t0 + 20 + i, prompt_tokens=SHORT)
    assert s.snapshot(10, prompt_tokens=1000)["m"]["latency_s"] == pytest.approx(4.0 + 10 * SPT, rel=0.05)
    assert s.snapshot(10, prompt_tokens=SHORT)["m"]["latency_s"] == pytest.approx(0.1 + 10 * SPT, abs=0.02)


def test_without_a_generation_speed_whole_calls_are_fitted_by_prompt_size() -> None:
    """Answers too short to measure a generation speed (a few tokens, unstreamed): the whole-call latency, by
    prompt size, so a long prompt still does not slow the short queries' estimate."""
    s = LiveStats()
    t0 = time.time() - 60
    for i in range(8):
        s.observe("m", True, 0.2, None, 3, now=t0 + i, prompt_tokens=SHORT)
    s.observe("m", True, 8.8, None, 3, now=t0 + 9, prompt_tokens=LONG)
    s.observe("m", True, 0.2, None, 3, now=t0 + 10, prompt_tokens=SHORT)
    assert "s_per_token" not in s.snapshot(16)["m"]
    assert s.snapshot(16, prompt_tokens=SHORT)["m"]["latency_s"] == pytest.approx(0.2, abs=0.02)
    assert s.snapshot(16, prompt_tokens=LONG)["m"]["latency_s"] == pytest.approx(8.8, rel=0.05)


def test_prompts_of_one_size_give_their_mean_and_no_estimate_is_negative() -> None:
    from moai.telemetry.adapt import PromptLine

    same = PromptLine()
    for y in (0.1, 0.3, 0.2, 0.2):
        same.add(50, y)
    assert same.predict(50) == same.predict(5000) == pytest.approx(same.mean_y)
    steep = PromptLine()  # fitted freely, this line would start below zero
    for x, y in ((100, 0.01), (1000, 1.0)) * 3:
        steep.add(x, y)
    a, b = steep.coefficients() or (None, None)
    assert a == 0.0 and b is not None and b > 0
    assert steep.predict(0) == 0.0 and steep.predict(1000) == pytest.approx(1.0, rel=0.1)
    assert steep.predict(20) < 0.03  # a short prompt is charged its share of the long one's time, no more
    falling = PromptLine()  # longer prompts faster: noise, not a negative prefill cost
    for x, y in ((100, 0.5), (1000, 0.1)) * 3:
        falling.add(x, y)
    assert falling.coefficients() == (pytest.approx(falling.mean_y), 0.0)


def test_refresh_rebuilds_the_same_latency_model_from_the_calls_table(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'a.db'}")
    t0 = time.time() - 60
    req = RequestRecord(id="r", mix="d", strategy="route", model="m", status="ok", http_status=200, stream=True,
                        prompt_tokens=0, completion_tokens=0, latency_ms=0, cost_usd=0, energy_kwh=0, co2_g=0)
    for i, (prompt, latency, ttft, out) in enumerate(CALLS):
        req.calls.append(CallRecord(step=f"s{i}", role="answer", model="m", status="ok", started_at=t0 + i - latency,
                                    ended_at=t0 + i, latency_ms=latency * 1000,
                                    ttft_ms=ttft * 1000 if ttft else None, prompt_tokens=prompt,
                                    completion_tokens=out, cost_usd=0, energy_kwh=0, co2_g=0))
    store.write(req)
    replica = LiveStats()
    replica.refresh(store)
    here = observed(CALLS, t0)
    for prompt in (SHORT, LONG, None):
        rebuilt = replica.snapshot(16, prompt_tokens=prompt)["m"]
        live = here.snapshot(16, prompt_tokens=prompt)["m"]
        for key in ("latency_s", "ttft_s", "s_per_token"):
            assert rebuilt[key] == pytest.approx(live[key], rel=1e-9)
    assert replica.snapshot(16, prompt_tokens=SHORT)["m"]["latency_s"] == pytest.approx(SHORT_TTFT + 16 * SPT,
                                                                                          abs=0.02)


async def test_answered_calls_feed_their_prompt_size() -> None:
    config = """
models:
  m: {provider: openai_compat, endpoint: "%s", privacy: private, max_retries: 0}
mixes:
  default: {strategy: route, models: [m]}
"""
    with StubServer(Script(reply="Paris", usage_extra={"prompt_tokens": 900})) as stub:
        mix = Mixture(parse_config(config % stub.url))
        seen: list[int | None] = []
        observe = mix.stats.observe

        def spy(model: str, ok: bool, latency_s: float, *args: object, **kwargs: object) -> None:
            if ok:
                seen.append(kwargs.get("prompt_tokens"))  # type: ignore[arg-type]
            observe(model, ok, latency_s, *args, **kwargs)  # type: ignore[arg-type]

        mix.stats.observe = spy  # type: ignore[method-assign]
        body = ChatCompletionRequest.model_validate(
            {"model": "moai/default", "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        await mix.run(mix.prepare(body))
        await mix.aclose()
    assert seen == [900]
