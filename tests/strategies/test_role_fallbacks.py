"""Every one-model step walks its whole fallback list, as a route does: the rest of a list written for the role
first, then each of the mix's ``fallbacks`` (only those the step may use), and a role that no eligible model can
play refuses the request with 422 ``no_eligible_model``, whatever the strategy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from stub_openai import Script, StubServer
from test_role_prompts import Fixed

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.app import create_app
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.context import NoEligibleModel
from moai.strategies.plan import Plan
from moai.telemetry.store import TelemetryStore

MODELS = ("bad", "bad2", "ok", "other", "a", "b")


def config_text(mixes: str, urls: dict[str, str] | None = None, cloud: tuple[str, ...] = ()) -> str:
    """Models ``MODELS`` (the ones in ``cloud`` of the cloud tier, the others private), then ``mixes``."""
    lines = ["models:"]
    for name in MODELS:
        url = (urls or {}).get(name, "http://127.0.0.1:9/v1")
        tier = "cloud" if name in cloud else "private"
        lines.append(f"  {name}: {{provider: openai_compat, endpoint: '{url}', privacy: {tier}, max_retries: 0}}")
    return "\n".join(lines) + "\nmixes:\n" + mixes + "settings: {breaker_failures: 100}\n"


def plan_of(mix: str, order: list[str] | None = None, cloud: tuple[str, ...] = (), others: str = "") -> Plan:
    """The plan of the mix ``m`` (no model is called); ``others``: more mixes, one a line."""
    cfg = parse_config(config_text(f"  m: {mix}\n{others}", cloud=cloud))
    m = Mixture(cfg, chooser=Fixed(order or list(MODELS)))
    body = ChatCompletionRequest.model_validate({"model": "moai/m", "messages": [{"role": "user", "content": "q"}]})
    return m.prepare(body).plan


def models(plan: Plan) -> dict[str, list[str]]:
    return {s.id: s.models for s in plan.steps}


# ---------------------------------------------------------------- the mix's whole fallbacks list


@pytest.mark.parametrize(("mix", "step", "expected"), [
    ("{strategy: chain, steps: [{model: bad}], fallbacks: [bad2, ok]}", "step1", ["bad", "bad2", "ok"]),
    ("{strategy: critique, writer: bad, critic: ok, fallbacks: [bad2, ok]}", "draft", ["bad", "bad2", "ok"]),
    ("{strategy: critique, writer: bad, critic: ok, fallbacks: [bad2, ok]}", "critique1", ["ok", "bad2"]),
    ("{strategy: critique, writer: bad, critic: ok, fallbacks: [bad2, ok]}", "revise1", ["bad", "bad2", "ok"]),
    ("{strategy: critique, writer: bad, critic: ok, check: python, fallbacks: [bad2, ok]}", "check",
     ["ok", "bad2"]),
    ("{strategy: moa, proposers: [ok, other], aggregator: bad, fallbacks: [bad2, ok]}", "aggregate",
     ["bad", "bad2", "ok"]),
    ("{strategy: fanout, proposers: [ok, other], aggregator: bad, fallbacks: [bad2, ok]}", "aggregate",
     ["bad", "bad2", "ok"]),
    ("{strategy: fanout, proposers: [a, other], judge: bad, fallbacks: [bad2, ok]}", "judge", ["bad", "bad2", "ok"]),
    ("{strategy: cascade, cascade: [a, bad], fallbacks: [bad2, ok]}", "try2", ["bad", "bad2", "ok"]),
    ("{strategy: cascade, cascade: [a, bad], fallbacks: [a, ok]}", "try2", ["bad", "ok"]),
    ("{strategy: cascade, cascade: [a, ok], scorer: judge, judge: bad, fallbacks: [bad2, other]}", "grade.try1",
     ["bad", "bad2", "other"]),
])
def test_a_step_walks_every_fallback_of_the_mix(mix: str, step: str, expected: list[str]) -> None:
    """Only the first fallback was kept (``bad2``): the step gave up before ``ok``, which a route would reach."""
    assert models(plan_of(mix))[step] == expected


def test_fallbacks_gate_walks_the_whole_ranking_as_a_route_does() -> None:
    plan = plan_of("{strategy: chain, steps: [{model: bad}]}", order=["ok", "a", "bad", "b"])
    assert models(plan)["step1"] == ["bad", "ok", "a", "b"]


def test_a_fallback_the_step_may_not_use_is_left_out() -> None:
    """A cloud fallback under ``max_privacy: private`` is not eligible: the step never falls back to it."""
    plan = plan_of("{strategy: chain, steps: [{model: bad}], fallbacks: [b, bad2, ok], "
                   "constraints: {max_privacy: private}}", cloud=("b",))
    assert models(plan)["step1"] == ["bad", "bad2", "ok"]


def test_an_auto_mixs_collaboration_steps_fall_back_only_within_its_limits() -> None:
    """The collaboration plan reuses the auto mix's ranking, which holds the cloud model ``b``: the gate's
    fallbacks must still be the collaboration mix's eligible models only."""
    plan = plan_of("{strategy: auto, collaborate: inner, difficulty_threshold: 0}", cloud=("b",),
                   order=["b", "ok", "a", "bad", "bad2", "other"],
                   others="  inner: {strategy: moa, proposers: [a, ok], aggregator: bad, "
                          "constraints: {max_privacy: private}}\n")
    assert plan.strategy == "auto/moa"
    assert models(plan)["aggregate"] == ["bad", "ok", "a", "bad2", "other"]


