"""What each role is shown and with which options: the user's instructions reach the answer-writing steps,
reviewers see the conversation without the user's output options, verdicts are read robustly."""

from __future__ import annotations

from contextlib import ExitStack
from types import SimpleNamespace
from typing import Any

from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.gate.decision import RouteDecision
from moai.mixture import Mixture
from moai.providers.base import ChatParams
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.plan import StepResult
from moai.strategies.prompts import (
    CRITIC,
    GRADE,
    aggregate_messages,
    approved,
    check_messages,
    critic_note,
    judge_messages,
    judge_pick,
    judge_verdict,
    merge_turns,
    review_messages,
    revise_messages,
)
from moai.strategies.roles import with_messages

SYSTEM = "SYSPROMPT: answer in French."
DIALOGUE = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "my name is Zoé"},
    {"role": "assistant", "content": "bonjour Zoé"},
    {"role": "user", "content": "what is my name?"},
]
USER_OPTIONS: dict[str, Any] = {"max_tokens": 33, "top_p": 0.9, "seed": 7, "stop": ["END"],
                                "response_format": {"type": "json_object"}}


def roles_of(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


def well_formed(messages: list[dict[str, Any]]) -> bool:
    """At most one system message, first; no two turns of the same role in a row."""
    roles = roles_of(messages)
    turns = roles[1:] if roles and roles[0] == "system" else roles
    return "system" not in turns and all(a != b for a, b in zip(turns, turns[1:], strict=False))


# --- the aggregator and layer-2 proposers keep the user's system prompt


def test_aggregate_messages_keep_the_users_system_prompt_in_one_system_message() -> None:
    msgs = aggregate_messages(DIALOGUE, ["réponse un", "réponse deux"])
    assert roles_of(msgs) == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"].startswith(SYSTEM)  # the user's instructions first, as in Together's reference
    assert "1. réponse un" in msgs[0]["content"] and "2. réponse deux" in msgs[0]["content"]
    assert msgs[1:] == DIALOGUE[1:]


# --- reviewers see the conversation, and get moai's options rather than the user's


def test_reviewers_see_the_system_prompt_and_earlier_turns() -> None:
    for msgs in (review_messages(CRITIC, DIALOGUE, "Zoé"), review_messages(GRADE, DIALOGUE, "Zoé"),
                 judge_messages(DIALOGUE, ["Zoé", "Marie"]), check_messages(DIALOGUE)):
        shown = msgs[-1]["content"]
        assert SYSTEM in shown and "my name is Zoé" in shown and "bonjour Zoé" in shown
        assert "what is my name?" in shown
        assert well_formed(msgs)


def test_single_turn_review_prompt_is_unchanged() -> None:
    """No system prompt, one turn: the prompt the critic was tuned on stays as it was."""
    msgs = review_messages(CRITIC, [{"role": "user", "content": "2+2?"}], "4")
    assert msgs[1]["content"] == "Request:\n2+2?\n\nAnswer:\n4"


def test_long_conversations_are_shown_compactly() -> None:
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn{i} " + "x" * 5000}
             for i in range(30)]
    shown = review_messages(CRITIC, [*turns, {"role": "user", "content": "last question"}], "a")[1]["content"]
    assert len(shown) < 8000 and "earlier turns omitted" in shown and "last question" in shown


def fake_ctx() -> Any:
    params = ChatParams(messages=DIALOGUE, temperature=0.4, frequency_penalty=0.5, **USER_OPTIONS)
    return SimpleNamespace(params=params, mix=SimpleNamespace(max_tokens=512))


def test_review_roles_do_not_inherit_the_users_output_options() -> None:
    ctx = fake_ctx()
    for built in (with_messages(ctx, review_messages(CRITIC, DIALOGUE, "a")),
                  with_messages(ctx, judge_messages(DIALOGUE, ["a", "b"]), max_tokens=8)):
        assert built.stop is None and built.response_format is None and built.top_p is None
        assert built.frequency_penalty is None and built.temperature == 0.0 and built.seed == 7
    assert with_messages(ctx, review_messages(CRITIC, DIALOGUE, "a")).max_tokens == 512  # the mix's budget
    assert with_messages(ctx, judge_messages(DIALOGUE, ["a", "b"]), max_tokens=8).max_tokens == 8


