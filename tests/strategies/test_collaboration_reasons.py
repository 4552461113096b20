"""What ``moai.reason`` and the telemetry say of a collaboration: the gate's route pick is not presented as the
answer's model when it took no part, a note is said once, and a step that made no call (a judge with one answer
to judge, the pick that passes that answer on) has no call row."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from stub_openai import Script, StubServer
from test_plan_fallbacks import Fixed, ask, setup

from moai.config import parse_config
from moai.mixture import Mixture
from moai.telemetry.store import TelemetryStore


class Gate(Fixed):
    """Ranks models in a fixed order and gives the gate policy's first reason line (its pick's utility)."""

    def decide(self, messages, cards, weights, live=None):  # type: ignore[no-untyped-def]
        decision = super().decide(messages, cards, weights, live)
        decision.reasons = [f"{decision.model}: utility 0.500 = quality 0.500 - cost $0.00000 (weighted)"]
        return decision


async def reasons_of(mix: str, scripts: dict[str, Script], order: list[str]) -> list[str]:
    with ExitStack() as st:
        m = Mixture(parse_config(setup(st, scripts, mix)), chooser=Gate(order))
        try:
            _, summary, _ = await ask(m)
        finally:
            await m.aclose()
    return summary["reason"]


async def test_a_gate_pick_that_took_no_part_is_not_the_first_reason() -> None:
    """The gate ranks ``top`` first, but the fan-out's proposers and aggregator are other models: the first line
    says that ``top`` took no part, and which model answered."""
    scripts = {"top": Script(reply="top"), "a": Script(reply="from a"), "b": Script(reply="from b"),
               "agg": Script(reply="merged")}
    reasons = await reasons_of("  m: {strategy: fanout, proposers: [a, b], aggregator: agg}\n", scripts,
                               ["top", "a", "b", "agg"])
    assert scripts["top"].calls == 0
    assert not reasons[0].startswith("top: "), reasons
    assert reasons[0].startswith("gate: ranked top first (utility 0.500") and "took no part in this fanout" in \
        reasons[0] and reasons[0].endswith("agg answered"), reasons


async def test_a_gate_pick_that_took_part_keeps_its_reason() -> None:
    scripts = {"a": Script(reply="from a"), "b": Script(reply="from b"), "agg": Script(reply="merged")}
    reasons = await reasons_of("  m: {strategy: moa, proposers: [a, b], aggregator: agg}\n", scripts,
                               ["a", "b", "agg"])
    assert reasons[0].startswith("a: utility 0.500"), reasons


async def test_a_note_is_said_once() -> None:
    """Two links pinned to the same ineligible model noted its exclusion, and the gate's stand-in, twice each."""
    with ExitStack() as st:
        lines = ["models:"]
        for n, tier in (("a", "private"), ("x", "cloud")):
            url = st.enter_context(StubServer(Script(reply=f"from {n}"))).url
            lines.append(f"  {n}: {{provider: openai_compat, endpoint: '{url}', privacy: {tier}, max_retries: 0}}")
        cfg = "\n".join(lines) + ("\nmixes:\n  m: {strategy: chain, constraints: {max_privacy: private}, "
                                  "steps: [{model: x, instruction: D}, {model: x, instruction: F}]}\n")
        m = Mixture(parse_config(cfg), chooser=Gate(["a", "x"]))
        try:
            _, summary, _ = await ask(m)
        finally:
            await m.aclose()
    reasons = summary["reason"]
    assert len(reasons) == len(set(reasons)), reasons
    assert "role: the gate chose a instead" in reasons


async def test_a_judge_with_one_answer_makes_no_call_row(tmp_path: Path) -> None:
    """Two of three proposers fail: the judge is not asked and the pick passes the one answer on. Neither made a
    call, so neither has a row among the request's calls (the pick's read as a 0-token call of the proposer's
    model); the judge's trace entry says why it was skipped."""
    store = TelemetryStore(f"sqlite:///{tmp_path / 'r.db'}")
    mix = "  m: {strategy: fanout, proposers: [a, b, c], judge: j}\n"
    with ExitStack() as st:
        scripts = {"a": Script(reply="from a"), "b": Script(fail_times=99), "c": Script(fail_times=99),
                   "j": Script(reply="1")}
        m = Mixture(parse_config(setup(st, scripts, mix)), store=store, chooser=Gate(["a", "b", "c", "j"]))
        try:
            ex, summary, _ = await ask(m)
        finally:
            await m.aclose()
    assert ex.answer.text == "from a" and scripts["j"].calls == 0
    (req,) = store.requests()
    rows = [(c.step, c.model, c.status) for c in req.calls]
    assert sorted(rows) == [("p1.1", "a", "ok"), ("p1.2", "b", "failed"), ("p1.3", "c", "failed")], rows
    judge = next(t for t in summary["trace"] if t["step"] == "judge")
    assert judge["status"] == "skipped" and "nothing to judge" in judge["error"]


