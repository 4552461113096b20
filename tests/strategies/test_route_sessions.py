"""Sessions that may escalate: a conversation moves only to a model stronger in general, never back down."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import openai
import pytest
from stub_openai import Script, StubServer

from moai import Mixture
from moai.api import shutdown
from moai.config import parse_config
from moai.gate.decision import RouteDecision
from moai.providers.base import ChatParams
from moai.strategies.context import RequestContext
from moai.strategies.plan import StepResult
from moai.strategies.route import apply_session, session_notes, strength

HARD = ("Prove step by step that the algorithm below is correct, analyze its complexity, then implement and "
        "optimize it: " + "def f(x): return x * 2 + 1  # explain why " * 30)


@pytest.fixture
def growing(tmp_path: Path) -> Iterator[Mixture]:
    """The rule-based chooser over a small model and a large one; the small one is the dearer (so that price
    and size disagree, and size is what the cards say about strength)."""
    with StubServer(Script(reply="small")) as small, StubServer(Script(reply="big")) as big:
        path = tmp_path / "mix.yaml"
        path.write_text(f"""
models:
  small: {{provider: openai_compat, endpoint: "{small.url}", privacy: private, params_b: 8, max_retries: 0,
          price: {{input_per_mtok: 3, output_per_mtok: 4}}}}
  big: {{provider: openai_compat, endpoint: "{big.url}", privacy: private, params_b: 70, max_retries: 0,
        price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
mixes:
  growing: {{strategy: route, sessions: escalate}}
""")
        m = Mixture.from_config(str(path))
        yield m
        shutdown(m)


@pytest.fixture
def breaking(tmp_path: Path) -> Iterator[tuple[Mixture, Script]]:
    """Sticky sessions over a small model and a large one whose circuit opens after two failures in a row;
    yields the mixture and the large model's script."""
    with StubServer(Script(reply="small")) as small, StubServer(Script(reply="big")) as big:
        path = tmp_path / "mix.yaml"
        path.write_text(f"""
models:
  small: {{provider: openai_compat, endpoint: "{small.url}", privacy: private, params_b: 8, max_retries: 0}}
  big: {{provider: openai_compat, endpoint: "{big.url}", privacy: private, params_b: 70, max_retries: 0}}
mixes:
  default: {{strategy: route}}
settings: {{breaker_failures: 2, breaker_cooldown_s: 600}}
""")
        m = Mixture.from_config(str(path))
        yield m, big.script
        shutdown(m)


def test_an_escalated_session_never_moves_back_to_a_weaker_model(growing: Mixture) -> None:
    def turn(messages: list[dict[str, str]]) -> dict:
        r = growing.chat.completions.create(model="moai/growing", messages=messages, user="esc-1")
        return r.moai  # type: ignore[attr-defined,no-any-return]

    history = [{"role": "user", "content": "Hi"}]
    assert turn(history)["model"] == "small"
    history += [{"role": "assistant", "content": "small"}, {"role": "user", "content": HARD}]
    up = turn(history)
    assert up["model"] == "big"
    assert any(r.startswith("session: escalated from small to big (stronger by size") for r in up["reason"])
    # an easy follow-up sent with a trimmed history, as chat clients do: the gate alone would pick small
    easy = turn([{"role": "user", "content": "thanks, one more easy thing"}])
    assert easy["decision"]["model"] == "small"
    assert easy["model"] == "big"
    assert not any("escalated" in r for r in easy["reason"])
    assert any(r.startswith("session: sticky — stays on big (the gate alone would pick small, which is not "
                            "stronger than big by size") for r in easy["reason"])


class Prior:
    """Ranks models in a fixed order with given qualities for the query, and knows a query-independent prior
    (as the learned gate does from its training records)."""

    name = "prior"

    def __init__(self, order: list[str], quality: dict[str, float], prior: dict[str, float] | None) -> None:
        self.order, self.q, self.prior = order, quality, prior

    def decide(self, messages, cards, weights, live=None):  # type: ignore[no-untyped-def]
        names = [n for n in self.order if n in {c.name for c in cards}]
        return RouteDecision(model=names[0], ranking=names, probabilities={n: 1 / len(names) for n in names},
                             quality={n: self.q[n] for n in names})

    def prior_quality(self, names: Sequence[str]) -> dict[str, float]:
        return {n: self.prior[n] for n in names if n in self.prior} if self.prior is not None else {}


def context(cards: str, chooser: Prior, session_model: str) -> RequestContext:
    cfg = parse_config(f"models:\n{cards}mixes:\n  m: {{strategy: route, sessions: escalate}}\n")
    mix = cfg.mixes["m"]
    ctx = RequestContext(cfg, "m", mix, ChatParams(messages=[{"role": "user", "content": "q"}], max_tokens=16),
                         chooser, mix.weights, list(cfg.models.values()))
    ctx.session_model = session_model
    return ctx


CARD = "{{provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1'{}}}"


def cards(**extra: str) -> str:
    return "".join(f"  {name}: {CARD.format(', ' + more if more else '')}\n" for name, more in extra.items())


def test_the_gates_prior_decides_which_model_is_stronger_before_sizes() -> None:
    sized = cards(a="params_b: 70", b="params_b: 8")
    # b is smaller, but the gate measured it stronger over its training records: moving up to it is escalation
    ctx = context(sized, Prior(["b", "a"], {"a": 0.4, "b": 0.9}, {"a": 0.3, "b": 0.8}), "a")
    assert apply_session(ctx, ctx.decide().ranking)[0] == "b"
    assert ctx.notes[-1].startswith("session: escalated from a to b (stronger by mean quality on the gate's")
    # and from b, the larger a is a step down by that measure, however well it may do on this query
    ctx = context(sized, Prior(["a", "b"], {"a": 0.9, "b": 0.4}, {"a": 0.3, "b": 0.8}), "b")
    assert apply_session(ctx, ctx.decide().ranking)[0] == "b"
    assert "not stronger than b by mean quality" in ctx.notes[-1]
    # without a prior for both models, the cards' sizes decide
    ctx = context(sized, Prior(["a", "b"], {"a": 0.9, "b": 0.4}, {"b": 0.8}), "b")
    assert apply_session(ctx, ctx.decide().ranking)[0] == "a"
    assert strength(ctx, ["a", "b"]) == ({"a": 70.0, "b": 8.0}, "size (params_b)")


def test_a_stronger_model_is_only_taken_when_it_does_better_on_the_turn() -> None:
    ctx = context(cards(a="params_b: 70", b="params_b: 8"), Prior(["a", "b"], {"a": 0.5, "b": 0.5}, None), "b")
    assert apply_session(ctx, ctx.decide().ranking)[0] == "b"
    assert "not expected to do better on this turn" in ctx.notes[-1]


def test_without_sizes_prices_compare_and_without_either_the_session_stays() -> None:
    priced = cards(a="price: {input_per_mtok: 10, output_per_mtok: 30}",
                   b="price: {input_per_mtok: 0.1, output_per_mtok: 0.4}")
    ctx = context(priced, Prior(["a", "b"], {"a": 0.9, "b": 0.4}, None), "b")
    assert apply_session(ctx, ctx.decide().ranking)[0] == "a"
    assert "stronger by price per token" in ctx.notes[-1]
    ctx = context(priced, Prior(["b", "a"], {"a": 0.4, "b": 0.9}, None), "a")
    assert apply_session(ctx, ctx.decide().ranking)[0] == "a"
    unknown = cards(a="", b="")
    ctx = context(unknown, Prior(["a", "b"], {"a": 0.9, "b": 0.4}, None), "b")
    assert strength(ctx, ["a", "b"]) is None
    assert apply_session(ctx, ctx.decide().ranking)[0] == "b"
    assert "cannot be shown stronger than b" in ctx.notes[-1]


def test_the_session_note_says_so_when_another_model_answered(breaking: tuple[Mixture, Script]) -> None:
    """A turn the session's model did not answer (it failed, or its circuit was open) does not claim it did."""
    m, big = breaking

    def turn(session: str, text: str) -> dict[str, Any]:
        r = m.chat.completions.create(model="moai/default", messages=[{"role": "user", "content": text}],
                                      user=session)
        return r.moai  # type: ignore[attr-defined,no-any-return]

    assert [turn(s, HARD)["model"] for s in ("s1", "s2")] == ["big", "big"]
    big.fail_times = big.calls + 1
    failed = turn("s1", "Hi")
    assert failed["model"] == "small" and [t["status"] for t in failed["trace"]] == ["ok"]
    assert [r for r in failed["reason"] if r.startswith("session")] == [
        "session: sticky — meant to stay on big (the gate alone would pick small), but big failed this turn "
        "(see the trace) and small answered"]
    big.fail_times = big.calls + 100
    with pytest.raises(openai.APIStatusError, match="no model could answer"):  # a second failure in a row
        m.chat.completions.create(model="moai/default", messages=[{"role": "user", "content": HARD}],
                                  moai={"models": ["big"]})
    calls = big.calls
    passed = turn("s2", "Hi")
    assert passed["model"] == "small" and big.calls == calls  # big was not asked
    assert [r for r in passed["reason"] if r.startswith("session")] == [
        "session: sticky — meant to stay on big (the gate alone would pick small), but big was passed over "
        "(circuit open or rate limited) and small answered"]
    assert not any("stays on big" in r for r in passed["reason"])


def test_an_escalation_or_a_cached_answer_that_went_elsewhere_is_told_as_such() -> None:
    ctx = context(cards(a="params_b: 70", b="params_b: 8"), Prior(["a", "b"], {"a": 0.9, "b": 0.4}, None), "b")
    assert apply_session(ctx, ctx.decide().ranking)[0] == "a"
    failed = StepResult(step="answer", role="answer", model="b", status="ok", attempts=[{"model": "a", "error": "500"}])
    (note,) = session_notes(ctx, "b", [failed])
    assert note.startswith("session: meant to escalate from b to a (stronger by size (params_b)")
    assert note.endswith("but a failed this turn (see the trace) and b answered")
    cached = StepResult(step="answer", role="answer", model="b", status="cached")
    assert session_notes(ctx, "b", [cached])[0].endswith("but a cached answer by b was served")
    assert session_notes(ctx, "a", [failed]) == ctx.notes  # the model it escalated to answered: as it was