def test_answer_writing_steps_keep_the_users_options() -> None:
    ctx = fake_ctx()
    for built in (with_messages(ctx, aggregate_messages(DIALOGUE, ["a"])),
                  with_messages(ctx, revise_messages(DIALOGUE, "a", "wrong"))):
        assert built.stop == ["END"] and built.response_format == {"type": "json_object"}
        assert built.max_tokens == 33 and built.top_p == 0.9 and built.temperature == 0.4


# --- the critic's verdict is a word; the last VERDICT line wins


def test_verdict_is_read_as_a_word() -> None:
    assert not approved("VERDICT: NOT APPROVED - the sum is wrong")
    assert not approved("VERDICT: DISAPPROVED") and not approved("Verdict: unapproved")
    assert not approved("VERDICT: REVISE. Earlier I said VERDICT: APPROVED but no")
    assert not approved("VERDICT: APPROVED\nstep 2 is off.\nVERDICT: NOT APPROVED")
    assert approved("VERDICT: NOT APPROVED\non reflection it is right.\n**VERDICT:** APPROVED")
    assert approved("Verdict: Approved") and approved("Final verdict: the answer is approved.")
    assert approved("## Verdict\nAPPROVED")
    assert approved("Looks good, approved.") and not approved("Not approved: 3 + 4 is 7.")


# --- the judge's verdict


def test_judge_pick_prefers_an_explicit_best_then_the_last_number_in_range() -> None:
    cases = {"BEST: 2": 2, "Answers 1 and 2 are wrong; 3 is best": 3, "answer 1 is wrong, the best is 3": 3,
             "I choose answer 3.": 3, "The best is #2": 2, "**2**": 2, "2": 2, "1 or 2? BEST: 1": 1,
             "7": None, "0": None, "-1": None, "3.9": None, "none of them": None}
    assert {text: judge_pick(text, 3) for text in cases} == cases


def judge_result(status: str, text: str = "", error: str | None = None) -> StepResult:
    return StepResult("judge", "judge", "j", status, text=text, error=error)


def test_an_unusable_or_failed_judge_leaves_a_note() -> None:
    assert judge_verdict(judge_result("ok", "BEST: 2"), 3) == (2, None)
    pick, note = judge_verdict(judge_result("ok", "7"), 3)
    assert pick is None and note is not None and "unusable" in note and "'7'" in note
    pick, note = judge_verdict(judge_result("failed", error="j: upstream error 400"), 3)
    assert pick is None and note is not None and "upstream error 400" in note
    assert judge_verdict(judge_result("skipped"), 3) == (None, None)  # fewer than two answers: not asked
    failed = StepResult("critique1", "critic", "c", "failed", error="c: timeout")
    assert critic_note(failed) is not None and "c: timeout" in critic_note(failed)  # type: ignore[operator]
    assert critic_note(StepResult("critique1", "critic", "c", "ok", text="VERDICT: REVISE")) is None


# --- one leading system message, alternating turns


def test_merge_turns_gives_one_system_message_and_alternating_turns() -> None:
    step1 = [{"role": "system", "content": "Draft an answer."}, *DIALOGUE]
    merged = merge_turns(step1)
    assert roles_of(merged) == ["system", "user", "assistant", "user"]
    assert merged[0]["content"] == f"Draft an answer.\n\n{SYSTEM}"
    step2 = merge_turns([*DIALOGUE, {"role": "user", "content": "Improve it.\n\nPrevious answer:\nZoé"}])
    assert well_formed(step2) and step2[-1]["content"] == "what is my name?\n\nImprove it.\n\nPrevious answer:\nZoé"
    tool_turn = [{"role": "user", "content": "a"}, {"role": "user", "content": "b", "name": "bob"}]
    assert merge_turns(tool_turn) == tool_turn  # a message with more than role and content is kept as sent


