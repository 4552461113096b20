"""A slow proposer under a request time limit: its layer goes on without it once its share of the time is spent
and another proposer has answered, instead of the whole request running into the limit."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from stub_openai import Script, StubServer

from moai.api import shutdown
from moai.config import parse_config
from moai.mixture import Mixture
from moai.strategies.plan import Plan, Step
from moai.strategies.stragglers import stages_after
from moai.telemetry.store import TelemetryStore

HI = [{"role": "user", "content": "hi"}]


@contextlib.contextmanager
def mixture(tmp_path: Path, delays: dict[str, float], mix: str, limit_s: float) -> Iterator[tuple[Mixture, Path]]:
    """Models named by ``delays``, each on its own stub taking that long, plus a quick aggregator/judge ``agg``."""
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(StubServer(Script(reply=f"{name} says hi", delay_s=d))).url
                for name, d in {**delays, "agg": 0.0}.items()}
        cards = "\n".join(f'  {n}: {{provider: openai_compat, endpoint: "{u}", privacy: private, max_retries: 0, '
                          f'timeout_s: 60}}' for n, u in urls.items())
        db = tmp_path / "t.db"
        m = Mixture(parse_config(f"models:\n{cards}\nmixes:\n  m: {mix}\n"
                                 f"settings: {{request_timeout_s: {limit_s}, breaker_failures: 1}}\n"),
                    store=TelemetryStore(f"sqlite:///{db}"))
        m.route(HI, mix="m")  # the gate's first decision loads its encoder: not part of what is timed
        try:
            yield m, db
        finally:
            shutdown(m)  # flushes the records


def calls(db: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(db) as conn:
        return {m: (s, e) for m, s, e in conn.execute("select model, status, error from calls")}


@pytest.mark.parametrize("stream", [False, True])
def test_a_slow_proposer_is_left_behind_once_others_answered(tmp_path: Path, stream: bool) -> None:
    moa = "{strategy: moa, proposers: [a, b, slow], aggregator: agg, fallbacks: []}"
    with mixture(tmp_path, {"a": 0.0, "b": 0.1, "slow": 4.0}, moa, limit_s=3.0) as (m, db):
        started = time.monotonic()
        if stream:
            chunks = list(m.chat.completions.create(model="moai/m", messages=HI, stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            text = m.chat.completions.create(model="moai/m", messages=HI).choices[0].message.content or ""
        took = time.monotonic() - started
        assert text == "agg says hi"
        assert 1.3 < took < 2.9  # half of the 3 s went to the proposers, then the aggregator answered at once
        assert m.stats.healthy("slow")  # a straggler is no failure of its model (one would open its circuit)
        shutdown(m)
    rows = calls(db)
    assert rows["a"][0] == rows["b"][0] == rows["agg"][0] == "ok"
    assert rows["slow"][0] == "cancelled" and "left behind" in (rows["slow"][1] or "")


def test_a_layer_waits_past_its_share_while_no_proposer_has_answered(tmp_path: Path) -> None:
    moa = "{strategy: moa, proposers: [late, slow], aggregator: agg, fallbacks: []}"
    with mixture(tmp_path, {"late": 2.2, "slow": 4.5}, moa, limit_s=4.0) as (m, db):
        started = time.monotonic()
        text = m.chat.completions.create(model="moai/m", messages=HI).choices[0].message.content
        assert text == "agg says hi" and 2.1 < time.monotonic() - started < 3.5
    rows = calls(db)
    assert rows["late"][0] == "ok" and rows["slow"][0] == "cancelled"


def test_without_any_answer_the_request_limit_still_rules(tmp_path: Path) -> None:
    moa = "{strategy: moa, proposers: [slow, slower], aggregator: agg, fallbacks: []}"
    with mixture(tmp_path, {"slow": 2.0, "slower": 2.0}, moa, limit_s=1.0) as (m, _db):
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            m.chat.completions.create(model="moai/m", messages=HI)
        assert time.monotonic() - started < 2.5


def test_a_judged_fanout_leaves_its_straggler_behind_too(tmp_path: Path) -> None:
    fan = "{strategy: fanout, proposers: [a, b, slow], judge: agg, fallbacks: []}"
    with mixture(tmp_path, {"a": 0.0, "b": 0.0, "slow": 4.0}, fan, limit_s=3.0) as (m, db):
        started = time.monotonic()
        m.chat.completions.create(model="moai/m", messages=HI)
        assert 1.3 < time.monotonic() - started < 2.8  # half to the proposers, half to the judge (the pick calls none)
    assert calls(db)["slow"][0] == "cancelled"


def step(sid: str, deps: list[str], models: list[str] | None = None) -> Step:
    return Step(sid, "proposer", ["x"] if models is None else models, lambda _r: None, deps=deps)


def test_stages_count_the_model_calls_still_to_come() -> None:
    plan = Plan("moa", [step("p1.1", []), step("p1.2", []), step("p2.1", ["p1.1", "p1.2"]),
                        step("aggregate", ["p2.1"])], "aggregate")
    assert [stages_after(plan, s) for s in plan.steps] == [2, 2, 1, 0]
    judged = Plan("fanout", [step("p1.1", []), step("judge", ["p1.1"]), step("pick", ["p1.1", "judge"], [])],
                  "pick")
    assert stages_after(judged, judged.steps[0]) == 1  # the judge; the pick is a passthrough


def test_stages_of_a_wide_deep_plan_are_counted_at_once() -> None:
    """Every MoA layer depends on every earlier one: walking each path took seconds on the event loop."""
    import time as clock

    layers = [[f"p{layer}.{i}" for i in range(30)] for layer in range(5)]
    steps = [step(sid, [d for earlier in layers[:n] for d in earlier]) for n, ids in enumerate(layers) for sid in ids]
    plan = Plan("moa", [*steps, step("aggregate", [d for ids in layers for d in ids])], "aggregate")
    started = clock.perf_counter()
    assert [stages_after(plan, plan.steps[i]) for i in (0, 30, 120)] == [5, 4, 1]
    assert clock.perf_counter() - started < 1.0


def test_a_proposer_left_behind_is_in_usage_by_model(tmp_path: Path) -> None:
    """The prompt sent to a proposer left behind is billed (usage, its call row): usage_by_model counts it too, so
    that it adds up to usage."""
    moa = "{strategy: moa, proposers: [a, slow], aggregator: agg, fallbacks: []}"
    with mixture(tmp_path, {"a": 0.0, "slow": 4.0}, moa, limit_s=3.0) as (m, _db):
        r = m.chat.completions.create(model="moai/m", messages=HI)
    summary = r.model_extra["moai"]
    by_model = summary["usage_by_model"]
    assert by_model["slow"]["input"] > 0, by_model
    assert sum(u["input"] for u in by_model.values()) == r.usage.prompt_tokens


def test_a_proposer_is_not_left_behind_for_a_peer_that_said_nothing(tmp_path: Path) -> None:
    """``a`` answers at once with nothing: ``slow``, past its share of the time, is still the one answer to
    aggregate, and is waited for (it was cut, and the request failed for want of any text)."""
    moa = "{strategy: moa, proposers: [a, slow], aggregator: agg, fallbacks: []}"
    with contextlib.ExitStack() as stack:
        urls = {"a": stack.enter_context(StubServer(Script(reply=""))).url,
                "slow": stack.enter_context(StubServer(Script(reply="slow says hi", delay_s=2.0))).url,
                "agg": stack.enter_context(StubServer(Script(reply="agg says hi"))).url}
        cards = "\n".join(f'  {n}: {{provider: openai_compat, endpoint: "{u}", privacy: private, max_retries: 0}}'
                          for n, u in urls.items())
        m = Mixture(parse_config(f"models:\n{cards}\nmixes:\n  m: {moa}\nsettings: {{request_timeout_s: 3.0}}\n"))
        try:
            r = m.chat.completions.create(model="moai/m", messages=HI)
        finally:
            shutdown(m)
    assert r.choices[0].message.content == "agg says hi"
    assert [t["status"] for t in r.model_extra["moai"]["trace"] if t["model"] == "slow"] == ["ok"]
