"""A stand-in for a loaded GGUF model that answers from a script, for the tests of what the llama.cpp provider
does with a model's answers (checking them, regenerating them) without running a model."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from moai.catalog import ModelCard
from moai.providers import llama_cpp as lc
from moai.providers.llama_cpp import LlamaCppProvider


class ScriptedLlama:
    """Answers in turn from ``answers`` (the last one again once they run out) and keeps the messages of each
    call; subclasses say how an answer is streamed (``create_chat_completion``)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.lock = threading.Lock()
        self.calls: list[list[dict[str, Any]]] = []
        self.prompt_tokens = self.completion_tokens = 0

        class Ctx:
            ctx = None

        self._ctx = Ctx()

    def begin(self, cancel: threading.Event | None) -> None:
        self.prompt_tokens = self.completion_tokens = 0

    def reset(self) -> None:
        """Nothing cached to drop."""

    def next_answer(self, messages: list[dict[str, Any]]) -> str:
        """The answer to this call, counted as 10 prompt tokens a message and 5 completion tokens."""
        self.calls.append(messages)
        self.prompt_tokens, self.completion_tokens = 10 * len(messages), 5
        return self.answers[min(len(self.calls), len(self.answers)) - 1]

    @staticmethod
    def text_chunks(answer: str, finish: str = "stop") -> Iterator[dict]:
        """``answer`` as llama.cpp streams text: two pieces, then the finish reason."""
        for piece in (answer[: len(answer) // 2], answer[len(answer) // 2:]):
            yield {"choices": [{"delta": {"content": piece}, "finish_reason": None}]}
        yield {"choices": [{"delta": {}, "finish_reason": finish}]}


def install_scripted(monkeypatch: pytest.MonkeyPatch, llm: ScriptedLlama) -> ScriptedLlama:
    """Makes ``llm`` the model every local card loads."""
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "llama_set_n_threads", lambda *a: None)
    monkeypatch.setattr(lc, "load_llama", lambda card: llm)
    return llm


def local_provider() -> LlamaCppProvider:
    """A local card whose file is never read (the scripted model is loaded instead)."""
    return LlamaCppProvider(ModelCard(name="tiny", provider="local", path="/nonexistent.gguf", privacy="local"))