# ---------------------------------------------------------------- a list written for a one-model role


@pytest.mark.parametrize(("mix", "step", "expected"), [
    ("{strategy: chain, steps: [{model: [bad, ok]}], fallbacks: []}", "step1", ["bad", "ok"]),
    ("{strategy: chain, steps: [{model: [bad, ok]}], fallbacks: [other]}", "step1", ["bad", "ok", "other"]),
    ("{strategy: chain, steps: [{model: [bad, ok]}], fallbacks: [ok, bad2]}", "step1", ["bad", "ok", "bad2"]),
    ("{strategy: critique, writer: [a, b], critic: [b, a], fallbacks: [other]}", "draft", ["a", "b", "other"]),
    ("{strategy: critique, writer: [a, b], critic: [b, a], fallbacks: [other]}", "critique1", ["b", "a", "other"]),
    ("{strategy: moa, proposers: [ok, other], aggregator: [bad, a], fallbacks: []}", "aggregate", ["bad", "a"]),
    ("{strategy: fanout, proposers: [ok, other], aggregator: [bad, a], fallbacks: [b]}", "aggregate",
     ["bad", "a", "b"]),
    ("{strategy: fanout, proposers: [a, b], judge: [b, a], fallbacks: []}", "judge", ["b", "a"]),
])
def test_the_rest_of_a_roles_list_stands_behind_its_first_model(mix: str, step: str, expected: list[str]) -> None:
    """Roles take a model name, a list, or ``pick:``: a list's other models are the step's first fallbacks,
    in the order written, before the mix's own."""
    assert models(plan_of(mix))[step] == expected


# ---------------------------------------------------------------- a role no eligible model can play


@pytest.mark.parametrize(("mix", "what"), [
    ("{strategy: cascade, cascade: [b], constraints: {max_privacy: private}}", "the cascade"),
    ("{strategy: moa, proposers: {pick: 2, among: [b]}, aggregator: a, constraints: {max_privacy: private}}",
     "the proposers"),
    ("{strategy: moa, proposers: [a], aggregator: {pick: best, among: [b]}, constraints: {max_privacy: private}}",
     "the aggregator"),
    ("{strategy: fanout, proposers: {pick: 2, among: [b]}, constraints: {max_privacy: private}}", "the proposers"),
    ("{strategy: fanout, proposers: [a], aggregator: {pick: best, among: [b]}, constraints: {max_privacy: private}}",
     "the aggregator"),
    ("{strategy: chain, steps: [{model: {pick: best, among: [b]}}], constraints: {max_privacy: private}}",
     "chain step 1"),
    ("{strategy: critique, writer: {pick: best, among: [b]}, critic: a, constraints: {max_privacy: private}}",
     "the writer"),
    ("{strategy: critique, writer: a, critic: {pick: best, among: [b]}, constraints: {max_privacy: private}}",
     "the critic"),
])
def test_a_role_with_no_eligible_model_refuses_the_request_as_a_route_does(mix: str, what: str) -> None:
    with pytest.raises(NoEligibleModel) as e:
        plan_of(mix, cloud=("b",))
    assert e.value.code == "no_eligible_model"
    assert f"no eligible model for {what}" in str(e.value)
    assert e.value.excluded == {"b": "privacy tier cloud not allowed (max private)"}


# ---------------------------------------------------------------- through the HTTP app


@contextmanager
def serve(tmp: Path, mixes: str, cloud: tuple[str, ...] = ()) -> Iterator[tuple[TestClient, dict[str, Script]]]:
    """The app over one stub per model: ``bad`` and ``bad2`` always fail, the others answer with their name."""
    scripts = {n: Script(fail_times=10**6) if n.startswith("bad") else Script(reply=f"from {n}") for n in MODELS}
    with ExitStack() as stack:
        urls = {n: stack.enter_context(StubServer(s)).url for n, s in scripts.items()}
        config = parse_config(config_text(mixes, urls, cloud))
        mixture = Mixture(config, store=TelemetryStore(f"sqlite:///{tmp / 'moai.db'}"), chooser=Fixed(list(MODELS)))
        with TestClient(create_app(config, mixture.store, mixture=mixture)) as client:
            yield client, scripts


