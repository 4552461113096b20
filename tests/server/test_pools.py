"""Per-request pools and caps (`moai` body field) narrow or reweight the choice, never widen it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from servers import start_moai, stop
from stub_openai import StubServer

pytestmark = pytest.mark.integration


def test_request_pools_narrow_but_never_widen(tmp_path: Path) -> None:
    with StubServer() as a, StubServer() as b, StubServer() as c:
        cfg = f"""
models:
  small: {{provider: openai_compat, endpoint: "{a.url}", privacy: private, params_b: 1, max_retries: 0,
          price: {{input_per_mtok: 0.1, output_per_mtok: 0.1}}}}
  big: {{provider: openai_compat, endpoint: "{b.url}", privacy: private, params_b: 70, max_retries: 0,
        price: {{input_per_mtok: 10, output_per_mtok: 30}}}}
  outside: {{provider: openai_compat, endpoint: "{c.url}", privacy: cloud, params_b: 400, max_retries: 0}}
mixes:
  default: {{strategy: route, models: [small, big]}}
"""
        srv = start_moai(cfg, tmp_path)

        def ask(moai: dict | None = None) -> httpx.Response:
            body: dict = {"model": "moai/default", "messages": [{"role": "user", "content": "hello"}]}
            if moai is not None:
                body["moai"] = moai
            return httpx.post(srv.url + "/chat/completions", json=body, timeout=30)

        try:
            assert ask({"models": ["big"]}).json()["moai"]["model"] == "big"
            assert ask({"exclude": ["small"]}).json()["moai"]["model"] == "big"
            # a model outside the mix cannot be added by the request
            r = ask({"models": ["outside"]})
            assert r.status_code == 422 and r.json()["error"]["code"] == "no_eligible_model"
            assert c.script.calls == 0
            # a request cap excludes what would cost more; weights reweight within the mix
            capped = ask({"models": ["big"], "max_cost_usd": 1e-9})
            assert capped.status_code == 422
            cheap = ask({"weights": {"quality": 0.0, "cost": 1.0}}).json()["moai"]
            assert cheap["model"] == "small"
            # a request cannot loosen the mix's own cap
            r = ask({"weights": {"bogus": 1}})
            assert r.status_code == 400
        finally:
            stop(srv.proc)
