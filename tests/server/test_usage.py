"""Usage and cost stay right: after a fallback, per collaboration step, and for a stream the client cut."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from servers import start_moai, stop
from stub_openai import Script, StubServer

pytestmark = pytest.mark.integration


def test_usage_is_exact_and_partial_streams_are_recorded(tmp_path: Path) -> None:
    long_reply = " ".join(f"w{i}" for i in range(200))
    with StubServer(Script(fail_times=10**6, fail_status=503)) as down, \
            StubServer(Script(reply="a b c d")) as up, StubServer(Script(reply=long_reply, word_delay_s=0.02)) as slow:
        cfg = f"""
models:
  down: {{provider: openai_compat, endpoint: "{down.url}", privacy: private, params_b: 70, max_retries: 0,
         price: {{input_per_mtok: 5, output_per_mtok: 5}}}}
  up: {{provider: openai_compat, endpoint: "{up.url}", privacy: private, params_b: 7, max_retries: 0,
       price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
  slow: {{provider: openai_compat, endpoint: "{slow.url}", privacy: private, params_b: 7, max_retries: 0,
         price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
mixes:
  default: {{strategy: route, models: [down, up], fallbacks: [up]}}
  team: {{strategy: moa, proposers: [up, up], aggregator: up}}
  slow: {{strategy: route, models: [slow]}}
"""
        srv = start_moai(cfg, tmp_path)
        try:
            msg = [{"role": "user", "content": "Prove step by step and implement the algorithm " * 20}]
            r = httpx.post(srv.url + "/chat/completions", json={"model": "moai/default", "messages": msg}).json()
            assert r["moai"]["model"] == "up" and r["usage"] == {"prompt_tokens": 7, "completion_tokens": 4,
                                                                 "total_tokens": 11}
            assert r["moai"]["cost_usd"] == pytest.approx((7 * 1 + 4 * 2) / 1e6)  # priced as the model that answered

            team = httpx.post(srv.url + "/chat/completions", timeout=30,
                              json={"model": "moai/team", "messages": [{"role": "user", "content": "hi"}]}).json()
            steps = [t for t in team["moai"]["trace"] if t["status"] == "ok"]
            assert team["usage"]["completion_tokens"] == sum(t["tokens"]["output"] for t in steps) == 4 * len(steps)
            assert team["moai"]["cost_usd"] == pytest.approx(sum(t["cost_usd"] for t in steps))

            body = {"model": "moai/slow", "stream": True, "messages": [{"role": "user", "content": "long story"}]}
            with httpx.stream("POST", srv.url + "/chat/completions", json=body, timeout=30) as resp:
                got = 0
                for line in resp.iter_lines():
                    if line.startswith("data: {") and '"content": "' in line and '"content": ""' not in line:
                        got += 1
                    if got >= 20:
                        break  # the client hangs up mid-answer
            deadline = time.time() + 10
            row = None
            while time.time() < deadline and row is None:
                with sqlite3.connect(srv.db) as db:
                    row = db.execute("select status, completion_tokens, http_status from requests "
                                     "where mix='slow'").fetchone()
                time.sleep(0.2)
            metrics = httpx.get(srv.url.removesuffix("/v1") + "/metrics").text
        finally:
            stop(srv.proc)
    assert row is not None and row[0] == "cancelled" and row[2] == 499
    assert 20 <= row[1] < 200  # what was generated before the hang-up, not the whole answer
    # /metrics counts the same generated tokens and their cost as the database does
    counted = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if 'mix="slow"' in line and ('kind="completion"' in line or line.startswith("moai_cost_usd_total"))}
    assert counted["moai_tokens_total"] == row[1] and counted["moai_cost_usd_total"] > 0
