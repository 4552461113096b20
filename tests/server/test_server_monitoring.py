"""Monitoring through the HTTP server: feedback that the database cannot take, a database that is down, bad `moai`
options recorded as refusals, feedback tied to the key that made the request, and 429s counted apart from model
failures.

Served in-process (Starlette's TestClient) over loopback stub models, so that the database can be taken away under
a running app; one test takes a real PostgreSQL down under a real ``moai serve``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import ROOT, free_port, start_moai, stop
from sqlalchemy import create_engine
from starlette.testclient import TestClient
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.server.app import create_app
from moai.server.auth import create_key
from moai.server.openai_schema import ChatCompletionRequest
from moai.telemetry.adapt import LiveStats
from moai.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

USER = [{"role": "user", "content": "hi"}]


def config_text(*urls: str) -> str:
    """Models m0, m1, ... on the given stubs; mix default routes over m0 (and any fallbacks), rl over m0 alone."""
    models = "".join(
        f'  m{i}: {{provider: openai_compat, endpoint: "{u}", privacy: private, params_b: 8, max_retries: 0,\n'
        f"        price: {{input_per_mtok: 1, output_per_mtok: 2}}}}\n" for i, u in enumerate(urls))
    return f"""models:
{models}mixes:
  default: {{strategy: route, models: [m0]}}
  rl: {{strategy: route, models: [m0]}}
"""


@contextmanager
def serve(tmp: Path, *scripts: Script, db_url: str | None = None) -> Iterator[tuple[TestClient, TelemetryStore, Any]]:
    """The app over one stub per script, on a SQLite file (or ``db_url``); yields (client, store, stubs)."""
    with ExitStack() as stack:
        stubs = [stack.enter_context(StubServer(s)) for s in scripts]
        store = TelemetryStore(db_url or f"sqlite:///{tmp / 'moai.db'}")
        config = parse_config(config_text(*(s.url for s in stubs)))
        mixture = Mixture(config, store=store, chooser=RuleChooser())
        client = stack.enter_context(TestClient(create_app(config, store, mixture=mixture),
                                                raise_server_exceptions=False))
        yield client, store, stubs
        store.close()


def samples(client: TestClient, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    if family not in families:
        return {}
    return {tuple(sorted(s.labels.items())): s.value for s in families[family].samples
            if s.name == family + "_total"}


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def error_of(r: Any, status: int) -> dict[str, Any]:
    """OpenAI's error envelope with ``status``; the inner error object."""
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    return err


# ---------------------------------------------------------------------------------------------- NUL


def nul_feedback_is_refused(client: TestClient, request_id: str) -> None:
    err = error_of(client.post("/v1/feedback", json={"id": request_id, "score": 1, "comment": "nul\u0000here"}), 400)
    assert err["param"] == "comment" and "NUL" in err["message"]
    err = error_of(client.post("/v1/feedback", json={"id": "abc\u0000def", "score": 1}), 400)
    assert err["param"] == "id"
    assert client.post("/v1/feedback", json={"id": request_id, "score": 1, "comment": "fine"}).status_code == 200


def test_a_nul_character_in_feedback_is_a_400(tmp_path: Path) -> None:
    with serve(tmp_path, Script()) as (client, store, _):
        request_id = client.post("/v1/chat/completions", json={"model": "moai/default", "messages": USER}).json()["id"]
        nul_feedback_is_refused(client, request_id)
        assert [f.comment for f in store.feedback_for(request_id)] == ["fine"]
        with pytest.raises(ValueError, match="NUL"):
            store.add_feedback(request_id, 1, "a\x00b")


def test_a_nul_character_in_feedback_is_a_400_on_postgres(tmp_path: Path, fresh_postgres: str) -> None:
    with serve(tmp_path, Script(), db_url=fresh_postgres) as (client, _, _):
        request_id = client.post("/v1/chat/completions", json={"model": "moai/default", "messages": USER}).json()["id"]
        nul_feedback_is_refused(client, request_id)


# ---------------------------------------------------------------------------------------- database down


