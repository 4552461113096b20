"""Fallbacks through the real server: timeouts, refused connections, 429 and 5xx move the request to the next
model that satisfies the same constraints, streamed and not; every attempt is in the trace and the database.

A 429's attempt is stored as ``rate_limited`` rather than ``failed``: a busy model is not a broken one, so it must
not count in the error rate or the breaker, which are rebuilt from the stored calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from reliability_support import (
    assert_openai_error,
    card,
    chat,
    chat_stream,
    rows,
    stream_summary,
    stream_text,
)
from servers import MoaiServer, start_moai, stop
from stub_openai import Script, StubServer, free_port

pytestmark = pytest.mark.integration

BACKUP = "answer from the backup"
CLOUD = "answer from the cloud"

# failing model -> (how it fails, what the attempt's error must say)
FAULTS = {
    "slow": "timed out",
    "refused": "connection failed",
    "limited": "rate limited",
    "broken": "upstream error 500",
    "unavailable": "upstream error 503",
}


def stored_calls(fault: str) -> list[tuple[str, str]]:
    """The calls stored for a request that fell back from ``fault`` to the backup, ordered by status."""
    return sorted([(fault, "rate_limited" if fault == "limited" else "failed"), ("backup", "ok")],
                  key=lambda c: c[1])


@dataclass
class Rig:
    server: MoaiServer
    scripts: dict[str, Script]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One moai server over stub endpoints: a faulty model per fault kind, a private backup and a cloud model."""
    scripts = {
        "slow": Script(reply="too late", delay_s=3.0),
        "limited": Script(fail_times=10**6, fail_status=429),
        "broken": Script(fail_times=10**6, fail_status=500),
        "unavailable": Script(fail_times=10**6, fail_status=503),
        "guarded": Script(fail_times=10**6, fail_status=500),
        "guarded_stream": Script(fail_times=10**6, fail_status=500),
        "dying": Script(reply="one two three four five", die_after_words=2),
        "backup": Script(reply=BACKUP),
        "cloudy": Script(reply=CLOUD),
        "picky": Script(fail_times=10**6, fail_status=400),  # refuses every request as malformed
        "fussy": Script(fail_times=10**6, fail_status=400),
    }
    with ExitStack() as stack:
        urls = {name: stack.enter_context(StubServer(s)).url for name, s in scripts.items()}
        urls["refused"] = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
        models = {name: card(urls[name], price=0.0, timeout_s=0.5 if name == "slow" else 10.0)
                  for name in [*FAULTS, "guarded", "guarded_stream", "dying", "picky", "fussy"]}
        models["dying"] = card(urls["dying"], price=0.5)  # cheaper than the backup: the gate tries it first
        models["backup"] = card(urls["backup"], price=1.0)
        models["cloudy"] = card(urls["cloudy"], privacy="cloud", price=0.5)
        cheapest_first = "weights: {quality: 0, cost: 1}"
        mixes = {}
        for name in FAULTS:
            # explicit fallbacks for half of them, the gate's ranking for the rest
            fb = "[backup]" if name in ("slow", "limited") else "gate"
            mixes[f"via_{name}"] = f"{{models: [{name}, backup], fallbacks: {fb}, {cheapest_first}}}"
        for name in ("guarded", "guarded_stream"):
            # a cloud model is cheaper than the private backup, but the mix allows private at most
            mixes[f"private_{name}"] = (f"{{models: [{name}, cloudy, backup], fallbacks: [cloudy, backup], "
                                        f"constraints: {{max_privacy: private}}, {cheapest_first}}}")
        mixes["private_only_cloud"] = ("{models: [broken, cloudy], fallbacks: gate, "
                                       f"constraints: {{max_privacy: private}}, {cheapest_first}}}")
        mixes["dies"] = f"{{models: [dying, backup], fallbacks: gate, {cheapest_first}}}"
        mixes["default"] = f"{{models: [backup], {cheapest_first}}}"
        mixes["refusing"] = f"{{models: [picky, fussy], fallbacks: gate, {cheapest_first}}}"
        mixes["refused_then_broken"] = f"{{models: [picky, broken], fallbacks: [broken], {cheapest_first}}}"
        text = "models:\n" + "".join(f"  {k}: {v}\n" for k, v in models.items())
        text += "mixes:\n" + "".join(f"  {k}: {v}\n" for k, v in mixes.items())
        server = start_moai(text, Path(tmp_path_factory.mktemp("fallbacks")))
        try:
            yield Rig(server, scripts)
        finally:
            stop(server.proc)


