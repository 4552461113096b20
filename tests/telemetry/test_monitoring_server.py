"""Monitoring through real servers: metrics, feedback, kill -9 durability, adaptation, replicas on PostgreSQL."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import start_moai, stop
from stub_openai import Script, StubServer
from typer.testing import CliRunner

from moai.cli import app

pytestmark = pytest.mark.integration


def two_model_config(a: str, b: str, extra: str = "", settings: str = "") -> str:
    return f"""
models:
  alpha: {{provider: openai_compat, endpoint: "{a}", privacy: private, params_b: 8, max_retries: 0, ttft_s: 0.02,
          tokens_per_s: 5000,
          price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
  beta: {{provider: openai_compat, endpoint: "{b}", privacy: private, params_b: 8, max_retries: 0, ttft_s: 0.02,
         tokens_per_s: 5000,
         price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
mixes:
  default: {{strategy: route, weights: {{quality: 1, latency: 2.0}}{extra}}}
settings: {{stats_refresh_s: 0.3{settings}}}
"""


def chat(url: str, text: str = "hello") -> dict:
    r = httpx.post(url + "/chat/completions", timeout=30,
                   json={"model": "moai/default", "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    return r.json()


def test_metrics_and_feedback(tmp_path: Path) -> None:
    with StubServer() as a, StubServer() as b:
        srv = start_moai(two_model_config(a.url, b.url), tmp_path)
        try:
            first = chat(srv.url)
            families = {f.name: f for f in text_string_to_metric_families(httpx.get(srv.base + "/metrics").text)}
            reqs = {s.labels["model"]: s.value for s in families["moai_requests"].samples
                    if s.name == "moai_requests_total"}
            assert reqs == {first["moai"]["model"]: 1.0}
            tokens = [s for s in families["moai_tokens"].samples if s.name == "moai_tokens_total"]
            assert sum(s.value for s in tokens) == first["usage"]["total_tokens"]
            assert any(s.name.endswith("_bucket") for s in families["moai_request_latency_seconds"].samples)
            assert "moai_cost_usd" in families and "moai_co2_grams" in families

            ok = httpx.post(srv.base + "/v1/feedback", json={"id": first["id"], "score": -1, "comment": "wrong"})
            assert ok.status_code == 200 and ok.json()["model"] == first["moai"]["model"]
            missing = httpx.post(srv.base + "/v1/feedback", json={"id": "chatcmpl-nope", "score": 1})
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_id"
            bad = httpx.post(srv.base + "/v1/feedback", json={"id": first["id"], "score": "great"})
            assert bad.status_code == 400
            off_scale = httpx.post(srv.base + "/v1/feedback", json={"id": first["id"], "score": 11})
            assert off_scale.status_code == 400 and off_scale.json()["error"]["param"] == "score"
            stats = httpx.get(srv.base + "/moai/stats").json()["models"]
            assert stats[first["moai"]["model"]]["quality_delta"] < 0
        finally:
            stop(srv.proc)
    with sqlite3.connect(srv.db) as db:
        assert db.execute("select score, comment from feedback").fetchall() == [(-1.0, "wrong")]
    runner = CliRunner()
    r = runner.invoke(app, ["report", "--database-url", f"sqlite:///{srv.db}", "--html", str(tmp_path / "r.html"),
                            "--plot", str(tmp_path / "r.png")])
    assert r.exit_code == 0, r.output
    assert first["moai"]["model"] in r.output
    page = (tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    r = runner.invoke(app, ["feedback", first["id"], "8", "--database-url", f"sqlite:///{srv.db}"])
    assert r.exit_code == 0
    r = runner.invoke(app, ["feedback", "chatcmpl-nope", "8", "--database-url", f"sqlite:///{srv.db}"])
    assert r.exit_code == 2 and "no chat completion" in r.output


def test_kill_9_loses_no_acknowledged_record(tmp_path: Path) -> None:
    with StubServer() as a, StubServer() as b:
        srv = start_moai(two_model_config(a.url, b.url), tmp_path)
        acked: list[str] = []
        lock = threading.Lock()
        stop_at = time.time() + 30

        def client() -> None:
            with httpx.Client(timeout=10) as c:
                while time.time() < stop_at:
                    try:
                        r = c.post(srv.url + "/chat/completions",
                                   json={"model": "moai/default", "messages": [{"role": "user", "content": "x"}]})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        with lock:
                            acked.append(r.json()["id"])

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        while len(acked) < 150 and time.time() < stop_at:
            time.sleep(0.05)
        os.kill(srv.proc.pid, signal.SIGKILL)
        for t in threads:
            t.join()
        srv.proc.wait()
    with sqlite3.connect(srv.db) as db:
        stored = {row[0] for row in db.execute("select id from requests")}
    assert len(acked) >= 150
    assert set(acked) <= stored


def test_a_slowed_model_loses_its_share(tmp_path: Path) -> None:
    with StubServer() as a, StubServer() as b:
        srv = start_moai(two_model_config(a.url, b.url), tmp_path)
        try:
            first = [chat(srv.url)["moai"]["model"] for _ in range(6)]
            favourite = max(set(first), key=first.count)
            slowed = a if favourite == "alpha" else b
            slowed.script.delay_s = 0.4
            after = [chat(srv.url)["moai"]["model"] for _ in range(12)]
        finally:
            stop(srv.proc)
    assert first.count(favourite) >= 5
    switched = next(i for i, m in enumerate(after) if m != favourite)
    assert switched <= 3  # the slowdown is noticed within a few requests
    assert after[-6:].count(favourite) <= 1


def test_two_replicas_share_state_through_postgres(tmp_path: Path, fresh_postgres: str) -> None:
    env = {"MOAI_DATABASE_URL": fresh_postgres}
    with StubServer(Script(fail_times=10**6, fail_status=500)) as broken, StubServer() as good:
        cfg = two_model_config(broken.url, good.url, extra=", fallbacks: gate")
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        r1 = start_moai(cfg, tmp_path / "a", env=env, database_url=fresh_postgres)
        r2 = start_moai(cfg, tmp_path / "b", env=env, database_url=fresh_postgres)
        try:
            ids = [chat(r1.url)["id"] for _ in range(4)]  # alpha fails on replica 1, beta answers
            deadline = time.time() + 10
            while time.time() < deadline:  # replica 2 has served nothing: all it knows comes from the database
                seen = httpx.get(r2.base + "/moai/stats").json()["models"]
                if seen.get("beta", {}).get("calls", 0) >= 4:
                    break
                time.sleep(0.2)
            assert seen["alpha"]["error_rate"] > 0.5 and seen["beta"]["calls"] >= 4
            answer = chat(r2.url)
            assert answer["moai"]["model"] == "beta"
            assert all(t["model"] != "alpha" for t in answer["moai"]["trace"])  # skipped, not even tried
        finally:
            stop(r1.proc)
            stop(r2.proc)
    runner = CliRunner()
    r = runner.invoke(app, ["report", "--database-url", fresh_postgres])
    assert r.exit_code == 0 and "beta" in r.output
    assert len(ids) == 4
