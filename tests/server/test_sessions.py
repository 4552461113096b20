"""Multi-turn sessions: a conversation stays on its model, and the trace says so."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from servers import start_moai, stop
from stub_openai import Script, StubServer

pytestmark = pytest.mark.integration

HARD = ("Prove step by step that the algorithm below is correct, analyze its complexity, then implement and "
        "optimize it: " + "def f(x): return x * 2 + 1  # explain why " * 30)


def small_and_big(small_url: str, big_url: str, mixes: str = "") -> str:
    """Mix instructions with a small and a big model (the rule chooser tells them apart by size) and a route mix."""
    return f"""
models:
  small: {{provider: openai_compat, endpoint: "{small_url}", privacy: private, params_b: 1, max_retries: 0}}
  big: {{provider: openai_compat, endpoint: "{big_url}", privacy: private, params_b: 70, max_retries: 0}}
mixes:
  default: {{strategy: route}}
{mixes}"""


def test_three_turn_session_stays_on_one_model(tmp_path: Path) -> None:
    with StubServer(Script(reply="small")) as small, StubServer(Script(reply="big")) as big:
        cfg = small_and_big(small.url, big.url, "  growing: {strategy: route, sessions: escalate}\n")
        srv = start_moai(cfg, tmp_path)
        try:
            def turn(mix: str, history: list[dict], text: str, session: str | None, user: str | None = None):
                history.append({"role": "user", "content": text})
                body = {"model": f"moai/{mix}", "messages": history}
                if user:
                    body["user"] = user
                headers = {"x-moai-session": session} if session else {}
                r = httpx.post(srv.url + "/chat/completions", json=body, headers=headers, timeout=30).json()
                history.append({"role": "assistant", "content": r["choices"][0]["message"]["content"]})
                return r["moai"]

            # without a session the hard turn goes to the big model
            assert turn("default", [], HARD, None)["model"] == "big"
            history: list[dict] = []
            models = [turn("default", history, t, "conv-1")["model"] for t in ("Hi!", "Thanks. And you?")]
            third = turn("default", history, HARD, "conv-1")
            assert models + [third["model"]] == ["small", "small", "small"]
            assert any(r.startswith("session: sticky — stays on small") for r in third["reason"])
            # the `user` field works as a session key too, and an escalate mix may move up (never down)
            h2: list[dict] = []
            assert turn("growing", h2, "Hi!", None, user="u-7")["model"] == "small"
            up = turn("growing", h2, HARD, None, user="u-7")
            assert up["model"] == "big" and any(r.startswith("session: escalated") for r in up["reason"])
            assert turn("growing", h2, "ok thanks", None, user="u-7")["model"] == "big"
            # an easy follow-up with the history trimmed (as chat clients do) does not bounce back down
            easy = turn("growing", [], "one more easy thing", None, user="u-7")
            assert easy["model"] == "big" and any("not stronger than big" in r for r in easy["reason"])
        finally:
            stop(srv.proc)
