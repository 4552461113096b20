"""The policy weighs each model's latency for the request's own prompt size: a long prompt answered a minute ago
does not send a short question to a weaker model, and a long prompt goes where its prefill is cheap."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from moai.catalog import ModelCard
from moai.config import parse_config
from moai.gate.decision import RouteDecision
from moai.gate.policy import Weights, choose
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest
from moai.telemetry.records import CallRecord, RequestRecord
from moai.telemetry.store import TelemetryStore

CONFIG = """
models:
  big: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private, params_b: 7, context: 32768}
  small: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: private, params_b: 0.5,
          context: 32768}
mixes:
  default: {strategy: route, models: [big, small]}
"""
QUALITY = {"big": 0.9, "small": 0.7}
LONG_TEXT = "Here is some text. " + " ".join(f"item{i} is number {i * 7}." for i in range(300))


class Utility:
    """Routes by the policy's utility with fixed qualities and a latency weight, reading the live statistics."""

    name = "utility"

    def decide(self, messages: Sequence[dict[str, Any]], cards: Sequence[ModelCard], weights: Any,
               live: Mapping[str, Mapping[str, float]] | None = None) -> RouteDecision:
        d = choose(QUALITY, {c.name: c for c in cards}, Weights(latency=0.1), live_stats=live)
        ranking = sorted(d.utilities, key=lambda n: -d.utilities[n])
        return RouteDecision(model=ranking[0], ranking=ranking, probabilities=d.probabilities,
                             utilities=d.utilities)


def calls(model: str, ttft_short: float, ttft_long: float, spt: float, t0: float) -> list[CallRecord]:
    """A warm-up, ten short streamed questions, then one long prompt answered in two tokens: the latest call."""
    rows = [(20, 3.0, 2.0, 16)] + [(20, ttft_short + 16 * spt, ttft_short, 16)] * 10
    rows.append((1566, ttft_long + 2 * spt, ttft_long, 2))
    return [CallRecord(step=f"{model}{i}", role="answer", model=model, status="ok", started_at=t0 + i - lat,
                       ended_at=t0 + i, latency_ms=lat * 1000, ttft_ms=ttft * 1000, prompt_tokens=prompt,
                       completion_tokens=out, cost_usd=0, energy_kwh=0, co2_g=0)
            for i, (prompt, lat, ttft, out) in enumerate(rows)]


def request(text: str) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "moai/default", "messages": [{"role": "user", "content": text}], "max_tokens": 16})


def test_a_short_question_is_not_charged_a_long_prompts_prefill(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'a.db'}")
    t0 = time.time() - 60
    req = RequestRecord(id="r", mix="default", strategy="route", model="big", status="ok", http_status=200,
                        stream=True, prompt_tokens=0, completion_tokens=0, latency_ms=0, cost_usd=0, energy_kwh=0,
                        co2_g=0)
    req.calls.extend(calls("big", 0.15, 8.0, 0.02, t0))  # slow to read a long prompt
    req.calls.extend(calls("small", 0.05, 1.0, 0.01, t0))
    store.write(req)
    mix = Mixture(parse_config(CONFIG), store=store, chooser=Utility())  # statistics rebuilt from the database
    short = mix.prepare(request("What is the capital of France?"))
    long = mix.prepare(request(LONG_TEXT + " Reply OK."))
    assert short.ctx.live is not None and long.ctx.live is not None
    assert short.ctx.live["big"]["latency_s"] < 0.6  # its short questions' time, not the long prompt's
    assert long.ctx.live["big"]["latency_s"] > 5.0
    assert short.ctx.decision is not None and short.ctx.decision.model == "big"
    assert long.ctx.decision is not None and long.ctx.decision.model == "small"
