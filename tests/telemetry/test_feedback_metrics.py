"""Prometheus feedback counters are plain event counters: every rating received (first ones and replacements) is
counted with its score, so that increase(score) / increase(feedback) is the mean rating given over any window,
across restarts too. The mean of the ratings standing (a request keeps its latest) is the database's."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.server.app import create_app
from moai.telemetry.metrics import Metrics
from moai.telemetry.records import RequestRecord
from moai.telemetry.store import TelemetryStore

USER = [{"role": "user", "content": "hi"}]


def totals(text: str) -> dict[str, float]:
    """family name → its ``_total`` sample for model m."""
    return {f.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == f.name + "_total" and s.labels.get("model") == "m"}


def test_every_rating_received_is_counted_with_its_score() -> None:
    metrics = Metrics()
    metrics.observe_feedback("m", 1.0)  # first rating: a thumbs-up
    metrics.observe_feedback("m", -1.0, replaced=True)  # the client changes its mind: thumbs-down
    metrics.observe_feedback("m", 0.5)  # another request
    seen = totals(metrics.render().decode())
    assert seen["moai_feedback"] == 3
    assert seen["moai_feedback_score"] == pytest.approx(1.0 + 0.0 + 0.5)
    assert seen["moai_feedback_replaced"] == 1
    assert "moai_feedback_replaced_score" not in seen  # no counter invites a standing mean it cannot give


def test_the_mean_rating_of_a_window_stays_in_range_after_a_restart() -> None:
    """A replacement after a restart (its first rating counted by the process before) is one more rating given:
    the window's increase of the counters gives a mean in 0..1, never a negative or undefined one."""
    before = Metrics()
    for score in (1.0, 1.0):
        before.observe_feedback("m", score)
    after = Metrics()  # restarted: the counters start from zero
    after.observe_feedback("m", -1.0, replaced=True)
    after.observe_feedback("m", 1.0, replaced=True)
    seen = totals(after.render().decode())
    assert seen["moai_feedback"] == 2 and seen["moai_feedback_replaced"] == 2
    assert seen["moai_feedback_score"] / seen["moai_feedback"] == pytest.approx(0.5)  # (0 + 1) / 2


def _replaced(store: TelemetryStore) -> None:
    store.write(RequestRecord(id="r1", mix="default", strategy="route", model="m", status="ok"))
    assert not store.rate("r1", 8).replaced
    assert store.rate("r1", 2).replaced
    assert [f.score for f in store.feedback_for("r1")] == [2]


def test_the_store_says_whether_a_rating_replaced_one(tmp_path: Path) -> None:
    _replaced(TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}"))


@pytest.mark.integration
def test_the_store_says_whether_a_rating_replaced_one_on_postgresql(fresh_postgres: str) -> None:
    store = TelemetryStore(fresh_postgres)
    try:
        _replaced(store)
    finally:
        store.close()


@pytest.mark.integration
def test_feedback_over_http_counts_every_rating_and_the_database_keeps_the_latest(tmp_path: Path) -> None:
    with StubServer(Script()) as stub:
        config = parse_config(f"""
models:
  m: {{provider: openai_compat, endpoint: "{stub.url}", privacy: private, max_retries: 0}}
mixes:
  default: {{strategy: route, models: [m]}}
""")
        store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
        mixture = Mixture(config, store=store, chooser=RuleChooser())
        with TestClient(create_app(config, store, mixture=mixture)) as client:
            rid = client.post("/v1/chat/completions", json={"model": "moai/default", "messages": USER}).json()["id"]
            for score in (10, 1, 0.25):  # 1.0, then 1.0 (a thumbs-up), then 0.25 on 0..1
                assert client.post("/v1/feedback", json={"id": rid, "score": score}).status_code == 200
            seen = totals(client.get("/metrics").text)
        store.close()
    assert [f.score for f in store.feedback_for(rid)] == [0.25]  # the standing rating: the database's
    assert seen["moai_feedback"] == 3
    assert seen["moai_feedback_score"] == pytest.approx(1.0 + 1.0 + 0.25)
    assert seen["moai_feedback_replaced"] == 2
