"""Circuit breakers and health: a model failing repeatedly is skipped for the cool-down, then probed and restored;
/healthz shows every breaker, /readyz turns 503 only when no model of the default mix can be called.

The cool-down is shortened on the live statistics object (the config has no field for it yet), so these tests
serve moai's app in-process with uvicorn on loopback rather than as a subprocess.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from reliability_support import AppServer, assert_openai_error, card, chat, rows
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.server.app import create_app
from moai.telemetry.adapt import LiveStats
from moai.telemetry.store import TelemetryStore

pytestmark = pytest.mark.integration

COOLDOWN_S = 1.0


def serve(tmp: Path, scripts: dict[str, Script], mixes: str, stack: ExitStack, **cards: dict[str, object]) -> AppServer:
    """Start stubs for ``scripts`` and moai over them (cheapest model first), with a short breaker cool-down."""
    models = ""
    for i, (name, script) in enumerate(scripts.items()):
        url = stack.enter_context(StubServer(script)).url
        models += f"  {name}: {card(url, price=float(i), **cards.get(name, {}))}\n"
    config = parse_config(f"models:\n{models}mixes:\n{mixes}")
    app = create_app(config, TelemetryStore(f"sqlite:///{tmp / 'moai.db'}"))
    app.state.mixture.stats.cooldown_s = COOLDOWN_S
    return stack.enter_context(AppServer(app))


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def attempts(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    trace = r.json()["moai"]["trace"][0]
    return [a["model"] for a in trace.get("attempts", [{"model": trace["model"]}])]


def health(server: AppServer) -> dict[str, object]:
    r = httpx.get(server.base + "/healthz", timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and isinstance(body["version"], str)
    return body


def test_failing_model_is_skipped_for_the_cooldown_then_probed_and_restored(tmp_path: Path, stack: ExitStack) -> None:
    flaky, backup = Script(reply="primary is back", fail_times=3), Script(reply="from backup")
    mixes = "  default: {models: [flaky, backup], fallbacks: gate, weights: {quality: 0, cost: 1}}\n"
    server = serve(tmp_path, {"flaky": flaky, "backup": backup}, mixes, stack)
    assert health(server)["breakers"] == {"flaky": "closed", "backup": "closed"}

    for _ in range(3):  # three failures in a row open the circuit
        assert attempts(chat(server.url)) == ["flaky", "backup"]
    body = health(server)
    assert body["breakers"] == {"flaky": "open", "backup": "closed"} and body["open_circuits"] == ["flaky"]
    ready = httpx.get(server.base + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["usable"] == ["backup"]

    # during the cool-down the open model is not called at all
    for _ in range(3):
        assert attempts(chat(server.url)) == ["backup"]
    assert flaky.calls == 3

    time.sleep(COOLDOWN_S + 0.2)
    r = chat(server.url)  # the probe: the model has recovered, so it answers and the circuit closes
    assert attempts(r) == ["flaky"] and r.json()["choices"][0]["message"]["content"] == "primary is back"
    assert health(server)["breakers"] == {"flaky": "closed", "backup": "closed"}
    assert attempts(chat(server.url)) == ["flaky"] and flaky.calls == 5


def test_failed_probe_reopens_the_circuit(tmp_path: Path, stack: ExitStack) -> None:
    flaky, backup = Script(fail_times=10**6), Script(reply="from backup")
    mixes = "  default: {models: [flaky, backup], fallbacks: gate, weights: {quality: 0, cost: 1}}\n"
    server = serve(tmp_path, {"flaky": flaky, "backup": backup}, mixes, stack)
    for _ in range(3):
        chat(server.url)
    time.sleep(COOLDOWN_S + 0.2)
    assert attempts(chat(server.url)) == ["flaky", "backup"]  # one probe, which fails
    assert health(server)["breakers"]["flaky"] == "open"
    assert attempts(chat(server.url)) == ["backup"] and flaky.calls == 4


def test_readyz_is_503_while_every_model_of_the_default_mix_is_open(tmp_path: Path, stack: ExitStack) -> None:
    a, b = Script(fail_times=10**6, fail_status=503), Script(fail_times=10**6, fail_status=500)
    mixes = "  default: {models: [a, b], fallbacks: gate, weights: {quality: 0, cost: 1}}\n"
    server = serve(tmp_path, {"a": a, "b": b}, mixes, stack)
    assert httpx.get(server.base + "/readyz", timeout=10).status_code == 200
    for _ in range(3):
        assert_openai_error(chat(server.url), 502)
    r = httpx.get(server.base + "/readyz", timeout=10)
    err = assert_openai_error(r, 503)
    assert err["code"] == "no_model_available" and "a" in err["message"] and "b" in err["message"]
    assert r.json()["open_circuits"] == ["a", "b"]
    assert health(server)["open_circuits"] == ["a", "b"]
    time.sleep(COOLDOWN_S + 0.2)  # cool-down over: a probe may go through, so the server is ready again
    assert httpx.get(server.base + "/readyz", timeout=10).status_code == 200


def test_all_circuits_open_still_tries_every_model_in_order(tmp_path: Path, stack: ExitStack) -> None:
    """An open circuit steers traffic away; when every model is open the request still gets a chance."""
    a, b = Script(fail_times=10**6), Script(fail_times=3, reply="b recovered")
    mixes = "  default: {models: [a, b], fallbacks: gate, weights: {quality: 0, cost: 1}}\n"
    server = serve(tmp_path, {"a": a, "b": b}, mixes, stack)
    for _ in range(3):
        chat(server.url)
    assert health(server)["open_circuits"] == ["a", "b"]
    r = chat(server.url)
    assert attempts(r) == ["a", "b"] and r.json()["choices"][0]["message"]["content"] == "b recovered"


def test_breaker_is_not_stuck_half_open_when_the_probe_is_never_sent(tmp_path: Path, stack: ExitStack) -> None:
    flaky, backup = Script(reply="primary is back", fail_times=3), Script(reply="from backup")
    mixes = ("  default: {models: [flaky, backup], fallbacks: gate, weights: {quality: 0, cost: 1}}\n"
             "  small_first: {models: [flaky, backup], fallbacks: gate, weights: {quality: 1}}\n")
    server = serve(tmp_path, {"flaky": flaky, "backup": backup}, mixes, stack,
                   flaky={"params_b": 70}, backup={"params_b": 0.1})
    for _ in range(3):
        chat(server.url)
    time.sleep(COOLDOWN_S + 0.2)
    # backup ranks first here and answers; flaky is only a fallback that is never called
    assert attempts(chat(server.url, "moai/small_first")) == ["backup"]
    time.sleep(COOLDOWN_S + 0.2)
    assert attempts(chat(server.url)) == ["flaky"]  # the model recovered long ago: it should be probed


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_requests_every_model_refuses_open_no_circuit(tmp_path: Path, stack: ExitStack, stream: bool) -> None:
    """A 400 is the request's fault: answered as such, stored with that status, and held against no model."""
    a, b = Script(fail_times=10**6, fail_status=400), Script(fail_times=10**6, fail_status=400)
    mixes = "  default: {models: [a, b], fallbacks: gate, weights: {quality: 0, cost: 1}}\n"
    server = serve(tmp_path, {"a": a, "b": b}, mixes, stack)
    for _ in range(4):
        r = chat(server.url, stream=stream)
        assert assert_openai_error(r, 400)["code"] == "unsupported_request"
        request_id = r.headers["x-moai-request-id"]
        assert rows(tmp_path / "moai.db", "select http_status from requests where id=?", request_id) == [(400,)]
        assert rows(tmp_path / "moai.db", "select model, status from calls where request_id=?", request_id) == [
            ("a", "refused"), ("b", "refused")]
    assert a.calls == b.calls == 4  # every request still reached both: no circuit steered it away
    assert health(server)["open_circuits"] == []
    assert httpx.get(server.base + "/readyz", timeout=10).status_code == 200
    resumed = LiveStats()  # a restart reads the database back
    resumed.refresh(TelemetryStore(f"sqlite:///{tmp_path / 'moai.db'}"))
    assert {m: (s["error_rate"], s["open"]) for m, s in resumed.snapshot().items()} == {"a": (0, 0), "b": (0, 0)}
