"""Prometheus feedback counters when a request is rated again: the database and routing keep the latest rating only,
and the exported counters let the standing scores be read exactly (counters never go down: what a new rating
replaced is counted apart)."""

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
from moai.telemetry.store import RequestRecord, TelemetryStore

USER = [{"role": "user", "content": "hi"}]


def totals(text: str) -> dict[str, float]:
    """family name → its ``_total`` sample for model m."""
    return {f.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == f.name + "_total" and s.labels.get("model") == "m"}


def standing(seen: dict[str, float]) -> tuple[float, float]:
    """(rated requests, sum of their standing scores), as a dashboard computes them from the counters."""
    return (seen["moai_feedback"],
            seen["moai_feedback_score"] - seen.get("moai_feedback_replaced_score", 0.0))


def test_a_replaced_rating_leaves_its_score_out_of_the_standing_sum() -> None:
    metrics = Metrics()
    metrics.observe_feedback("m", 1.0)  # first rating: a thumbs-up
    metrics.observe_feedback("m", -1.0, replaced=1.0)  # the client changes its mind: thumbs-down
    metrics.observe_feedback("m", 0.5)  # another request
    seen = totals(metrics.render().decode())
    assert standing(seen) == (2, pytest.approx(0.0 + 0.5))
    assert seen["moai_feedback_replaced"] == 1
    assert seen["moai_feedback_score"] == pytest.approx(1.0 + 0.0 + 0.5)  # a counter: it never went down


def test_the_store_says_which_score_a_rating_replaced(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
    store.write(RequestRecord(id="r1", mix="default", strategy="route", model="m", status="ok"))
    first = store.rate("r1", 8)
    assert (first.replaced, first.previous_score) == (False, None)
    again = store.rate("r1", 2)
    assert (again.replaced, again.previous_score) == (True, 8)
    assert [f.score for f in store.feedback_for("r1")] == [2]


@pytest.mark.integration
def test_feedback_over_http_exports_the_latest_rating(tmp_path: Path) -> None:
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
    assert [f.score for f in store.feedback_for(rid)] == [0.25]
    assert standing(seen) == (1, pytest.approx(0.25))  # what the database holds: one rating, its latest
    assert seen["moai_feedback_replaced"] == 2