def break_database(store: TelemetryStore, tmp: Path) -> Any:
    """Point the store at a database that cannot be opened (as when the server goes away); returns the old engine."""
    good = store.engine
    store.engine = create_engine(f"sqlite:///{tmp / 'no-such-dir' / 'moai.db'}")
    return good


def test_a_database_that_is_down_gives_503_and_not_ready(tmp_path: Path) -> None:
    with serve(tmp_path, Script()) as (client, store, (stub,)):
        body = {"model": "moai/default", "messages": USER}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        assert client.get("/readyz").status_code == 200
        good = break_database(store, tmp_path)
        keeper = client.app.state.keeper  # type: ignore[attr-defined]
        keeper.refresh_s = keeper.grace_s = 0.0  # re-read the keys at once, and no grace on the last set read

        err = error_of(client.post("/v1/chat/completions", json=body), 503)
        assert err["code"] == "database_unavailable" and err["type"] == "server_error"
        assert "internal error" not in err["message"] and stub.script.calls == 1  # no model was called
        err = error_of(client.post("/v1/feedback", json={"id": "chatcmpl-x", "score": 1}), 503)
        assert err["code"] == "database_unavailable"
        err = error_of(client.get("/readyz"), 503)
        assert err["code"] == "database_unavailable"
        assert samples(client, "moai_requests")[(("mix", "default"), ("model", "none"), ("status", "error"))] == 1
        assert samples(client, "moai_errors")[(("kind", "database_unavailable"), ("model", "none"))] == 1
        failed = samples(client, "moai_database_errors")
        assert failed[(("operation", "keys"),)] >= 2 and failed[(("operation", "ready"),)] == 1

        store.engine = good  # the database is back
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        assert client.get("/readyz").status_code == 200


def test_while_the_database_is_down_the_last_key_set_is_used_for_a_short_while(tmp_path: Path) -> None:
    with serve(tmp_path, Script()) as (client, store, (stub,)):
        key, secret = create_key(store, "ci")
        key_id = key.id
        body = {"model": "moai/default", "messages": USER}
        auth = {"authorization": f"Bearer {secret}"}
        assert client.post("/v1/chat/completions", json=body, headers=auth).status_code == 200
        good = break_database(store, tmp_path)
        keeper = client.app.state.keeper  # type: ignore[attr-defined]
        keeper.refresh_s, keeper.grace_s = 0.0, 60.0

        # the key set read last still says who may call: no key is a 401, a known key passes the check ...
        assert error_of(client.post("/v1/chat/completions", json=body), 401)["code"] == "missing_api_key"
        r = client.post("/v1/chat/completions", json=body, headers=auth)
        # ... and its answer, already paid for, is sent: its record waits on the local spool
        assert r.status_code == 200 and stub.script.calls == 2
        spooled = r.json()["id"]
        assert list((tmp_path / "moai.db.spool").glob("spool-*.jsonl"))
        assert samples(client, "moai_database_errors")[(("operation", "record"),)] == 1
        # a secret the last set does not know may be a key created since: that cannot be told now
        unknown = {"authorization": "Bearer moai-sk-nope"}
        assert error_of(client.post("/v1/chat/completions", json=body, headers=unknown), 503)["code"] == \
            "database_unavailable"

        keeper.grace_s = 0.0  # past the grace: nobody gets in, and no model is called
        r = client.post("/v1/chat/completions", json=body, headers=auth)
        assert error_of(r, 503)["code"] == "database_unavailable" and stub.script.calls == 2

        store.engine = good  # the database is back: the spooled request is written to it, with its call and key
        writer = client.app.state.mixture.writer  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while writer.replayed < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rows(tmp_path / "moai.db", "SELECT status, api_key FROM requests WHERE id = ?", spooled) == \
            [("ok", key_id)]
        assert rows(tmp_path / "moai.db", "SELECT count(*) FROM calls WHERE request_id = ?", spooled) == [(1,)]
        assert not list((tmp_path / "moai.db.spool").glob("*.jsonl"))


