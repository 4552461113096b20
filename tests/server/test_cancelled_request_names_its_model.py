"""A request its client leaves (a stream closed mid-answer, a plain request whose client timed out) is filed under
the model it was being answered by: its ``requests`` row, ``/metrics`` and ``moai report`` name the model its
calls name (a mix of several steps: the final step's model once it had started, else the model still running)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import MoaiServer, start_moai, stop
from stub_openai import Script, StubServer
from typer.testing import CliRunner

from moai.cli import app

pytestmark = pytest.mark.integration

SLOW_WORDS = " ".join(["w"] * 60)


def _model(name: str, url: str) -> str:
    return (f"  {name}: {{provider: openai_compat, endpoint: \"{url}\", privacy: private, max_retries: 0,\n"
            f"      price: {{input_per_mtok: 1, output_per_mtok: 2}}}}\n")


def _leave_mid_stream(srv: MoaiServer, mix: str) -> None:
    """Read the stream until its answer has begun, then hang up."""
    body = {"model": f"moai/{mix}", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    with httpx.stream("POST", srv.url + "/chat/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if '"content": "w' in line or '"content":"w' in line:
                break


def _time_out(srv: MoaiServer, mix: str, after_s: float) -> None:
    body = {"model": f"moai/{mix}", "messages": [{"role": "user", "content": "go"}]}
    with pytest.raises(httpx.TimeoutException):  # the client gives up and closes its connection
        httpx.post(srv.url + "/chat/completions", json=body, timeout=after_s)


def _rows(db: Path, n: int) -> dict[str, tuple[Any, ...]]:
    """mix -> (status, http_status, model, the models of its calls), once ``n`` requests are stored."""
    for _ in range(100):
        with sqlite3.connect(db) as con:
            rows = con.execute("select id, mix, status, http_status, model from requests").fetchall()
            calls = con.execute("select request_id, model from calls order by started_at").fetchall()
        if len(rows) >= n:
            break
        time.sleep(0.1)
    return {mix: (status, code, model, [m for rid, m in calls if rid == i]) for i, mix, status, code, model in rows}


def test_a_cancelled_request_names_the_model_it_was_answered_by(tmp_path: Path) -> None:
    with StubServer(Script(reply=SLOW_WORDS, word_delay_s=0.1)) as talker, StubServer(Script(delay_s=4.0)) as slow, \
            StubServer() as fast, StubServer() as fast2:
        cfg = ("models:\n" + _model("talker", talker.url) + _model("slow", slow.url) + _model("fast", fast.url)
               + _model("fast2", fast2.url) + """mixes:
  talk: {strategy: route, models: [talker]}
  think: {strategy: route, models: [slow]}
  panel: {strategy: moa, proposers: [fast, fast2], aggregator: talker}
  waiting: {strategy: moa, proposers: [fast, slow], aggregator: fast2}
""")
        srv = start_moai(cfg, tmp_path)
        try:
            _leave_mid_stream(srv, "talk")
            _time_out(srv, "think", 0.6)
            _leave_mid_stream(srv, "panel")  # the aggregator was answering
            _time_out(srv, "waiting", 1.0)  # one proposer had answered, the other was still running
            rows = _rows(srv.db, 4)
            metrics = httpx.get(srv.base + "/metrics", timeout=10).text
        finally:
            stop(srv.proc)
    assert rows["talk"] == ("cancelled", 499, "talker", ["talker"])
    assert rows["think"] == ("cancelled", 499, "slow", ["slow"])
    assert rows["panel"][:3] == ("cancelled", 499, "talker") and rows["panel"][3][-1] == "talker"
    assert rows["waiting"][:3] == ("cancelled", 499, "slow") and "slow" in rows["waiting"][3]
    for mix, model in (("talk", "talker"), ("think", "slow"), ("panel", "talker"), ("waiting", "slow")):
        assert f'moai_requests_total{{mix="{mix}",model="{model}",status="cancelled"}} 1.0' in metrics
    assert 'model="none",status="cancelled"' not in metrics
    report = CliRunner().invoke(app, ["report", "--database-url", f"sqlite:///{srv.db}"],
                                env={"COLUMNS": "400"})
    assert report.exit_code == 0, report.output
    mixes = {line.split("│")[1].strip(): line for line in report.output.splitlines() if line.count("│") > 5}
    assert "talker: 1" in mixes["talk"] and "slow: 1" in mixes["think"]
    assert "(cancelled)" not in report.output
