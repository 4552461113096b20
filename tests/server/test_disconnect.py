"""A client that leaves before its answer is ready stops the plan: no later step's model is called (or billed), and
the request is recorded as cancelled (499), streamed or not."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from servers import start_moai, stop
from stub_openai import Script, StubServer

pytestmark = pytest.mark.integration

DELAY_S = 2.0  # the proposers' answer time; the client gives up well before


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_client_leaving_before_the_answer_cancels_the_rest_of_the_plan(tmp_path: Path, stream: bool) -> None:
    with StubServer(Script(delay_s=DELAY_S)) as a, StubServer(Script(delay_s=DELAY_S)) as b, StubServer() as agg:
        cfg = f"""
models:
  a: {{provider: openai_compat, endpoint: "{a.url}", privacy: private, params_b: 8, max_retries: 0,
      price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
  b: {{provider: openai_compat, endpoint: "{b.url}", privacy: private, params_b: 8, max_retries: 0,
      price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
  agg: {{provider: openai_compat, endpoint: "{agg.url}", privacy: private, params_b: 8, max_retries: 0,
        price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
mixes:
  team: {{strategy: moa, proposers: [a, b], aggregator: agg}}
"""
        srv = start_moai(cfg, tmp_path)
        try:
            body = {"model": "moai/team", "stream": stream, "messages": [{"role": "user", "content": "Explain X"}]}
            with pytest.raises(httpx.TimeoutException):  # the client gives up and closes its connection
                httpx.post(srv.url + "/chat/completions", json=body, timeout=0.5)
            assert a.script.calls == b.script.calls == 1
            time.sleep(DELAY_S + 1.0)  # past the proposers' answers: the aggregator would have been called by now
            with sqlite3.connect(srv.db) as db:
                row = db.execute("select status, http_status, model from requests").fetchall()
            completed = httpx.post(srv.url + "/chat/completions", json=body, timeout=30)  # the mix still works
        finally:
            stop(srv.proc)
    assert agg.script.calls == 1  # the request that stayed, only
    assert len(row) == 1 and row[0][:2] == ("cancelled", 499) and row[0][2] in ("a", "b")  # a proposer was running
    assert completed.status_code == 200


def test_a_client_leaving_a_fast_stream_stops_it_and_is_billed_what_was_generated(tmp_path: Path) -> None:
    """An upstream streaming as fast as it can: sends to a gone client return at once, so the stream's own
    cancellation could land only after the whole answer was read, recorded ``ok`` and billed in full."""
    words = 20_000  # more than max_tokens: the stub streams them all the same
    with StubServer(Script(reply=" ".join(["w"] * words))) as up:
        srv = start_moai(f"""
models:
  m: {{provider: openai_compat, endpoint: "{up.url}", privacy: private, max_retries: 0,
      price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
mixes:
  default: {{strategy: route, models: [m], max_tokens: 32768}}
""", tmp_path)
        try:
            body = {"model": "moai/default", "stream": True, "messages": [{"role": "user", "content": "go"}]}
            with httpx.stream("POST", srv.url + "/chat/completions", json=body, timeout=30) as r:
                lines = r.iter_lines()
                for _ in range(100):
                    next(lines)
            # the client has hung up; the stream's record is written once it stops
            for _ in range(100):
                with sqlite3.connect(srv.db) as db:
                    rows = db.execute("select status, http_status, completion_tokens from requests").fetchall()
                if rows:
                    break
                time.sleep(0.1)
        finally:
            stop(srv.proc)
    assert rows and rows[0][:2] == ("cancelled", 499)
    assert rows[0][2] < words // 2  # what was generated until it left, not the whole answer
