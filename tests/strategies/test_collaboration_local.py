"""Collaboration through the real server on real local models: MoA concurrency, chain, critique, failures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from servers import MoaiServer, start_moai, stop
from stub_openai import free_port

from moai import local_models

pytestmark = pytest.mark.integration

CONFIG = """
models:
  smol: {{provider: local, package: smollm2-135m, privacy: local, context: 2048}}
  qwen05: {{provider: local, package: qwen2.5-coder-0.5b, privacy: local, context: 2048}}
  qwen15: {{provider: local, package: qwen2.5-coder-1.5b, privacy: local, context: 2048}}
  dead: {{provider: openai_compat, endpoint: "http://127.0.0.1:{dead_port}/v1", privacy: private, max_retries: 0}}
mixes:
  moa2:
    strategy: moa
    layers: 2
    proposers: [smol, qwen05, qwen15]
    aggregator: qwen05
    max_tokens: 12
  chain:
    strategy: chain
    max_tokens: 12
    steps:
      - {{model: smol, instruction: "Answer briefly."}}
      - {{model: qwen05, instruction: "Fix any mistake in the previous answer; reply with the final answer."}}
  critique:
    strategy: critique
    writer: qwen05
    critic: smol
    rounds: 1
    max_tokens: 12
  checked:
    strategy: critique
    writer: qwen05
    critic: qwen05
    check: python
    max_tokens: 60
  broken:
    strategy: moa
    proposers: [dead, smol, qwen05]
    aggregator: qwen05
    max_tokens: 12
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoaiServer]:
    for name in ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
        local_models.pull(name)
    s = start_moai(CONFIG.format(dead_port=free_port()), Path(tmp_path_factory.mktemp("collab")))
    try:
        yield s
    finally:
        stop(s.proc)


def ask(server: MoaiServer, mix: str, stream: bool = False) -> dict:
    c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=300)
    msgs = [{"role": "user", "content": "What is 12 + 30?"}]
    if not stream:
        return c.chat.completions.create(model=f"moai/{mix}", messages=msgs).model_dump()
    chunks = list(c.chat.completions.create(model=f"moai/{mix}", messages=msgs, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    moai = next(ch.model_extra["moai"] for ch in chunks if ch.model_extra and "moai" in ch.model_extra)
    return {"choices": [{"message": {"content": text}}], "moai": moai}


def overlapping(entries: list[dict]) -> bool:
    return max(e["start"] for e in entries) < min(e["end"] for e in entries)


def test_two_layer_moa_runs_each_layer_concurrently(server: MoaiServer) -> None:
    resp = ask(server, "moa2", stream=True)
    assert resp["choices"][0]["message"]["content"].strip()
    trace = resp["moai"]["trace"]
    layer1 = [t for t in trace if t["step"].startswith("p1.")]
    layer2 = [t for t in trace if t["step"].startswith("p2.")]
    agg = [t for t in trace if t["role"] == "aggregator"]
    assert len(layer1) == 3 and len(layer2) == 3 and len(agg) == 1
    assert all(t["status"] == "ok" for t in trace)
    assert {t["model"] for t in layer1} == {"smol", "qwen05", "qwen15"}
    assert overlapping(layer1) and overlapping(layer2)
    assert min(t["start"] for t in layer2) >= max(t["end"] for t in layer1)  # layer 2 reads layer 1
    assert agg[0]["start"] >= max(t["end"] for t in layer2)
    assert resp["moai"]["strategy"] == "moa" and set(resp["moai"]["models_used"]) == {"smol", "qwen05", "qwen15"}


def test_chain_runs_in_order(server: MoaiServer) -> None:
    resp = ask(server, "chain")
    trace = resp["moai"]["trace"]
    assert [t["step"] for t in trace] == ["step1", "step2"]
    assert trace[1]["start"] >= trace[0]["end"]
    assert resp["moai"]["model"] == "qwen05"
    assert resp["choices"][0]["message"]["content"].strip()


def test_critique_drafts_reviews_and_finishes(server: MoaiServer) -> None:
    resp = ask(server, "critique")
    steps = {t["step"]: t for t in resp["moai"]["trace"]}
    assert {"draft", "critique1", "revise1"} <= set(steps)
    assert steps["critique1"]["model"] == "smol" and steps["draft"]["model"] == "qwen05"
    assert steps["revise1"]["status"] in ("ok", "passthrough")
    assert resp["choices"][0]["message"]["content"].strip()


def test_critique_checks_a_number_with_a_sandboxed_program(server: MoaiServer) -> None:
    resp = ask(server, "checked", stream=True)
    steps = {t["step"]: t for t in resp["moai"]["trace"]}
    assert steps["check"]["status"] == "ok" and steps["check"]["role"] == "critic"
    assert steps["check"]["start"] >= steps["draft"]["end"]
    verdict = [r for r in resp["moai"]["reason"] if r.startswith("program check")]
    assert len(verdict) == 1  # agrees / disagrees (revised) / inconclusive (reviewed in words)
    if "agrees" in verdict[0]:  # approved: no review in words, the draft is the answer
        assert steps["revise1"]["status"] == "passthrough"
        assert steps.get("critique1", {"status": "skipped"})["status"] == "skipped"
    assert resp["choices"][0]["message"]["content"].strip()


def test_dead_proposer_does_not_fail_the_request(server: MoaiServer) -> None:
    resp = ask(server, "broken")
    trace = resp["moai"]["trace"]
    failed = [t for t in trace if t["status"] == "failed"]
    assert [t["model"] for t in failed] == ["dead"] and failed[0]["role"] == "proposer"
    assert "dead" in failed[0]["error"] and [a["model"] for a in failed[0]["attempts"]] == ["dead"]
    assert failed[0]["tokens"] == {"input": 0, "output": 0}
    assert resp["choices"][0]["message"]["content"].strip()
    assert "dead" not in resp["moai"]["models_used"]
