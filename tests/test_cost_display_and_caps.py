"""Money as it is capped, shown and priced: a mix's ``max_cost_usd`` counts the instruction text moai itself sends
to its later steps; ``moai report`` and ``moai keys list`` keep a small spend's figures; a price written per token
is caught, refused under LiteLLM's key and warned about in the per-million field."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cli_support import one_line_error
from strategies.test_strategies import Fixed, setup
from stub_openai import Script
from telemetry.test_report_cli import request
from typer.testing import CliRunner

from moai.cli import app
from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest
from moai.telemetry.store import TelemetryStore

MAX_TOKENS = 50
# every answer as long as its limit allows at ~4 characters a token: the worst case the estimate is for
WORST = "word" * MAX_TOKENS
PRICES = {"a": 1.0, "b": 3.0, "c": 10.0}  # USD per million tokens, in and out


def billed(body: dict[str, Any], price: float) -> float:
    """What one call the stub received costs at its worst: its prompt counted as the executor counts a prompt
    (~4 characters a token, 4 a message), and the whole completion limit it was sent."""
    msgs = body["messages"]
    prompt = sum(len(str(m.get("content") or "")) for m in msgs) // 4 + 4 * len(msgs)
    return (prompt + (body.get("max_tokens") or body.get("max_completion_tokens"))) * price / 1e6


async def estimated_and_billed(mix: str) -> tuple[float, float, list[str]]:
    """The plan's estimated worst-case cost, what its calls cost run against worst-case answers, and its reasons."""
    from moai.strategies.budget import estimate

    with ExitStack() as st:
        scripts = {n: Script(reply=WORST) for n in PRICES}
        m = Mixture(parse_config(setup(st, scripts, mix, PRICES)), chooser=Fixed(list(PRICES)))
        body = ChatCompletionRequest.model_validate({"model": "moai/m", "messages": [{"role": "user", "content": "q"}]})
        prep = m.prepare(body)
        cost, _ = estimate(prep.ctx, prep.plan)
        ex = await m.run(prep)
        reasons = m.summary(prep, ex)["reason"]
        await m.aclose()
    return cost, sum(billed(b, PRICES[n]) for n, s in scripts.items() for b in s.seen), reasons


@pytest.mark.parametrize("mix", [
    "{strategy: moa, layers: 2, proposers: [a, b], aggregator: c}",
    "{strategy: fanout, proposers: [a, b], aggregator: c}",
    "{strategy: fanout, proposers: [a, b], judge: c}",
    "{strategy: chain, steps: [{model: a}, {model: b}, {model: c}]}",
    "{strategy: critique, writer: a, critic: c, rounds: 2}",
    "{strategy: cascade, cascade: [a, b, c], scorer: judge, judge: c, threshold: 0.9}",
], ids=["moa", "fanout-aggregator", "fanout-judge", "chain", "critique", "cascade-judge"])
async def test_the_worst_case_estimate_is_what_the_later_steps_send(mix: str) -> None:
    """Each later step reads the answers inside moai's own instructions: the estimate counts that text as sent
    (not the answers alone), and counts each step at its own limit (a judge's, a grader's few tokens)."""
    cost, spent, _ = await estimated_and_billed(f"  m: {{{mix[1:-1]}, max_tokens: {MAX_TOKENS}}}\n")
    assert spent <= cost <= spent * 1.02, (cost, spent)


async def test_a_capped_moa_keeps_to_its_cap() -> None:
    """Two proposers and an aggregator cost more than the cap once the aggregator's instructions are counted:
    one proposer goes, and what the plan sends stays within the cap."""
    cap = 0.002
    mix = (f"  m: {{strategy: moa, proposers: [a, b], aggregator: c, max_tokens: {MAX_TOKENS},\n"
           f"      constraints: {{max_cost_usd: {cap}}}}}\n")
    cost, spent, reasons = await estimated_and_billed(mix)
    assert spent <= cost <= cap, (cost, spent)
    assert any(r.startswith("budget: dropped proposer b") for r in reasons), reasons


@pytest.mark.parametrize("mix", [
    "{strategy: route, models: [a, c], fallbacks: [c]}",
    "{strategy: cascade, cascade: [c, a], scorer: gate, threshold: 0.9}",
], ids=["route-fallback", "cascade-skipped-model"])
async def test_a_budget_holds_the_dearest_model_a_step_may_fall_back_to(mix: str) -> None:
    """a fails and its step's next model c, ten times dearer, answers (a route's fallback; a cascade's model skipped
    for its low predicted quality, behind its last try): the hold (``worst_case_usd``) covers what c is billed,
    while ``estimate`` still prices the step on a, the model the plan is expected to call (limits are fitted on it)."""
    from moai.strategies.budget import estimate, worst_case_usd

    with ExitStack() as st:
        scripts = {"a": Script(reply=WORST, fail_times=1), "c": Script(reply=WORST)}
        cfg = setup(st, scripts, f"  m: {{{mix[1:-1]}, max_tokens: {MAX_TOKENS}}}\n", PRICES)
        m = Mixture(parse_config(cfg), chooser=Fixed(["a", "c"], quality={"a": 0.1, "c": 0.1}))
        body = ChatCompletionRequest.model_validate({"model": "moai/m", "messages": [{"role": "user", "content": "q"}]})
        prep = m.prepare(body)
        assert [s.models for s in prep.plan.steps] == [["a", "c"]]
        expected, _ = estimate(prep.ctx, prep.plan)
        held = worst_case_usd(prep.ctx, prep.plan)
        ex = await m.run(prep)
        await m.aclose()
    assert ex.answer.model == "c" and scripts["a"].calls == 1
    spent = sum(billed(b, PRICES["c"]) for b in scripts["c"].seen)
    assert expected < spent <= held <= spent * 1.02, (expected, spent, held)
    assert expected == pytest.approx(held * PRICES["a"] / PRICES["c"])  # the same calls, priced on a