def _check_attempts(attempts: list[dict[str, object]], failed: str, why: str, answered: str = "backup") -> None:
    assert [a["model"] for a in attempts] == [failed, answered], attempts
    assert why in str(attempts[0]["error"]), attempts[0]
    assert "error" not in attempts[1]
    assert all(float(str(a["latency_ms"])) >= 0 for a in attempts)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_non_streamed_request_falls_back(rig: Rig, fault: str) -> None:
    r = chat(rig.server.url, f"moai/via_{fault}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == BACKUP
    assert body["moai"]["model"] == "backup" and r.headers["x-moai-model"] == "backup"
    (step,) = body["moai"]["trace"]
    assert step["status"] == "ok" and step["model"] == "backup"
    _check_attempts(step["attempts"], fault, FAULTS[fault])
    # the failed attempt and the answer are both in the database, under the acknowledged request id
    assert rows(rig.server.db, "select status, model from requests where id=?", body["id"]) == [("ok", "backup")]
    calls = rows(rig.server.db, "select model, status from calls where request_id=? order by status", body["id"])
    assert calls == stored_calls(fault)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_stream_falls_back_before_the_first_token(rig: Rig, fault: str) -> None:
    status, events = chat_stream(rig.server.url, f"moai/via_{fault}")
    assert status == 200
    assert events[-1] == "[DONE]"
    assert not any(isinstance(e, dict) and "error" in e for e in events), events
    assert stream_text(events) == BACKUP
    summary = stream_summary(events)
    assert summary["model"] == "backup"
    _check_attempts(summary["trace"][0]["attempts"], fault, FAULTS[fault])
    calls = rows(rig.server.db, "select model, status from calls where request_id=? order by status",
                 summary["id"])
    assert calls == stored_calls(fault)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_fallback_respects_the_privacy_constraint(rig: Rig, stream: bool) -> None:
    """The cloud model is listed as the first fallback and is cheaper, but the mix allows private at most."""
    name = "guarded_stream" if stream else "guarded"
    before = rig.scripts["cloudy"].calls
    if stream:
        status, events = chat_stream(rig.server.url, f"moai/private_{name}")
        assert status == 200 and events[-1] == "[DONE]"
        text, summary = stream_text(events), stream_summary(events)
    else:
        r = chat(rig.server.url, f"moai/private_{name}")
        assert r.status_code == 200, r.text
        text, summary = r.json()["choices"][0]["message"]["content"], r.json()["moai"]
    assert text == BACKUP
    _check_attempts(summary["trace"][0]["attempts"], name, "upstream error 500")
    assert "cloudy" in summary["decision"]["excluded"]
    assert rig.scripts["cloudy"].calls == before  # never even called


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_no_private_fallback_means_an_error_not_a_cloud_call(rig: Rig, stream: bool) -> None:
    before = rig.scripts["cloudy"].calls
    # a stream that fails before its first token gets the real status, not a 200 carrying an error event
    r = chat(rig.server.url, "moai/private_only_cloud", stream=stream)
    err = assert_openai_error(r, 502)
    assert err["type"] == "server_error" and "broken" in err["message"]
    assert rig.scripts["cloudy"].calls == before
    assert rows(rig.server.db, "select status from requests where id=?", r.headers["x-moai-request-id"]) == [
        ("error",)]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_request_every_model_refuses_is_a_400(rig: Rig, stream: bool) -> None:
    """Each model answered 400 to the request itself: the client must change it, so it is not a 502."""
    before = {m: rig.scripts[m].calls for m in ("picky", "fussy")}
    r = chat(rig.server.url, "moai/refusing", stream=stream)
    err = assert_openai_error(r, 400)
    assert err["type"] == "invalid_request_error" and err["code"] == "unsupported_request"
    assert "scripted failure" in err["message"]
    assert {m: rig.scripts[m].calls - n for m, n in before.items()} == {"picky": 1, "fussy": 1}  # both tried


def test_a_refusal_and_an_outage_are_still_a_502(rig: Rig) -> None:
    """One model refused the request but another was down: a retry later may succeed."""
    err = assert_openai_error(chat(rig.server.url, "moai/refused_then_broken"), 502)
    assert err["type"] == "server_error"


def test_stream_that_dies_after_the_first_token_ends_with_an_error_event(rig: Rig) -> None:
    backup_before = rig.scripts["backup"].calls
    status, events = chat_stream(rig.server.url, "moai/dies")
    assert status == 200
    assert events[-1] == "[DONE]"
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and events[-2] is errors[0], events
    err = errors[0]["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "server_error"
    assert stream_text(events) == "one two"  # what was sent stays sent; no second answer is spliced in
    assert rig.scripts["backup"].calls == backup_before
    # the failed request is recorded, with the id the client saw
    request_id = events[0]["id"]
    assert rows(rig.server.db, "select status from requests where id=?", request_id) == [("error",)]
    # the words it sent were generated and paid for: billed on the failed call, which sums to the request
    ((p, c, cost),) = rows(rig.server.db, "select prompt_tokens, completion_tokens, cost_usd from requests "
                                          "where id=?", request_id)
    calls = rows(rig.server.db, "select model, status, prompt_tokens, completion_tokens, cost_usd from calls "
                                "where request_id=?", request_id)
    assert [(m, st) for m, st, *_ in calls] == [("dying", "failed")]
    assert (calls[0][2], calls[0][3]) == (p, c) and c >= 2 and p > 0
    assert cost == pytest.approx(calls[0][4]) and cost == pytest.approx((p + c) * 0.5 / 1e6)


def test_backup_latency_excludes_the_failed_attempts(rig: Rig) -> None:
    r = chat(rig.server.url, "moai/via_slow")
    assert r.status_code == 200, r.text
    ((latency,),) = rows(rig.server.db, "select latency_ms from calls where request_id=? and status='ok'",
                         r.json()["id"])
    assert latency < 400  # the slow model's 500 ms time-out belongs to the slow model, not to the backup
