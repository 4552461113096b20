"""A process that exits with local generations running stops them first, and never frees a model still in use:
freeing one under a running decode kills the process with SIGSEGV."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from scripted_llama import ScriptedLlama, install_scripted

from moai.catalog import ModelCard, complete_card
from moai.providers import ChatParams
from moai.providers import llama_cpp as lc
from moai.providers.llama_cpp import LlamaCppProvider

ASK = ChatParams(messages=[{"role": "user", "content": "Count."}], max_tokens=10_000)


class EndlessLlama(ScriptedLlama):
    """Streams a token every 10 ms for up to 20 s; ``left`` is set once its generation has ended."""

    def __init__(self) -> None:
        super().__init__(["1"])
        self.left = threading.Event()

    def create_chat_completion(self, **kw: Any) -> Iterator[dict]:
        try:
            for _ in range(2000):
                yield {"choices": [{"delta": {"content": "1 "}, "finish_reason": None}]}
                time.sleep(0.01)
        finally:
            self.left.set()


def test_stop_generations_ends_a_generation_its_event_loop_abandoned(monkeypatch: pytest.MonkeyPatch) -> None:
    llm = install_scripted(monkeypatch, EndlessLlama())
    provider = LlamaCppProvider(complete_card("m", ModelCard(provider="local", path="/m.gguf", privacy="local")))

    async def first_token() -> None:
        stream = provider.stream(ASK)
        await stream.__anext__()  # then left open, as a run interrupted mid-answer leaves it

    loop = asyncio.new_event_loop()
    loop.run_until_complete(first_token())
    try:
        assert not llm.left.is_set()
        t0 = time.monotonic()
        assert lc.stop_generations(timeout=5)
        assert llm.left.is_set() and time.monotonic() - t0 < 2
        assert not lc._calls  # a finished call is forgotten
    finally:
        loop.close()


class Model:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_exit_frees_the_idle_models_and_not_one_still_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    idle, busy = Model(), Model()
    monkeypatch.setattr(lc, "_models", {"idle.gguf": idle, "busy.gguf": busy})
    busy.lock.acquire()  # a decode that did not stop in time
    try:
        lc._close_models()
    finally:
        busy.lock.release()
    assert idle.closed and not busy.closed
    assert not lc._models
