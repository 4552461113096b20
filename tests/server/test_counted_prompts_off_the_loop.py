"""A request whose prompt a local model's tokenizer may count before routing (a few milliseconds per 10 KB) is
prepared off the event loop, as a long body's privacy scan is; a short one, or any where no local model is
configured, skips the thread hop."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from stub_openai import Script, StubServer

from moai.config import parse_config
from moai.mixture import Mixture
from moai.server.app import create_app


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with StubServer(Script(reply="ok")) as s:
        yield s


def threads_preparing(config_text: str, monkeypatch: pytest.MonkeyPatch, *texts: str) -> list[bool]:
    """For each prompt: whether ``Mixture.prepare`` ran on the event loop's thread."""
    seen: list[bool] = []
    real = Mixture.prepare

    def spy(self: Mixture, *args: Any, **kw: Any) -> Any:
        seen.append(threading.current_thread() is loop_thread[0])
        return real(self, *args, **kw)

    monkeypatch.setattr(Mixture, "prepare", spy)
    loop_thread: list[threading.Thread] = []
    with TestClient(create_app(parse_config(config_text))) as client:
        client.portal.call(lambda: loop_thread.append(threading.current_thread()))  # type: ignore[union-attr]
        for text in texts:
            r = client.post("/v1/chat/completions", json={
                "model": "moai/default", "moai": {"models": ["far"]},
                "messages": [{"role": "user", "content": text}]})
            assert r.status_code == 200, r.text
    return seen


def config(stub: StubServer, smol: Path, context: int, pool: str) -> str:
    return f"""models:
  smol: {{provider: local, path: '{smol}', context: {context}}}
  far: {{provider: openai_compat, endpoint: "{stub.url}", max_retries: 0}}
mixes:
  default: {{models: [{pool}]}}
"""


def test_a_prompt_a_local_model_may_count_is_prepared_off_the_loop(stub: StubServer, smollm_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert threads_preparing(config(stub, smollm_path, 2048, "smol, far"), monkeypatch,
                             "Say hi.", "apple " * 400) == [True, False]


def test_a_prompt_too_short_for_the_local_context_to_be_in_doubt_stays_on_the_loop(
        stub: StubServer, smollm_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2.4 KB is at most ~1,200 tokens of the estimate: no count for an 8,192-token model."""
    assert threads_preparing(config(stub, smollm_path, 8192, "smol, far"), monkeypatch,
                             "apple " * 400) == [True]


def test_a_mix_without_local_models_keeps_its_prompts_on_the_loop(stub: StubServer, smollm_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A local model elsewhere in the instructions does not count this mix's prompts."""
    assert threads_preparing(config(stub, smollm_path, 2048, "far"), monkeypatch,
                             "Say hi.", "apple " * 400) == [True, True]
