"""A step's ``moai.trace`` entry counts everything the step was charged: what the upstream billed for its failed
tries (a prompt read before a timeout) as well as its answer, as its call rows, ``usage`` and ``usage_by_model``
count them, each try once. A timed-out proposer's entry said 0 tokens and $0 while the request paid its prompt."""

from __future__ import annotations

from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from stub_openai import Script, StubServer
from test_role_prompts import Fixed

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.outcome import Execution
from moai.telemetry.records import RequestRecord
from moai.telemetry.store import TelemetryStore

PROMPT = "word " * 80  # ~104 tokens as moai estimates a prompt: a timed-out try is billed that
PRICE = 1000  # USD per Mtok, in and out


def card(name: str, url: str, more: str = "") -> str:
    return (f"  {name}: {{provider: openai_compat, endpoint: '{url}', privacy: private, max_retries: 0, "
            f"price: {{input_per_mtok: {PRICE}, output_per_mtok: {PRICE}}}{more}}}")


async def run(tmp: Path, scripts: dict[str, Script], mix: str, slow: str, stream: bool = False) -> tuple[
        Execution, dict[str, Any], RequestRecord]:
    """Runs ``mix`` over one stub per script, ``slow``'s card timing out after 0.3 s; returns the outcome, its
    ``moai`` summary and its database row."""
    store = TelemetryStore(f"sqlite:///{tmp / 'moai.db'}")
    with ExitStack() as stack:
        lines = ["models:"]
        for name, script in scripts.items():
            url = stack.enter_context(StubServer(script)).url
            lines.append(card(name, url, ", timeout_s: 0.3" if name == slow else ""))
        m = Mixture(parse_config("\n".join(lines) + f"\nmixes:\n  m: {mix}\n"), store=store,
                    chooser=Fixed(list(scripts)))
        prep = m.prepare(ChatCompletionRequest.model_validate(
            {"model": "moai/m", "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}))
        try:
            items = [i async for i in m.stream(prep, live=stream)]
        finally:
            await m.aclose()  # flushes the row
    ex = items[-1]
    assert isinstance(ex, Execution)
    row = store.get(prep.id)
    store.close()
    assert row is not None
    return ex, m.summary(prep, ex), row


def assert_entries_add_up(summary: dict[str, Any], ex: Execution, row: RequestRecord) -> None:
    """Each entry is its step's call rows; the entries are the request's usage and cost, each try counted once."""
    rows: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for c in row.calls:
        rows[c.step][0] += c.prompt_tokens
        rows[c.step][1] += c.completion_tokens
        rows[c.step][2] += c.cost_usd
    for t in summary["trace"]:
        have = rows.get(t["step"], [0, 0, 0.0])
        assert (t["tokens"]["input"], t["tokens"]["output"]) == (have[0], have[1]), t
        assert t["cost_usd"] == pytest.approx(have[2], abs=1e-8), t
    trace = summary["trace"]
    assert sum(t["tokens"]["input"] for t in trace) == ex.usage.prompt_tokens == row.prompt_tokens
    assert sum(t["tokens"]["output"] for t in trace) == ex.usage.completion_tokens == row.completion_tokens
    assert sum(t["cost_usd"] for t in trace) == pytest.approx(ex.cost_usd, abs=1e-8)
    by_model = summary["usage_by_model"]
    assert sum(u["input"] for u in by_model.values()) == ex.usage.prompt_tokens


async def test_a_timed_out_proposer_shows_the_prompt_it_was_billed(tmp_path: Path) -> None:
    scripts = {"p": Script(reply="from p"), "q": Script(reply="late", delay_s=1.5), "agg": Script(reply="done")}
    mix = "{strategy: moa, layers: 1, proposers: [p, q], aggregator: agg, fallbacks: []}"
    ex, summary, row = await run(tmp_path, scripts, mix, slow="q")
    assert ex.answer.text == "done"
    (entry,) = [t for t in summary["trace"] if t["model"] == "q"]
    (attempt,) = entry["attempts"]
    assert entry["status"] == "failed" and "timed out" in entry["error"]
    billed = attempt["tokens"]["input"]
    assert billed > 0 and summary["usage_by_model"]["q"]["input"] == billed
    assert entry["tokens"] == {"input": billed, "output": 0}
    assert entry["cost_usd"] == pytest.approx(billed * PRICE / 1e6) and entry["energy_kwh"] > 0
    assert_entries_add_up(summary, ex, row)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_step_that_fell_back_counts_its_timed_out_try_once(tmp_path: Path, stream: bool) -> None:
    scripts = {"first": Script(reply="late", delay_s=1.5), "backup": Script(reply="one two")}
    mix = "{strategy: route, models: [first, backup], fallbacks: [backup]}"
    ex, summary, row = await run(tmp_path, scripts, mix, slow="first", stream=stream)
    assert ex.answer.model == "backup" and ex.answer.text == "one two"
    (entry,) = summary["trace"]
    timed_out, answered = entry["attempts"]
    assert timed_out["model"] == "first" and answered["model"] == "backup"
    billed = timed_out["tokens"]["input"]
    assert entry["tokens"]["input"] == billed + ex.answer.usage.prompt_tokens
    assert_entries_add_up(summary, ex, row)
