"""Requests refused before any model runs (privacy, no eligible model, a bad option, a fault of moai's own) are
counted in /metrics, stored with the status answered and shown among the mix's errors in the report; requests
that name no mix (invalid body, unknown model) are not."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from moai.api import shutdown
from moai.config import parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.server.app import create_app
from moai.server.openai_schema import ChatCompletionRequest
from moai.telemetry.report import build_report
from moai.telemetry.store import TelemetryStore

CARD = "Please check my card 4539 1488 0343 6467 and email me at jane.roe@fastmail.com"
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
CONFIG = """\
models:
  cloud: {provider: openai_compat, endpoint: "http://127.0.0.1:9/v1", privacy: cloud, params_b: 8}
mixes:
  default: {strategy: route}
  strict: {strategy: route, constraints: {sensitive_data: local_only}}
  onprem: {strategy: route, constraints: {max_privacy: private}}
  team: {strategy: moa, proposers: [cloud, cloud], aggregator: cloud}
"""


class Crashes(RuleChooser):
    """The rule chooser with a bug on one prompt: stands in for any fault of moai's own while planning."""

    def decide(self, messages, cards, weights, live=None):  # type: ignore[no-untyped-def]
        if messages[-1]["content"] == "crash":
            raise RuntimeError("chooser bug")
        return super().decide(messages, cards, weights, live)


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def metric(client: TestClient, family: str, sample: str) -> dict[tuple[tuple[str, str], ...], float]:
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    return {tuple(sorted(s.labels.items())): s.value for s in families[family].samples if s.name == sample}


def test_refused_requests_are_counted_stored_and_reported(tmp_path: Path) -> None:
    db = tmp_path / "moai.db"
    store = TelemetryStore(f"sqlite:///{db}")
    config = parse_config(CONFIG, "mix.yaml")
    mixture = Mixture(config, store=store, chooser=Crashes())
    cases = [  # (body, status answered, code, stored status)
        ({"model": "moai/strict", "messages": [{"role": "user", "content": CARD}]}, 422, "no_trusted_model",
         "refused"),
        ({"model": "moai/strict", "stream": True, "messages": [{"role": "user", "content": CARD}]}, 422,
         "no_trusted_model", "refused"),
        ({"model": "moai/onprem", "messages": [{"role": "user", "content": "hi"}]}, 422, "no_eligible_model",
         "refused"),
        ({"model": "moai/team", "tools": TOOLS, "messages": [{"role": "user", "content": "hi"}]}, 400,
         "tools_not_supported", "refused"),
        ({"model": "moai/default", "messages": [{"role": "user", "content": "crash"}]}, 500, None, "error"),
    ]
    with TestClient(create_app(config, store, mixture=mixture), raise_server_exceptions=False) as client:
        ids = []
        for body, status, code, stored in cases:
            r = client.post("/v1/chat/completions", json=body)
            assert r.status_code == status, r.text
            if code:
                assert r.json()["error"]["code"] == code
            request_id = r.headers["x-moai-request-id"]
            assert r.headers["x-moai-mix"] == body["model"].removeprefix("moai/")
            assert rows(db, "select mix, model, status, http_status, stream, prompt_tokens from requests where id=?",
                        request_id) == [(r.headers["x-moai-mix"], None, stored, status, int(bool(body.get("stream"))),
                                         0)]
            ids.append(request_id)
        # no mix to file these under: a body that fails validation, an unknown model
        assert client.post("/v1/chat/completions", json={"model": "moai/strict"}).status_code == 400
        assert client.post("/v1/chat/completions",
                           json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]}).status_code == 404
        requests = metric(client, "moai_requests", "moai_requests_total")
        errors = metric(client, "moai_errors", "moai_errors_total")
    assert requests == {
        (("mix", "strict"), ("model", "none"), ("status", "refused")): 2.0,
        (("mix", "onprem"), ("model", "none"), ("status", "refused")): 1.0,
        (("mix", "team"), ("model", "none"), ("status", "refused")): 1.0,
        (("mix", "default"), ("model", "none"), ("status", "error")): 1.0,
    }
    assert errors == {(("kind", "no_trusted_model"), ("model", "none")): 2.0,
                      (("kind", "no_eligible_model"), ("model", "none")): 1.0,
                      (("kind", "tools_not_supported"), ("model", "none")): 1.0,
                      (("kind", "internal_error"), ("model", "none")): 1.0}
    assert len(rows(db, "select id from requests")) == len(ids)
    (error,) = rows(db, "select error from requests where mix='default'")[0]
    assert "RuntimeError" in error and "chooser bug" in error
    mixes = {row["mix"]: row for row in build_report(store, None).mix_rows()}
    assert mixes["strict"]["requests"] == mixes["strict"]["errors"] == 2
    assert mixes["strict"]["routes"] == {"(refused)": 2} and mixes["default"]["routes"] == {"(failed)": 1}
    store.close()


def test_the_python_api_records_a_refusal_too(tmp_path: Path) -> None:
    db = tmp_path / "moai.db"
    (tmp_path / "mix.yaml").write_text(CONFIG)
    m = Mixture.from_config(str(tmp_path / "mix.yaml"), store=TelemetryStore(f"sqlite:///{db}"), chooser=Crashes())
    try:
        with pytest.raises(openai.UnprocessableEntityError):
            m.chat.completions.create(model="moai/strict", messages=[{"role": "user", "content": CARD}])
        with pytest.raises(openai.BadRequestError):
            m.chat.completions.create(model="moai/team", messages=[{"role": "user", "content": "hi"}], tools=TOOLS)
        with pytest.raises(openai.NotFoundError):  # names no mix: nothing to file it under
            m.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    finally:
        shutdown(m)
    assert sorted(rows(db, "select mix, status, http_status from requests")) == [("strict", "refused", 422),
                                                                                 ("team", "refused", 400)]


async def test_a_fault_while_running_a_plan_is_recorded_as_a_500(tmp_path: Path) -> None:
    db = tmp_path / "moai.db"
    m = Mixture(parse_config(CONFIG), store=TelemetryStore(f"sqlite:///{db}"), chooser=RuleChooser())

    async def bug(*_args: Any) -> None:
        raise RuntimeError("executor bug")

    m.executor._run_steps = bug  # type: ignore[method-assign]
    prep = m.prepare(ChatCompletionRequest.model_validate({"model": "moai/default",
                                                           "messages": [{"role": "user", "content": "hi"}]}))
    with pytest.raises(RuntimeError, match="executor bug"):
        await m.run(prep)
    await m.aclose()
    (row,) = rows(db, "select status, http_status, error from requests where id=?", prep.id)
    assert row[:2] == ("error", 500) and "executor bug" in row[2]
    families = {f.name: f for f in text_string_to_metric_families(m.metrics.render().decode())}
    assert [(s.labels, s.value) for s in families["moai_requests"].samples if s.name == "moai_requests_total"] == [
        ({"mix": "default", "model": "none", "status": "error"}, 1.0)]
