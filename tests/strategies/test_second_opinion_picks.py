"""A picked critic is not the writer's model, and a picked fan-out judge is none of the proposers, while another
eligible model can play the role (a model reviewing its own answer is no second opinion); a pinned name is played
as written, and a failed critic or judge falls back to the models it would review last."""

from __future__ import annotations

from typing import Any

from test_role_prompts import Fixed

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest

EP = "endpoint: 'http://127.0.0.1:9/v1'"


def prepared(mix: str, models: tuple[str, ...] = ("a", "b", "c")) -> tuple[dict[str, list[str]], list[str]]:
    """Each step's models and the plan's notes for the mix ``m`` (the gate ranks ``models`` in order)."""
    cards = "".join(f"  {n}: {{provider: openai_compat, {EP}, privacy: private}}\n" for n in models)
    m = Mixture(parse_config(f"models:\n{cards}mixes:\n  m: {mix}\n"), chooser=Fixed(list(models)))
    body: Any = ChatCompletionRequest.model_validate({"model": "moai/m",
                                                      "messages": [{"role": "user", "content": "q"}]})
    prep = m.prepare(body)
    return {s.id: s.models for s in prep.plan.steps}, prep.ctx.notes


def test_a_picked_critic_is_another_model_than_the_writer() -> None:
    steps, notes = prepared("{strategy: critique, writer: {pick: best}, critic: {pick: best}, rounds: 1}")
    assert steps["draft"][0] == "a" and steps["critique1"][0] == "b", steps
    assert not any("plays another role" in n for n in notes), notes


def test_a_pinned_writers_model_is_not_picked_as_its_critic() -> None:
    steps, _ = prepared("{strategy: critique, writer: a, critic: {pick: best}, check: python}")
    assert steps["check"][0] == "b" and steps["critique1"][0] == "b", steps


def test_a_failed_critic_falls_back_to_the_writers_model_last() -> None:
    steps, _ = prepared("{strategy: critique, writer: a, critic: b, rounds: 1}")
    assert steps["critique1"] == ["b", "c", "a"], steps


def test_a_pinned_critic_is_played_as_written_even_by_the_writers_model() -> None:
    steps, _ = prepared("{strategy: critique, writer: a, critic: a, rounds: 1}")
    assert steps["critique1"][0] == "a", steps


def test_with_no_other_model_the_writer_reviews_and_a_note_says_so() -> None:
    steps, notes = prepared("{strategy: critique, writer: {pick: best}, critic: {pick: best}, rounds: 1}",
                            models=("a",))
    assert steps["critique1"] == ["a"], steps
    assert any(n.startswith("role: critic is played by a") for n in notes), notes


def test_a_picked_judge_is_none_of_the_proposers() -> None:
    steps, _ = prepared("{strategy: fanout, proposers: {pick: 2}, judge: {pick: best}}")
    assert sorted(steps["p1.1"] + steps["p1.2"]) == ["a", "b"]
    assert steps["judge"] == ["c", "a", "b"], steps  # the proposers only as fallbacks, last


def test_a_judge_with_only_proposers_to_pick_from_is_one_of_them_and_a_note_says_so() -> None:
    steps, notes = prepared("{strategy: fanout, proposers: {pick: 2}, judge: {pick: best}}", models=("a", "b"))
    assert steps["judge"][0] == "a", steps
    assert any(n.startswith("role: judge is played by a") for n in notes), notes