# --- end to end, through loopback stubs


class Fixed:
    """Ranks models in a fixed order (stands in for the gate)."""

    name = "fixed"

    def __init__(self, order: list[str]) -> None:
        self.order = order

    def decide(self, messages, cards, weights, live=None):  # type: ignore[no-untyped-def]
        names = [n for n in self.order if n in {c.name for c in cards}]
        return RouteDecision(model=names[0], ranking=names, probabilities={n: 1 / len(names) for n in names},
                             quality={n: 0.5 for n in names}, difficulty=0.5)


async def run_mix(stack: ExitStack, scripts: dict[str, Script], mix: str) -> Any:
    lines = ["models:"]
    for name, script in scripts.items():
        url = stack.enter_context(StubServer(script)).url
        lines.append(f"  {name}: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 0}}")
    m = Mixture(parse_config("\n".join(lines) + "\nmixes:\n  m: " + mix + "\n"), chooser=Fixed(list(scripts)))
    body = ChatCompletionRequest.model_validate({"model": "moai/m", "messages": DIALOGUE, **USER_OPTIONS})
    try:
        return await m.run(m.prepare(body))
    finally:
        await m.aclose()


def reviewer_call_is_clean(body: dict[str, Any]) -> bool:
    shown = body["messages"][-1]["content"]
    return (SYSTEM in shown and "my name is Zoé" in shown and body.get("max_tokens") != 33
            and not {"stop", "response_format", "top_p"} & set(body))


async def test_moa_layer2_proposers_and_aggregator_get_the_system_prompt() -> None:
    with ExitStack() as st:
        s = {"a": Script(reply="A"), "b": Script(reply="B"), "agg": Script(reply="final")}
        await run_mix(st, s, "{strategy: moa, layers: 2, proposers: [a, b], aggregator: agg}")
    for body in [s["a"].seen[1], s["b"].seen[1], s["agg"].seen[0]]:
        assert well_formed(body["messages"]) and body["messages"][0]["content"].startswith(SYSTEM)
    assert s["agg"].seen[0]["response_format"] == {"type": "json_object"} and s["agg"].seen[0]["stop"] == ["END"]


async def test_critique_revises_on_not_approved_and_its_critic_sees_the_conversation() -> None:
    with ExitStack() as st:
        s = {"w": Script(replies=["draft", "revised"]), "c": Script(reply="VERDICT: NOT APPROVED - wrong name")}
        ex = await run_mix(st, s, "{strategy: critique, writer: w, critic: c, rounds: 1}")
    assert ex.answer.text == "revised" and s["w"].calls == 2
    assert reviewer_call_is_clean(s["c"].seen[0]) and s["c"].seen[0]["max_tokens"] == 512
    assert s["w"].seen[1]["stop"] == ["END"] and s["w"].seen[1]["max_tokens"] == 33  # the reviser writes the answer


async def test_fanout_judge_sees_the_conversation_without_the_users_options() -> None:
    with ExitStack() as st:
        s = {"a": Script(reply="A"), "b": Script(reply="B"), "j": Script(reply="BEST: 2")}
        ex = await run_mix(st, s, "{strategy: fanout, proposers: [a, b], judge: j}")
    assert ex.answer.text == "B" and reviewer_call_is_clean(s["j"].seen[0])


async def test_chain_steps_send_one_system_message_and_alternating_turns() -> None:
    with ExitStack() as st:
        s = {"a": Script(reply="first"), "b": Script(reply="second")}
        await run_mix(st, s, "{strategy: chain, steps: [{model: a, instruction: Draft.}, "
                             "{model: b, instruction: Improve.}]}")
    assert well_formed(s["a"].seen[0]["messages"]) and well_formed(s["b"].seen[0]["messages"])
    assert s["a"].seen[0]["messages"][0]["content"] == f"Draft.\n\n{SYSTEM}"
