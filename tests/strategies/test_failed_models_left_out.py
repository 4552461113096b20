"""A model that failed in a request is not called again by that request's later steps: a chain whose every model
fails costs one try of each model, not one per link, and a later step falls back to a model that has not failed.
Left with no other model, a step tries one again only when its failure may pass (a 5xx, a timeout), not when the
model is unreachable."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from stub_openai import Script, StubServer, free_port
from test_plan_fallbacks import Fixed

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.executor import Execution, PlanFailed

NAMES = ["a", "b", "c", "d", "e"]
MIXES = {
    "chain": "{strategy: chain, steps: [{model: a, instruction: D}, {model: b, instruction: F}, "
             "{model: c, instruction: P}]}",
    "moa": "{strategy: moa, layers: 2, proposers: [a, b, c], aggregator: d}",
    "critique": "{strategy: critique, writer: a, critic: b, rounds: 2}",
    "fanout": "{strategy: fanout, proposers: [a, b, c], aggregator: d}",
    "cascade": "{strategy: cascade, cascade: [a, b, c], threshold: 0.6, scorer: judge, judge: d}",
}


async def run(mix: str, failing: set[str], extra: str = "") -> tuple[Execution | PlanFailed, dict[str, Script]]:
    """Five models behind stubs with one retry each (``failing`` answer every call with a 500); the gate ranks
    them a..e."""
    with ExitStack() as st:
        scripts = {n: Script(fail_times=10**6) if n in failing else Script(reply=f"from {n}") for n in NAMES}
        lines = ["models:"]
        for n, s in scripts.items():
            url = st.enter_context(StubServer(s)).url
            lines.append(f"  {n}: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 1}}")
        m = Mixture(parse_config("\n".join(lines) + extra + "\nmixes:\n  m: " + mix + "\n"), chooser=Fixed(NAMES))
        prep = m.prepare(ChatCompletionRequest.model_validate(
            {"model": "moai/m", "messages": [{"role": "user", "content": "q"}]}))
        try:
            return await m.run(prep), scripts
        except PlanFailed as e:
            return e, scripts
        finally:
            await m.aclose()


async def test_a_chain_whose_first_link_no_model_answers_stops() -> None:
    """3 links × 5 failing models × (1 try + 1 retry) was 30 upstream calls; the first link tries each model
    once (10 calls) and the chain stops there."""
    out, scripts = await run(MIXES["chain"], set(NAMES))
    assert isinstance(out, PlanFailed) and out.status == 502
    assert {n: s.calls for n, s in scripts.items()} == dict.fromkeys(NAMES, 2)
    steps = {r.step: r for r in out.results}
    assert steps["step1"].status == "failed" and len(steps["step1"].attempts) == 5
    assert steps["step2"].status == steps["step3"].status == "skipped"
    assert "the chain stopped" in (steps["step2"].error or "")


@pytest.mark.parametrize(("strategy", "failing"), [
    ("chain", {"a", "b"}), ("moa", {"a", "d"}), ("critique", {"a", "b"}), ("critique", {"a", "d"}),
    ("fanout", {"a", "d"}), ("cascade", {"a", "d"}),
])
async def test_a_model_that_failed_is_not_called_by_later_steps(strategy: str, failing: set[str]) -> None:
    """Each failing model is tried at most once in the request (its one try and one retry): later steps (a chain's next
    link, a MoA layer, a revision, an aggregator's or judge's fallbacks) go to models that have not failed."""
    out, scripts = await run(MIXES[strategy], failing)
    assert isinstance(out, Execution) and out.answer.text.startswith("from ")
    assert scripts["a"].calls == 2 and all(scripts[n].calls <= 2 for n in failing), scripts
    assert any("failed earlier in this request" in n for n in out.plan.notes), out.plan.notes


async def test_a_step_with_no_other_model_tries_a_failed_one_again_when_its_failure_may_pass() -> None:
    """The aggregator is also a proposer whose proposal failed with a 500: it has no fallback, and a 5xx may pass,
    so it is asked once more (and answers) rather than the request falling back to one proposal."""
    with ExitStack() as st:
        scripts = {"p": Script(fail_times=1, reply="from p"), "q": Script(reply="from q")}
        lines = ["models:"]
        for n, s in scripts.items():
            url = st.enter_context(StubServer(s)).url
            lines.append(f"  {n}: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 0}}")
        cfg = "\n".join(lines) + "\nmixes:\n  m: {strategy: moa, proposers: [p, q], aggregator: p, fallbacks: []}\n"
        m = Mixture(parse_config(cfg), chooser=Fixed(["p", "q"]))
        try:
            ex = await m.run(m.prepare(ChatCompletionRequest.model_validate(
                {"model": "moai/m", "messages": [{"role": "user", "content": "q"}]})))
        finally:
            await m.aclose()
    assert ex.answer.step == "aggregate" and ex.answer.model == "p" and scripts["p"].calls == 2


async def test_an_unreachable_model_is_not_tried_again_by_a_step_with_no_other() -> None:
    """A proposer whose connection was refused is not asked again to aggregate: the request answers with the
    proposal that came back, and says why."""
    with ExitStack() as st:
        url = st.enter_context(StubServer(Script(reply="from q"))).url
        cfg = (f"models:\n  dead: {{provider: openai_compat, endpoint: 'http://127.0.0.1:{free_port()}/v1', "
               "privacy: private, max_retries: 0}\n"
               f"  q: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 0}}\n"
               "mixes:\n  m: {strategy: moa, proposers: [dead, q], aggregator: dead, fallbacks: []}\n")
        m = Mixture(parse_config(cfg), chooser=Fixed(["dead", "q"]))
        try:
            prep = m.prepare(ChatCompletionRequest.model_validate(
                {"model": "moai/m", "messages": [{"role": "user", "content": "q"}]}))
            ex = await m.run(prep)
            reasons = m.summary(prep, ex)["reason"]
        finally:
            await m.aclose()
    assert ex.answer.text == "from q"
    agg = next(r for r in ex.results if r.step == "aggregate")
    assert agg.status == "skipped" and not agg.attempts and "dead failed earlier" in (agg.error or "")
    assert any("answered with p1.2's answer" in r for r in reasons), reasons