def ask(client: TestClient, mix: str, stream: bool = False) -> Any:
    return client.post("/v1/chat/completions", json={"model": f"moai/{mix}", "stream": stream,
                                                     "messages": [{"role": "user", "content": "q"}]})


def answer(r: Any, stream: bool) -> str:
    """The answer's text, from the response or from the streamed chunks' deltas."""
    if not stream:
        return str(r.json()["choices"][0]["message"]["content"])
    chunks = [json.loads(line[6:]) for line in r.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


@pytest.mark.parametrize("stream", [False, True])
def test_over_http_a_step_reaches_a_later_fallback_and_a_roles_second_model(tmp_path: Path, stream: bool) -> None:
    mixes = ("  chainfb: {strategy: chain, steps: [{model: bad}], fallbacks: [bad2, ok]}\n"
             "  critfb: {strategy: critique, writer: bad, critic: a, fallbacks: [bad2, ok]}\n"
             "  moafb: {strategy: moa, proposers: [a, b], aggregator: bad, fallbacks: [bad2, ok]}\n"
             "  listed: {strategy: chain, steps: [{model: [bad, ok]}], fallbacks: []}\n")
    with serve(tmp_path, mixes) as (client, scripts):
        for mix in ("chainfb", "critfb", "moafb", "listed"):
            r = ask(client, mix, stream)
            assert r.status_code == 200, (mix, r.text)
            assert answer(r, stream) == "from ok", (mix, r.text)
        # the critique's writer drafts past bad and bad2 to ok, and revises with ok alone: a model that failed
        # earlier in the request is not called again by its later steps
        assert scripts["ok"].calls == 5 and scripts["bad"].calls == 4 and scripts["bad2"].calls == 3


def test_over_http_every_strategy_answers_422_no_eligible_model(tmp_path: Path) -> None:
    private = "constraints: {max_privacy: private}"
    mixes = (f"  cas: {{strategy: cascade, cascade: [b], {private}}}\n"
             f"  moa: {{strategy: moa, proposers: [a], aggregator: {{pick: best, among: [b]}}, {private}}}\n"
             f"  fan: {{strategy: fanout, proposers: {{pick: 2, among: [b]}}, {private}}}\n"
             f"  chain: {{strategy: chain, steps: [{{model: {{pick: best, among: [b]}}}}], {private}}}\n"
             f"  crit: {{strategy: critique, writer: a, critic: {{pick: best, among: [b]}}, {private}}}\n"
             f"  r: {{strategy: route, models: [b], {private}}}\n")
    with serve(tmp_path, mixes, cloud=("b",)) as (client, scripts):
        for mix in ("cas", "moa", "fan", "chain", "crit", "r"):
            r = ask(client, mix)
            assert r.status_code == 422, (mix, r.text)
            error = r.json()["error"]
            assert error["code"] == "no_eligible_model", (mix, error)
            assert "b: privacy tier cloud not allowed (max private)" in error["message"], (mix, error)
        assert sum(s.calls for s in scripts.values()) == 0


def test_a_role_emptied_by_sensitive_data_answers_422_no_trusted_model(tmp_path: Path) -> None:
    """The aggregator may only be the cloud model ``b``; a card number in the request keeps the data off the cloud
    tier, so the refusal is the one a sensitive route gets (``no_trusted_model``), not a constraint error."""
    mixes = ("  moa: {strategy: moa, proposers: [a], aggregator: {pick: best, among: [b]}, "
             "constraints: {sensitive_data: private_ok}}\n")
    card = "Please check my card 4539 1488 0343 6467"
    with serve(tmp_path, mixes, cloud=("b",)) as (client, scripts):
        r = client.post("/v1/chat/completions", json={"model": "moai/moa",
                                                      "messages": [{"role": "user", "content": card}]})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "no_trusted_model", error
        assert "sensitive data" in error["message"] and "the aggregator" in error["message"], error
        assert "4539" not in r.text
        plain = ask(client, "moa")  # the same mix without sensitive data answers
        assert plain.status_code == 200, plain.text
        assert sum(s.calls for s in scripts.values()) == 2


@pytest.mark.parametrize("stream", [False, True])
def test_over_http_a_cascade_whose_last_model_fails_falls_back(tmp_path: Path, stream: bool) -> None:
    """Both cascade models fail; the mix's fallback ``ok`` answers instead of a 502."""
    mixes = "  casfb: {strategy: cascade, cascade: [bad, bad2], fallbacks: [ok]}\n"
    with serve(tmp_path, mixes) as (client, scripts):
        r = ask(client, "casfb", stream)
        assert r.status_code == 200, r.text
        assert answer(r, stream) == "from ok", r.text
        assert scripts["ok"].calls == 1 and scripts["bad"].calls == 1 and scripts["bad2"].calls == 1
