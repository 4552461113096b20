"""A final step no model answered costs nothing, streamed or not, and its trace names the model that failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stub_openai import Script, StubServer, free_port

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.outcome import Execution
from moai.telemetry.store import TelemetryStore


def config(proposer_url: str, dead_url: str) -> str:
    return f"""
models:
  a: {{provider: openai_compat, endpoint: "{proposer_url}", privacy: private, params_b: 70, max_retries: 0,
      price: {{input_per_mtok: 1000, output_per_mtok: 1000}}}}
  b: {{provider: openai_compat, endpoint: "{proposer_url}", privacy: private, params_b: 7, max_retries: 0,
      price: {{input_per_mtok: 1000, output_per_mtok: 1000}}}}
  agg: {{provider: openai_compat, endpoint: "{dead_url}", privacy: private, params_b: 70, max_retries: 0,
        price: {{input_per_mtok: 1000, output_per_mtok: 1000}}}}
mixes:
  m: {{strategy: moa, proposers: [a, b], aggregator: agg, fallbacks: []}}
"""


async def answer(m: Mixture, stream: bool) -> tuple[Execution, dict[str, Any], str]:
    # a long prompt: the streaming path's prompt estimate (~100 tokens) differs from the stub's 7
    body = ChatCompletionRequest.model_validate({"model": "moai/m", "stream": stream,
                                                 "messages": [{"role": "user", "content": "word " * 80}]})
    prep = m.prepare(body)
    items = [i async for i in m.stream(prep, live=stream)]
    ex = items[-1]
    assert isinstance(ex, Execution)
    return ex, m.summary(prep, ex), prep.id


async def test_a_failed_aggregator_adds_no_tokens_when_streamed(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connection refused
    store = TelemetryStore(f"sqlite:///{tmp_path / 't.db'}")
    with StubServer(Script(reply="one two")) as up:
        m = Mixture(parse_config(config(up.url, dead)), store=store)
        plain, plain_summary, _ = await answer(m, stream=False)
        streamed, summary, request_id = await answer(m, stream=True)
        await m.aclose()
    for ex, s in ((plain, plain_summary), (streamed, summary)):
        assert ex.answer.role == "proposer"  # the best proposer rescued the request
        by_model = s["usage_by_model"]
        assert ex.usage.prompt_tokens == sum(u["input"] for u in by_model.values()) == 14
        assert ex.usage.completion_tokens == sum(u["output"] for u in by_model.values()) == 4
        assert ex.cost_usd == sum(u["cost_usd"] for u in by_model.values())
        (agg,) = [t for t in s["trace"] if t["step"] == "aggregate"]
        assert agg["status"] == "failed" and agg["tokens"] == {"input": 0, "output": 0} and agg["cost_usd"] == 0
        assert agg["model"] == "agg" and [a["model"] for a in agg["attempts"]] == ["agg"]
    row = store.get(request_id)
    assert row is not None and row.stream
    assert (row.prompt_tokens, row.completion_tokens) == (14, 4)
    store.close()


def test_a_failed_step_gives_each_models_reason_once_and_counts_the_rest() -> None:
    from moai.strategies.outcome import why_failed
    from moai.strategies.plan import StepResult

    r = StepResult(step="answer", role="final", model="m6", status="failed", error="m6: down")
    r.attempts = [{"model": f"m{i}", "error": f"m{i}: down"} for i in [1, 2, 3, 4, 5, 6, 1]]
    assert why_failed(r) == "m1: down; m2: down; m3: down; m4: down; and 2 more"
    r.attempts = [{"model": "m1", "error": "m1: down"}, {"model": "m1", "error": "m1: down"}]
    assert why_failed(r) == "m6: down"  # one reason: the step's own, as before
