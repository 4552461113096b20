"""Strategy logic over scripted OpenAI-compatible endpoints: early stops, judges, escalation, budgets."""

from __future__ import annotations

from contextlib import ExitStack

from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.gate.decision import RouteDecision
from moai.gate.rules import RuleChooser
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest


class Fixed:
    """Ranks models in a fixed order with given expected qualities (stands in for the gate)."""

    name = "fixed"

    def __init__(self, order: list[str], quality: dict[str, float] | None = None, difficulty: float = 0.5):
        self.order, self.q, self.d = order, quality or {}, difficulty

    def decide(self, messages, cards, weights, live=None):  # type: ignore[no-untyped-def]
        names = [n for n in self.order if n in {c.name for c in cards}]
        return RouteDecision(model=names[0], ranking=names, probabilities={n: 1 / len(names) for n in names},
                             quality={n: self.q.get(n, 0.5) for n in names}, difficulty=self.d)


def setup(stack: ExitStack, scripts: dict[str, Script], mixes: str, prices: dict[str, float] | None = None) -> str:
    lines = ["models:"]
    for name, script in scripts.items():
        url = stack.enter_context(StubServer(script)).url
        price = (prices or {}).get(name, 0.0)
        lines.append(f"  {name}: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 0, "
                     f"price: {{input_per_mtok: {price}, output_per_mtok: {price}}}}}")
    return "\n".join(lines) + "\nmixes:\n" + mixes


async def run(cfg_text: str, chooser: Fixed, mix: str = "m"):  # type: ignore[no-untyped-def]
    m = Mixture(parse_config(cfg_text), chooser=chooser)
    msgs = [{"role": "user", "content": "q"}]
    body = ChatCompletionRequest.model_validate({"model": f"moai/{mix}", "messages": msgs})
    prep = m.prepare(body)
    ex = await m.run(prep)
    summary = m.summary(prep, ex)
    await m.aclose()
    return ex, summary


async def test_critique_stops_early_when_the_critic_approves() -> None:
    with ExitStack() as st:
        writer, critic = Script(reply="draft answer"), Script(reply="APPROVED")
        cfg = setup(st, {"w": writer, "c": critic}, "  m: {strategy: critique, writer: w, critic: c, rounds: 3}\n")
        ex, _ = await run(cfg, Fixed(["w", "c"]))
    assert ex.answer.text == "draft answer"
    assert writer.calls == 1 and critic.calls == 1  # no revision, no second review
    statuses = {r.step: r.status for r in ex.results}
    assert statuses["critique2"] == "skipped" and statuses["revise3"] == "passthrough"


async def test_critique_revises_until_approved() -> None:
    with ExitStack() as st:
        writer = Script(replies=["draft", "better", "best"])
        critic = Script(replies=["wrong sum", "APPROVED"])
        cfg = setup(st, {"w": writer, "c": critic}, "  m: {strategy: critique, writer: w, critic: c, rounds: 3}\n")
        ex, _ = await run(cfg, Fixed(["w", "c"]))
    assert ex.answer.text == "better" and writer.calls == 2 and critic.calls == 2
    assert "wrong sum" in writer.seen[1]["messages"][-1]["content"]


async def test_fanout_judge_picks_the_numbered_answer() -> None:
    with ExitStack() as st:
        scripts = {"a": Script(reply="answer A"), "b": Script(reply="answer B"), "j": Script(reply="2")}
        cfg = setup(st, scripts, "  m: {strategy: fanout, proposers: [a, b], judge: j}\n")
        ex, summary = await run(cfg, Fixed(["a", "b", "j"]))
    assert ex.answer.text == "answer B" and ex.answer.model == "b"
    assert "1. answer A" in scripts["j"].seen[0]["messages"][-1]["content"]


async def test_a_picked_answer_cut_off_at_the_limit_still_says_length() -> None:
    """fan-out's pick and critique's approved draft pass an earlier answer on: its finish reason goes with it."""
    with ExitStack() as st:
        scripts = {"a": Script(reply="Once upon a", finish_reason="length"), "b": Script(reply="B"),
                   "j": Script(reply="1"), "c": Script(reply="APPROVED")}
        cfg = setup(st, scripts, "  m: {strategy: fanout, proposers: [a, b], judge: j}\n"
                                 "  k: {strategy: critique, writer: a, critic: c, rounds: 1}\n")
        fanned, _ = await run(cfg, Fixed(["a", "b", "j", "c"]))
        critiqued, _ = await run(cfg, Fixed(["a", "c"]), mix="k")
    assert fanned.answer.text == "Once upon a" and fanned.answer.finish_reason == "length"
    assert critiqued.answer.text == "Once upon a" and critiqued.answer.finish_reason == "length"


