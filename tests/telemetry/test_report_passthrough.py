"""`moai report` counts upstream calls only: a step that reused an earlier answer (the judge's pick, passed on as
the answer) is no call of its model, and adds nothing to its tokens, spend or latencies."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

from stub_openai import Script

from moai.config import parse_config
from moai.mixture import Mixture
from moai.telemetry.report import build_report
from moai.telemetry.store import TelemetryStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "strategies"))
from test_plan_fallbacks import Fixed, ask, setup  # noqa: E402


async def test_a_judges_pick_is_one_call_of_its_model(tmp_path: Path) -> None:
    store = TelemetryStore(f"sqlite:///{tmp_path / 'r.db'}")
    mix = "  m: {strategy: fanout, proposers: [alpha, beta], judge: j}\n"
    with ExitStack() as st:
        scripts = {"alpha": Script(reply="one two three"), "beta": Script(reply="four five"), "j": Script(reply="1")}
        m = Mixture(parse_config(setup(st, scripts, mix)), store=store, chooser=Fixed(["alpha", "beta", "j"]))
        try:
            ex, summary, _ = await ask(m)
        finally:
            await m.aclose()
    assert ex.answer.text == "one two three" and ex.answer.model == "alpha"
    assert "passthrough" in {t["status"] for t in summary["trace"]}  # the answer reused alpha's
    (req,) = store.requests()
    rows = {r["model"]: r for r in build_report(store, None).model_rows()}
    assert {m: r["calls"] for m, r in rows.items()} == {n: s.calls for n, s in scripts.items()} == {
        "alpha": 1, "beta": 1, "j": 1}
    alpha = [c for c in req.calls if c.model == "alpha" and c.status == "ok"]
    assert rows["alpha"]["tokens_out"] == sum(c.completion_tokens for c in alpha) == 3
    assert rows["alpha"]["tokens_in"] == sum(c.prompt_tokens for c in alpha)
    assert rows["alpha"]["cost_usd"] == sum(c.cost_usd for c in alpha)
    assert rows["alpha"]["p50_ms"] == alpha[0].latency_ms  # its one call's latency, no reuse at 0 ms beside it