def stub_models(st: ExitStack, scripts: dict[str, Script], sizes: dict[str, float] | None = None) -> str:
    lines = ["models:"]
    for n, s in scripts.items():
        url = st.enter_context(StubServer(s)).url
        size = f", params_b: {sizes[n]}" if sizes and n in sizes else ""
        lines.append(f"  {n}: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 0{size}}}")
    return "\n".join(lines) + "\n"


async def test_the_rule_based_choosers_pick_is_not_presented_as_the_answers_model() -> None:
    """The shipped rule-based chooser (what mixes of other models get) picks ``top``, a small model for an easy
    query; the fan-out's roles are other models. Its line for the pick says ``top`` took no part."""
    from moai.gate.rules import RuleChooser

    scripts = {"top": Script(reply="top"), "a": Script(reply="from a"), "b": Script(reply="from b"),
               "agg": Script(reply="merged")}
    with ExitStack() as st:
        cfg = stub_models(st, scripts, {"top": 1, "a": 70, "b": 70, "agg": 70})
        cfg += "mixes:\n  m: {strategy: fanout, proposers: [a, b], aggregator: agg}\n"
        m = Mixture(parse_config(cfg), chooser=RuleChooser())
        try:
            ex, summary, _ = await ask(m)
        finally:
            await m.aclose()
    assert ex.answer.model == "agg" and scripts["top"].calls == 0
    reasons = summary["reason"]
    assert not any(r.startswith("top: ") or r.startswith("chose top") for r in reasons), reasons
    line = next(r for r in reasons if r.startswith("gate: ranked top first"))
    assert "highest utility" in line and "took no part in this fanout" in line and line.endswith("agg answered")


async def test_the_learned_gates_pick_is_not_presented_as_the_answers_model() -> None:
    """The shipped gate opens its reasons with its source ("gate default"), its pick's line second: the MoA's
    roles, the two other models, leave its pick out, and that line says so."""
    from moai.gate.runtime import DEFAULT_GATE_DIR, load_gate_dir

    gate = load_gate_dir(DEFAULT_GATE_DIR)
    names = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    scripts = {n: Script(reply=f"from {n}") for n in names}
    with ExitStack() as st:
        cfg = stub_models(st, scripts)
        probe = parse_config(cfg + "mixes:\n  m: {strategy: route}\n")
        pick = gate.decide([{"role": "user", "content": "q"}], list(probe.models.values()),
                           probe.mixes["m"].weights).model
        others = [n for n in names if n != pick]
        cfg += f"mixes:\n  m: {{strategy: moa, proposers: [{others[0]}, {others[1]}], aggregator: {others[1]}}}\n"
        m = Mixture(parse_config(cfg), chooser=gate)
        try:
            _, summary, _ = await ask(m)
        finally:
            await m.aclose()
    reasons = summary["reason"]
    assert reasons[0] == "gate default" and scripts[pick].calls == 0, reasons
    assert not any(r.startswith(f"{pick}: ") for r in reasons), reasons
    line = next(r for r in reasons if r.startswith(f"gate: ranked {pick} first (utility "))
    assert "took no part in this moa" in line and line.endswith(f"{others[1]} answered"), line


async def test_a_proposer_whose_model_failed_in_an_earlier_layer_says_so() -> None:
    """``b`` fails in layer 1 (a 500): its layer-2 proposer is left out for that, not for a circuit or a rate
    limit (its circuit is closed)."""
    scripts = {"b": Script(fail_times=1, reply="from b"), "c": Script(reply="from c"), "d": Script(reply="from d")}
    with ExitStack() as st:
        cfg = setup(st, scripts, "  m: {strategy: moa, layers: 2, proposers: [b, c, d], aggregator: d, "
                                 "fallbacks: []}\n")
        m = Mixture(parse_config(cfg), chooser=Gate(["b", "c", "d"]))
        try:
            _, summary, _ = await ask(m)
        finally:
            await m.aclose()
    entry = next(t for t in summary["trace"] if t["step"] == "p2.1")
    assert entry["status"] == "skipped" and entry["model"] == "b", entry
    assert entry["error"] == "left out: b failed earlier in this request", entry
    assert scripts["b"].calls == 1