def postgres(command: str, data: str, port: int | None = None) -> str:
    script = ROOT / "scripts" / "postgres.sh"
    args = ["bash", str(script), command, data] + ([str(port)] if port else [])
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def test_postgres_stopped_under_a_running_server(tmp_path: Path) -> None:
    """PostgreSQL stopped under a running ``moai serve``, then started again."""
    data, port = tempfile.mkdtemp(prefix="moai-pg-down-"), free_port()
    url = postgres("start", data, port).splitlines()[-1]
    try:
        with StubServer() as stub:
            srv = start_moai(config_text(stub.url), tmp_path, database_url=url)
            try:
                body = {"model": "moai/default", "messages": USER}
                first = httpx.post(srv.url + "/chat/completions", json=body, timeout=30)
                assert first.status_code == 200
                postgres("stop", data)
                # within the key set's grace: answered, its record spooled on local disk
                r = httpx.post(srv.url + "/chat/completions", json=body, timeout=30)
                assert r.status_code == 200, r.text
                spooled = r.json()["id"]
                r = httpx.post(srv.base + "/v1/feedback", json={"id": first.json()["id"], "score": 1}, timeout=30)
                assert error_of(r, 503)["code"] == "database_unavailable"
                assert error_of(httpx.get(srv.base + "/readyz", timeout=30), 503)["code"] == "database_unavailable"
                assert "moai_database_errors_total{" in httpx.get(srv.base + "/metrics").text

                postgres("start", data, port)
                assert httpx.get(srv.base + "/readyz", timeout=30).status_code == 200
                assert httpx.post(srv.url + "/chat/completions", json=body, timeout=30).status_code == 200
                # the spooled request reached PostgreSQL: it can be rated
                for _ in range(100):
                    r = httpx.post(srv.base + "/v1/feedback", json={"id": spooled, "score": 1}, timeout=30)
                    if r.status_code != 404:
                        break
                    time.sleep(0.1)
                assert r.status_code == 200, r.text
            finally:
                stop(srv.proc)
    finally:
        postgres("stop", data)
        subprocess.run(["rm", "-rf", data], check=False)


def test_a_session_the_database_cannot_look_up_is_answered_as_a_new_one(tmp_path: Path) -> None:
    with serve(tmp_path, Script()) as (client, store, (stub,)):
        assert client.post("/v1/chat/completions", json={"model": "moai/default", "messages": USER}).status_code == 200
        break_database(store, tmp_path)
        keeper = client.app.state.keeper  # type: ignore[attr-defined]
        keeper.refresh_s, keeper.grace_s = 0.0, 60.0  # the key set read last is used meanwhile
        for kw in ({"json": {"model": "moai/default", "messages": USER, "user": "alice"}},
                   {"json": {"model": "moai/default", "messages": USER}, "headers": {"x-moai-session": "bob"}}):
            r = client.post("/v1/chat/completions", **kw)
            assert r.status_code == 200, r.text
        assert stub.script.calls == 3 and list((tmp_path / "moai.db.spool").glob("spool-*.jsonl"))
        failed = samples(client, "moai_database_errors")
        assert failed[(("operation", "session"),)] == 2 and failed[(("operation", "record"),)] == 2


def test_a_session_lookup_that_hangs_neither_freezes_the_server_nor_the_request(tmp_path: Path) -> None:
    with serve(tmp_path, Script()) as (client, store, (stub,)):
        mixture = client.app.state.mixture  # type: ignore[attr-defined]
        mixture.session_lookup_timeout_s = 0.5
        gate = threading.Event()
        real = store.session_model

        def hangs(*args: Any) -> str | None:  # as on a paused database server
            gate.wait(10)
            return real(*args)

        store.session_model = hangs  # type: ignore[method-assign]
        body = {"model": "moai/default", "messages": USER, "user": "carol"}
        try:
            with ThreadPoolExecutor(1) as pool:
                started = time.monotonic()
                pending = pool.submit(client.post, "/v1/chat/completions", json=body)
                time.sleep(0.1)
                assert client.get("/healthz").status_code == 200
                assert time.monotonic() - started < 0.4  # the event loop was free meanwhile
                assert pending.result(5).status_code == 200
                assert time.monotonic() - started < 3
            started = time.monotonic()  # while that lookup has not returned, the database is not asked again
            assert client.post("/v1/chat/completions", json=body | {"user": "dave"}).status_code == 200
            assert time.monotonic() - started < 0.4 and stub.script.calls == 2
            assert samples(client, "moai_database_errors")[(("operation", "session"),)] == 2
        finally:
            gate.set()