async def test_fanout_judge_reads_best_and_says_when_its_verdict_is_unusable() -> None:
    for verdict, expected, note in (("Answers 1 is weak. BEST: 2", "answer B", None),
                                    ("Both are fine.", "answer A", "judge verdict unusable")):
        with ExitStack() as st:
            scripts = {"a": Script(reply="answer A"), "b": Script(reply="answer B"), "j": Script(reply=verdict)}
            cfg = setup(st, scripts, "  m: {strategy: fanout, proposers: [a, b], judge: j}\n")
            ex, summary = await run(cfg, Fixed(["a", "b", "j"]))
        assert ex.answer.text == expected
        assert any(r.startswith(note) for r in summary["reason"]) if note else \
            not any(r.startswith("judge") for r in summary["reason"])


async def test_a_failed_critic_is_said_in_the_reasons() -> None:
    with ExitStack() as st:
        scripts = {"w": Script(reply="draft"), "c": Script(fail_times=99, fail_status=500)}
        cfg = setup(st, scripts, "  m: {strategy: critique, writer: w, critic: c, fallbacks: []}\n")
        ex, summary = await run(cfg, Fixed(["w", "c"]))
    assert ex.answer.text == "draft"
    assert any(r.startswith("critic critique1 failed") for r in summary["reason"])


async def test_moa_aggregator_sees_every_proposal_and_failure_falls_back() -> None:
    with ExitStack() as st:
        scripts = {"a": Script(reply="alpha"), "b": Script(reply="beta"),
                   "agg": Script(fail_times=99, fail_status=500)}
        cfg = setup(st, scripts, "  m: {strategy: moa, proposers: [a, b], aggregator: agg, fallbacks: []}\n")
        ex, summary = await run(cfg, Fixed(["b", "a", "agg"]))
    system = scripts["agg"].seen[0]["messages"][0]["content"]
    assert "1. alpha" in system and "2. beta" in system
    assert ex.answer.text == "beta"  # the gate's best proposer rescues a failed aggregation
    assert any("aggregator failed" in r for r in summary["reason"])


async def test_cascade_escalates_only_when_the_scorer_doubts() -> None:
    mix = "  m: {strategy: cascade, cascade: [cheap, big], threshold: 0.6}\n"
    with ExitStack() as st:
        scripts = {"cheap": Script(reply="cheap answer"), "big": Script(reply="big answer")}
        ex, _ = await run(setup(st, scripts, mix), Fixed(["big", "cheap"], {"cheap": 0.9, "big": 0.95}))
    assert ex.answer.text == "cheap answer" and scripts["big"].calls == 0
    with ExitStack() as st:
        scripts = {"cheap": Script(reply="cheap answer"), "big": Script(reply="big answer")}
        ex, _ = await run(setup(st, scripts, mix), Fixed(["big", "cheap"], {"cheap": 0.3, "big": 0.95}))
    assert ex.answer.text == "big answer" and scripts["cheap"].calls == 0  # predicted below the threshold: skipped


def test_a_cascade_is_ranked_among_its_own_models() -> None:
    """The gate's pick (the trace, x-moai-model before any answer) is one of the cascade's models, not another model
    of the config that the cascade never calls."""
    cfg = ("models:\n" + "".join(f"  {n}: {{provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1'}}\n"
                                  for n in ("cheap", "big", "other"))
           + "mixes:\n  m: {strategy: cascade, cascade: [cheap, big], threshold: 0.6}\n")
    m = Mixture(parse_config(cfg), chooser=Fixed(["other", "big", "cheap"]))
    body = ChatCompletionRequest.model_validate({"model": "moai/m", "messages": [{"role": "user", "content": "q"}]})
    decision = m.prepare(body).ctx.decision
    assert decision is not None and decision.model == "big" and "other" not in decision.ranking