# ---------------------------------------------------------------- money shown


def test_report_shows_every_cost_with_its_figures(tmp_path: Path) -> None:
    """Cents would show $0.0144 as 0.01 and $0.096 as 0.10 beside 0.0048; other columns keep their format."""
    store = TelemetryStore(f"sqlite:///{tmp_path / 'r.db'}")
    recs = [request(i, model=f"m{i}") for i in range(3)]
    for rec, usd in zip(recs, (0.0144, 0.096, 0.0048), strict=True):
        rec.cost_usd = usd
        rec.calls[0].cost_usd = usd
        rec.calls[0].latency_ms = 1234.5
    store.write_many(recs)
    r = CliRunner().invoke(app, ["report", "--database-url", str(store.url)], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    header = next(ln for ln in lines if "┃ model " in ln)  # the models table's header
    cols = [c.strip() for c in header.split("┃")[1:-1]]
    rows = {ln.split("│")[1].strip(): dict(zip(cols, (c.strip() for c in ln.split("│")[1:-1]), strict=True))
            for ln in lines[lines.index(header):] if ln.count("│") == len(cols) + 1
            and ln.split("│")[1].strip() in ("m0", "m1", "m2")}
    assert [rows[m]["cost_usd"] for m in ("m0", "m1", "m2")] == ["0.0144", "0.096", "0.0048"], r.output
    assert rows["m0"]["p50_ms"] == "1,234.50", r.output  # latency as before


def test_keys_list_shows_a_small_spend(tmp_path: Path) -> None:
    """$0.000025 spent today is not $0.0000."""
    from moai.server.auth import create_key

    store = TelemetryStore(f"sqlite:///{tmp_path / 'k.db'}")
    key, _ = create_key(store, "tiny")
    rec = request(1, at=datetime.now(UTC))
    rec.api_key, rec.cost_usd = key.id, 2.5e-5
    store.write(rec)
    r = CliRunner().invoke(app, ["keys", "list", "--database-url", str(store.url)], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert r.output.count("$0.000025") == 2 and "$0.0000 " not in r.output, r.output


# ---------------------------------------------------------------- prices per million tokens


def _config(tmp_path: Path, price: str) -> str:
    path = tmp_path / "mix.yaml"
    path.write_text("models:\n"
                    f"  m: {{provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1', price: {{{price}}}}}\n"
                    "  free: {provider: openai_compat, endpoint: 'http://127.0.0.1:9/v1', price: {input_per_mtok: 0}}\n"
                    "mixes:\n  default: {strategy: route}\n")
    return str(path)


def test_a_per_token_price_key_is_refused_with_the_figure_to_write(tmp_path: Path) -> None:
    path = _config(tmp_path, "input_cost_per_token: 0.0000025, output_per_mtok: 10")
    r = CliRunner().invoke(app, ["config", "check", path])
    one_line_error(r, "models.m.price.input_cost_per_token", "per million tokens", "input_per_mtok: 2.5")


def test_a_per_token_figure_in_a_per_million_field_is_warned_about_not_refused(tmp_path: Path) -> None:
    """2.5e-06 per million tokens is no real price (a per-token one, 10^6 times too low); 0 (free) and a real
    cheap price are silent; the config stays valid."""
    from moai.config import load_config, price_warnings

    path = _config(tmp_path, "input_per_mtok: 2.5e-06, output_per_mtok: 0.01")
    warned = price_warnings(load_config(path))
    assert len(warned) == 1 and warned[0].startswith("models.m.price.input_per_mtok: 2.5e-06"), warned
    assert "per million tokens" in warned[0] and "write 2.5" in warned[0], warned
    assert CliRunner().invoke(app, ["config", "check", path]).exit_code == 0


def test_a_budget_hold_counts_the_tools_offered_as_the_call_is_billed() -> None:
    """Tool definitions are read with the prompt and billed with it (estimated where the upstream reports no usage):
    the hold covers them too, or a budgeted key could overspend on tool-heavy requests."""
    from moai.providers.base import estimate_prompt_tokens
    from moai.strategies.budget import worst_case_usd

    tools = [{"type": "function", "function": {"name": f"tool_{i}", "description": "Does a thing. " * 40,
                                               "parameters": {"type": "object", "properties": {}}}}
             for i in range(5)]
    with ExitStack() as st:
        cfg = setup(st, {"a": Script(reply="ok")}, "  m: {strategy: route, models: [a], max_tokens: 50}\n",
                    {"a": 1.0}).replace("privacy: private,", "privacy: private, supports_tools: true,")
        m = Mixture(parse_config(cfg), chooser=Fixed(["a"]))
        held = {}
        for name, extra in (("bare", {}), ("tools", {"tools": tools})):
            prep = m.prepare(ChatCompletionRequest.model_validate(
                {"model": "moai/m", "messages": [{"role": "user", "content": "q"}], **extra}))
            held[name] = worst_case_usd(prep.ctx, prep.plan)
        billed_tools = estimate_prompt_tokens(prep.ctx.params) - estimate_prompt_tokens(
            prep.ctx.params.__class__(messages=prep.ctx.params.messages))
    assert billed_tools > 5 * 100
    assert held["tools"] - held["bare"] == pytest.approx(billed_tools * 1.0 / 1e6)