def test_a_sqlite_database_whose_folder_is_removed_is_not_ready_and_records_are_spooled(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    with serve(folder, Script()) as (client, store, (stub,)):
        body = {"model": "moai/default", "messages": USER}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        assert client.get("/readyz").status_code == 200
        shutil.rmtree(folder)
        for stream in (False, True):
            assert client.post("/v1/chat/completions", json=body | {"stream": stream}).status_code == 200
        assert error_of(client.get("/readyz"), 503)["code"] == "database_unavailable"
        assert len((folder / "moai.db.spool" / f"spool-{os.getpid()}.jsonl").read_text().splitlines()) == 2
        assert samples(client, "moai_database_errors")[(("operation", "record"),)] == 2


# ---------------------------------------------------------------------------------- bad `moai` options


@pytest.mark.parametrize(("moai", "param"), [
    ({"privacy": "weird"}, "moai.privacy"),
    ({"models": "x"}, "moai.models"),
    ({"bogus_option": 1}, "moai.bogus_option"),
    ({"weights": {"cost": -1}}, "moai.weights.cost"),
    ("str", "moai"),
    ({"weights": {"cost": "1"}}, "moai.weights.cost"),
    ({"weights": {"quality": True}}, "moai.weights.quality"),
    ({"max_cost_usd": "0.5"}, "moai.max_cost_usd"),
    ({"cache": 0}, "moai.cache"),
    ({"cache": "no"}, "moai.cache"),
], ids=["privacy", "models", "unknown", "negative-weight", "not-an-object", "weight-string", "weight-bool",
        "cost-string", "cache-int", "cache-string"])
def test_a_bad_moai_option_is_refused_recorded_and_counted(tmp_path: Path, moai: Any, param: str) -> None:
    with serve(tmp_path, Script()) as (client, _, (stub,)):
        r = client.post("/v1/chat/completions", json={"model": "moai/default", "messages": USER, "moai": moai})
        assert error_of(r, 400)["param"] == param
        request_id = r.headers["x-moai-request-id"]
        assert r.headers["x-moai-mix"] == "default"
        requests = samples(client, "moai_requests")
        errors = samples(client, "moai_errors")
        # the rest of the body must be valid too, and the model known, for there to be a mix to file it under
        assert client.post("/v1/chat/completions", json={"model": "moai/default", "moai": moai}).status_code == 400
        assert client.post("/v1/chat/completions",
                           json={"model": "nope", "messages": USER, "moai": moai}).status_code == 400
    assert rows(tmp_path / "moai.db", "select id, mix, status, http_status from requests") == [
        (request_id, "default", "refused", 400)]
    assert requests == {(("mix", "default"), ("model", "none"), ("status", "refused")): 1}
    assert errors == {(("kind", "invalid_request"), ("model", "none")): 1}
    assert stub.script.calls == 0


# ------------------------------------------------------------------------------ feedback and its caller


def two_keys(store: TelemetryStore) -> list[tuple[Any, dict[str, str]]]:
    """Keys a and b: (record, authorization header) each."""
    return [(key, {"authorization": f"Bearer {secret}"}) for key, secret in map(create_key, (store, store), "ab")]


def test_a_key_rates_only_its_own_requests_and_a_new_rating_replaces_the_old(tmp_path: Path) -> None:
    with serve(tmp_path, Script()) as (client, store, _):
        (_, as_a), (_, as_b) = two_keys(store)
        body = {"model": "moai/default", "messages": USER}
        mine = client.post("/v1/chat/completions", json=body, headers=as_a).json()["id"]

        err = error_of(client.post("/v1/feedback", json={"id": mine, "score": -1}, headers=as_b), 404)
        assert err["code"] == "unknown_id"
        assert error_of(client.post("/v1/feedback", json={"id": mine, "score": -1}), 401)["code"] == "missing_api_key"
        for score in (-1, 1, 0.5):
            assert client.post("/v1/feedback", json={"id": mine, "score": score}, headers=as_a).status_code == 200
        assert [(f.score, f.comment) for f in store.feedback_for(mine)] == [(0.5, None)]


def test_a_keys_feedback_moves_routing_for_that_key_only(tmp_path: Path) -> None:
    """One tenant's thumbs-down must not steer another tenant's traffic."""
    with serve(tmp_path, Script()) as (client, store, _):
        (key_a, as_a), (key_b, as_b) = two_keys(store)
        body = {"model": "moai/default", "messages": USER}
        for _ in range(5):
            rid = client.post("/v1/chat/completions", json=body, headers=as_a).json()["id"]
            assert client.post("/v1/feedback", json={"id": rid, "score": -1}, headers=as_a).status_code == 200

        def delta(headers: dict[str, str]) -> float:
            return client.get("/moai/stats", headers=headers).json()["models"]["m0"]["quality_delta"]

        assert delta(as_a) < 0 and delta(as_b) == 0.0
        mixture = client.app.state.mixture  # what the gate reads for each key's requests
        request = ChatCompletionRequest(**body)
        assert mixture.prepare(request, api_key=key_a.id).ctx.live["m0"]["quality_delta"] == delta(as_a)
        assert mixture.prepare(request, api_key=key_b.id).ctx.live["m0"]["quality_delta"] == 0.0
        # the database holds the same split: a replica reading it afresh sees it too
        fresh = LiveStats()
        fresh.refresh(store)
        assert fresh.snapshot(api_key=key_a.id)["m0"]["quality_delta"] == pytest.approx(delta(as_a))
        assert fresh.snapshot(api_key=key_b.id)["m0"]["quality_delta"] == 0.0
        assert fresh.snapshot()["m0"]["quality_delta"] == 0.0
        pooled = LiveStats(feedback_per_key=False)  # settings.feedback_per_key: false
        pooled.refresh(store)
        assert pooled.snapshot(api_key=key_b.id)["m0"]["quality_delta"] == pytest.approx(delta(as_a))


def test_without_keys_a_request_keeps_its_latest_rating(tmp_path: Path) -> None:
    with serve(tmp_path, Script()) as (client, store, _):
        request_id = client.post("/v1/chat/completions", json={"model": "moai/default", "messages": USER}).json()["id"]
        for score, comment in ((1, "good"), (1, "good"), (-1, "wrong after all")):
            r = client.post("/v1/feedback", json={"id": request_id, "score": score, "comment": comment})
            assert r.status_code == 200
        assert [(f.score, f.comment) for f in store.feedback_for(request_id)] == [(-1, "wrong after all")]
        # the database keeps one rating, however often replaced; the metrics count every rating received
        assert samples(client, "moai_feedback") == {(("model", "m0"),): 3}
        assert samples(client, "moai_feedback_replaced") == {(("model", "m0"),): 2}
        store.add_feedback(request_id, 8)  # `moai feedback` writes through the same path
        assert [f.score for f in store.feedback_for(request_id)] == [8]


# --------------------------------------------------------------------------------------------- 429s


def test_a_429_is_counted_apart_from_failed_calls(tmp_path: Path) -> None:
    limited = Script(fail_times=10**6, fail_status=429, retry_after="30")
    with serve(tmp_path, limited, Script(fail_times=10**6, fail_status=500)) as (client, _, _):
        r = client.post("/v1/chat/completions", json={"model": "moai/rl", "messages": USER})
        assert error_of(r, 429)["code"] == "rate_limit_exceeded"
        errors = samples(client, "moai_errors")
        assert errors == {(("kind", "rate_limited"), ("model", "m0")): 1}
        r = client.post("/v1/chat/completions", json={"model": "m1", "messages": USER})  # a 500: a failed call
        assert r.status_code == 502
        errors = samples(client, "moai_errors")
    assert errors == {(("kind", "rate_limited"), ("model", "m0")): 1, (("kind", "call"), ("model", "m1")): 1,
                      (("kind", "attempt"), ("model", "m1")): 1}


def test_a_streams_model_header_names_the_model_that_answers(tmp_path: Path) -> None:
    """A MoA stream is written by its aggregator: the header says so (it named the gate's first pick)."""
    with ExitStack() as stack:
        stubs = [stack.enter_context(StubServer(Script(reply=f"from m{i}"))) for i in range(3)]
        text = config_text(*(s.url for s in stubs)) + "  team: {strategy: moa, proposers: [m0, m1], aggregator: m2}\n"
        config = parse_config(text)
        mixture = Mixture(config, store=TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}"), chooser=RuleChooser())
        client = stack.enter_context(TestClient(create_app(config, mixture.store, mixture=mixture)))
        body = {"model": "moai/team", "messages": USER, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.headers["x-moai-model"] == "m2"
            assert "[DONE]" in "".join(r.iter_text())


def test_a_rescued_streams_model_header_names_the_proposer_whose_answer_streams(tmp_path: Path) -> None:
    """The aggregator and its fallback fail before their first token: the best proposer's answer is streamed, and
    the header names that proposer, not the last aggregator tried."""
    with ExitStack() as stack:
        scripts = [Script(reply="from m0"), Script(reply="from m1"), Script(fail_times=99, fail_status=500),
                   Script(fail_times=99, fail_status=500)]
        stubs = [stack.enter_context(StubServer(s)) for s in scripts]
        text = config_text(*(s.url for s in stubs)) + \
            "  team: {strategy: moa, proposers: [m0, m1], aggregator: m2, fallbacks: [m3]}\n"
        config = parse_config(text)
        mixture = Mixture(config, store=TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}"), chooser=RuleChooser())
        client = stack.enter_context(TestClient(create_app(config, mixture.store, mixture=mixture)))
        body = {"model": "moai/team", "messages": USER, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            streamed = "".join(r.iter_text())
            assert scripts[2].calls >= 1 and scripts[3].calls >= 1 and "[DONE]" in streamed
            text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                           for line in streamed.splitlines()
                           if line.startswith("data: {") and json.loads(line[6:])["choices"])
            model = r.headers["x-moai-model"]
            assert model in {"m0", "m1"} and text == f"from {model}"


def test_a_model_that_failed_before_another_answered_is_a_failed_call(tmp_path: Path) -> None:
    """m0 fails (500) and m1 answers the step: m0's call is a failed call in /metrics, as in the database (only a
    step that failed outright was counted)."""
    with ExitStack() as stack:
        down, up = (stack.enter_context(StubServer(s)) for s in (Script(fail_times=10**6), Script()))
        config = parse_config(f"""models:
  m0: {{provider: openai_compat, endpoint: "{down.url}", privacy: private, max_retries: 0,
        price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
  m1: {{provider: openai_compat, endpoint: "{up.url}", privacy: private, max_retries: 0,
        price: {{input_per_mtok: 9, output_per_mtok: 9}}}}
mixes:
  fb: {{strategy: route, models: [m0, m1], fallbacks: [m0, m1], weights: {{quality: 0, cost: 1}}}}
""")
        store = TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}")
        mixture = Mixture(config, store=store, chooser=RuleChooser())
        client = stack.enter_context(TestClient(create_app(config, store, mixture=mixture)))
        assert client.post("/v1/chat/completions", json={"model": "moai/fb", "messages": USER}).status_code == 200
        errors = samples(client, "moai_errors")
    rows = [(c.model, c.status) for r in store.requests() for c in r.calls]  # the app's shutdown wrote them
    store.close()
    assert errors == {(("kind", "call"), ("model", "m0")): 1, (("kind", "attempt"), ("model", "m0")): 1}
    assert sorted(rows) == [("m0", "failed"), ("m1", "ok")]


def test_a_rating_of_a_request_no_model_answered_is_counted(tmp_path: Path) -> None:
    """A rating of a refused request is stored: /metrics counts it too, under model "none"."""
    with serve(tmp_path, Script()) as (client, store, _):
        r = client.post("/v1/chat/completions", json={"model": "moai/default", "messages": USER,
                                                      "moai": {"models": ["nope"]}})
        assert r.status_code in (400, 422), r.text
        request_id = r.headers["x-request-id"]
        rated = client.post("/v1/feedback", json={"id": request_id, "score": -1})
        assert rated.status_code == 200 and rated.json()["model"] is None
        assert len(store.feedback_for(request_id)) == 1
        assert samples(client, "moai_feedback") == {(("model", "none"),): 1}