def test_a_cascade_predicts_its_models_against_every_eligible_model() -> None:
    """The rule chooser's qualities are relative to the pool it ranks: judged among the cascade's two models only,
    a hard prompt would be left to the small one and an easy one sent past it."""
    card = "provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1'"
    cfg = ("models:\n" + "".join(f"  {n}: {{{card}, params_b: {b}}}\n"
                                  for n, b in (("tiny", 1), ("mid", 8), ("huge", 405)))
           + "mixes:\n  m: {strategy: cascade, cascade: [tiny, mid], threshold: 0.8}\n")
    m = Mixture(parse_config(cfg), chooser=RuleChooser())

    def first_try(prompt: str) -> list[str]:
        body = ChatCompletionRequest.model_validate({"model": "moai/m",
                                                     "messages": [{"role": "user", "content": prompt}]})
        prep = m.prepare(body)
        assert set(prep.ctx.decision.quality) == {"tiny", "mid"}  # the trace names the cascade's models only
        return prep.plan.steps[0].models

    assert first_try("hi") == ["tiny"]
    assert first_try("Prove that there are infinitely many primes and explain step by step why the proof "
                     "works.")[0] == "mid"


async def test_cascade_with_a_judge_scorer() -> None:
    mix = "  m: {strategy: cascade, cascade: [cheap, big], threshold: 0.7, scorer: judge, judge: j}\n"
    with ExitStack() as st:
        scripts = {"cheap": Script(reply="meh"), "big": Script(reply="great"), "j": Script(reply="3")}
        ex, _ = await run(setup(st, scripts, mix), Fixed(["big", "cheap", "j"]))
    assert ex.answer.text == "great" and scripts["j"].calls == 1


async def test_auto_uses_one_model_for_easy_and_moa_for_hard_queries() -> None:
    mixes = ("  m: {strategy: auto, collaborate: deep, difficulty_threshold: 0.5}\n"
             "  deep: {strategy: moa, proposers: [a, b], aggregator: a}\n")
    for difficulty, expected in ((0.2, "auto/route"), (0.8, "auto/moa")):
        with ExitStack() as st:
            scripts = {"a": Script(reply="A"), "b": Script(reply="B")}
            ex, summary = await run(setup(st, scripts, mixes), Fixed(["a", "b"], difficulty=difficulty))
        assert ex.plan.strategy == expected
        assert scripts["b"].calls == (0 if expected == "auto/route" else 1)


async def test_budget_drops_proposers_to_fit() -> None:
    mixes = ("  m: {strategy: moa, proposers: [a, b, c], aggregator: a, max_tokens: 1000,\n"
             "      constraints: {max_cost_usd: 0.05}}\n")
    with ExitStack() as st:
        scripts = {"a": Script(), "b": Script(), "c": Script()}
        ex, summary = await run(setup(st, scripts, mixes, prices={"a": 10.0, "b": 10.0, "c": 10.0}),
                                Fixed(["a", "b", "c"]))
    proposers = [r for r in ex.results if r.role == "proposer"]
    assert len(proposers) < 3 and scripts["c"].calls == 0
    assert any(r.startswith("budget: dropped proposer c") for r in summary["reason"])


async def test_pick_fills_roles_with_distinct_models() -> None:
    mixes = "  m: {strategy: moa, proposers: {pick: 2}, aggregator: {pick: best}}\n"
    with ExitStack() as st:
        scripts = {"a": Script(), "b": Script(), "c": Script()}
        ex, _ = await run(setup(st, scripts, mixes), Fixed(["c", "a", "b"]))
    proposers = [r.model for r in sorted(ex.results, key=lambda r: r.step) if r.role == "proposer"]
    assert proposers == ["c", "a"]
    assert ex.answer.model == "c"


def test_critic_verdict_is_read_from_its_last_verdict_line() -> None:
    from moai.strategies.prompts import approved

    worked = "Step 1: 3 * 12 = 36. Step 2: 36 - 20 = 16, the answer says 18.\nVERDICT: REVISE - 36 - 20 is 16, not 18"
    assert not approved(worked)
    assert approved("Recomputed: 3 * 12 = 36, 36 - 20 = 16. Correct.\nVERDICT: APPROVED")
    assert not approved("VERDICT: APPROVED\nwait, step 2 is wrong.\nVerdict: revise")  # the last verdict counts
    assert approved("APPROVED") and approved("lgtm") and not approved("The sum is wrong.")
