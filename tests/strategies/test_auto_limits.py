"""An ``auto`` mix hands hard queries to its collaboration mix: that mix's own pool and limits must still hold.

A collaboration mix's ``local_only`` policy was replaced by the auto mix's (``allow``), so a health question with a
social security number reached a cloud model; and its ``models`` were ignored, so models it never names answered.
"""

from __future__ import annotations

import json
from contextlib import ExitStack

import pytest
from stub_openai import Script, StubServer
from test_strategies import Fixed

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.openai_schema import ChatCompletionRequest
from moai.strategies.context import NoEligibleModel

SENSITIVE = "My doctor diagnosed me with HIV and my SSN is 078-05-1120. What should I tell my employer?"
TIERS = {"loc": "local", "cl": "cloud", "cl2": "cloud"}


def config(stack: ExitStack, scripts: dict[str, Script], mixes: str) -> str:
    lines = ["models:"]
    for name, script in scripts.items():
        url = stack.enter_context(StubServer(script)).url
        lines.append(f"  {name}: {{provider: openai_compat, endpoint: '{url}', privacy: {TIERS[name]}, "
                     "max_retries: 0}")
    return "\n".join(lines) + "\nmixes:\n" + mixes


MIXES = """\
  cloudmoa: {strategy: moa, proposers: [loc, cl], aggregator: cl}
  strictmoa: {strategy: moa, proposers: [loc, cl], aggregator: cl, constraints: {sensitive_data: local_only}}
  autoallow: {strategy: auto, collaborate: strictmoa, difficulty_threshold: 0}
  autolocal: {strategy: auto, collaborate: cloudmoa, difficulty_threshold: 0, constraints: {sensitive_data: local_only}}
  twice: {strategy: auto, collaborate: autolocal, difficulty_threshold: 0}
  rt: {strategy: route, models: [cl2]}
  aroute: {strategy: auto, collaborate: rt, difficulty_threshold: 0}
  easy: {strategy: auto, collaborate: strictmoa, difficulty_threshold: 0.95}
"""


async def ask(cfg: str, mix: str, text: str) -> tuple[list[str], list[str]]:
    """(the models called, in order; the reasons) for one request to ``mix``."""
    m = Mixture(parse_config(cfg), chooser=Fixed(["cl", "cl2", "loc"], difficulty=0.9))
    try:
        body = ChatCompletionRequest.model_validate({"model": f"moai/{mix}",
                                                     "messages": [{"role": "user", "content": text}]})
        prep = m.prepare(body)
        ex = await m.run(prep)
        return [r.model for r in ex.results if r.model], m.summary(prep, ex)["reason"]
    finally:
        await m.aclose()


@pytest.mark.parametrize("mix", ["autoallow", "autolocal", "twice", "easy"])
async def test_sensitive_data_stays_local_whichever_mix_of_the_chain_asks_it(mix: str) -> None:
    with ExitStack() as st:
        scripts = {"loc": Script(reply="L"), "cl": Script(reply="C"), "cl2": Script(reply="C2")}
        called, reasons = await ask(config(st, scripts, MIXES), mix, SENSITIVE)
    assert called and set(called) == {"loc"}, (called, reasons)
    assert scripts["cl"].calls == scripts["cl2"].calls == 0
    assert not any("078-05-1120" in json.dumps(seen) for s in ("cl", "cl2") for seen in scripts[s].seen)


async def test_without_sensitive_data_the_collaboration_mix_runs_as_configured() -> None:
    with ExitStack() as st:
        scripts = {"loc": Script(reply="L"), "cl": Script(reply="C"), "cl2": Script(reply="C2")}
        called, reasons = await ask(config(st, scripts, MIXES), "autoallow", "What is the capital of France?")
    assert sorted(called) == ["cl", "cl", "loc"], (called, reasons)  # two proposers, then the aggregator


async def test_the_collaboration_mix_uses_only_its_own_models() -> None:
    with ExitStack() as st:
        scripts = {"loc": Script(reply="L"), "cl": Script(reply="C"), "cl2": Script(reply="C2")}
        called, reasons = await ask(config(st, scripts, MIXES), "aroute", "What is the capital of France?")
    assert called == ["cl2"], (called, reasons)


async def test_a_collaboration_mix_with_no_model_left_falls_back_to_one_model() -> None:
    mixes = MIXES + "  onlycloud: {strategy: route, models: [cl2], constraints: {sensitive_data: local_only}}\n" \
                    "  a3: {strategy: auto, collaborate: onlycloud, difficulty_threshold: 0}\n"
    with ExitStack() as st:
        scripts = {"loc": Script(reply="L"), "cl": Script(reply="C"), "cl2": Script(reply="C2")}
        called, reasons = await ask(config(st, scripts, mixes), "a3", SENSITIVE)
    assert called == ["loc"], (called, reasons)
    assert any("no model of onlycloud may take this request" in r for r in reasons), reasons


async def test_a_chain_that_leaves_no_trusted_model_is_refused() -> None:
    mixes = "  onlycloud: {strategy: route, models: [cl], constraints: {sensitive_data: local_only}}\n" \
            "  a4: {strategy: auto, models: [cl], collaborate: onlycloud, difficulty_threshold: 0}\n"
    with ExitStack() as st:
        scripts = {"loc": Script(reply="L"), "cl": Script(reply="C"), "cl2": Script(reply="C2")}
        with pytest.raises(NoEligibleModel) as e:
            await ask(config(st, scripts, mixes), "a4", SENSITIVE)
    assert e.value.code == "no_trusted_model" and scripts["cl"].calls == 0


async def test_a_collaboration_mix_with_a_role_no_model_may_play_falls_back_to_one_model() -> None:
    mixes = "  casc: {strategy: cascade, models: [loc, cl], cascade: [cl], constraints: {max_privacy: private}}\n" \
            "  a5: {strategy: auto, collaborate: casc, difficulty_threshold: 0}\n"
    with ExitStack() as st:
        scripts = {"loc": Script(reply="L"), "cl": Script(reply="C"), "cl2": Script(reply="C2")}
        called, reasons = await ask(config(st, scripts, mixes), "a5", "What is the capital of France?")
    assert called == ["cl"], (called, reasons)  # the auto mix's own choice, unconstrained
    assert any("casc cannot run" in r and "no eligible model for the cascade" in r for r in reasons), reasons
